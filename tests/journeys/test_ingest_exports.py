"""Real exports as they arrive: compressed files, padding rows of bare delimiters, phones in any format."""

from __future__ import annotations

import gzip
import hashlib
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from journeys.config import MappedField, Settings, SourceConfig
from journeys.ingest import IngestReport, SourceError, events_glob, ingest_sources, manifest_path, quarantine_glob

AS_OF = datetime(2026, 3, 1)
SALT = "test-salt"
HEADER = "hit_id,hit_time,platform,action,email,phone,client_id,order_value,page\n"
ROWS = (
    "h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,/home\n"  # line 2
    "h2,2026-13-45 25:61:00,desktop,pageview,,,c1,,/home\n"  # line 3: bad time
    "\n"  # line 4
    "h3,2026-01-15 11:00:00,desktop,order,,,c1,9.50,/cart\n"  # line 5
    "h4,2026-01-15 12:00:00,desktop\n"  # line 6: ragged
)
JSONL = (
    '{"id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n'  # line 1
    '{"id": "e2", "ts": "not a time", "event": "open"}\n'  # line 2
    '{"id": "e3", "ts": "2026-01-11T10:00:00Z", "event": "open"}\n'  # line 3
)

WEB = SourceConfig(
    name="web",
    path="web/*",
    format="csv",
    timezone="Europe/Berlin",
    timestamp_format="%Y-%m-%d %H:%M:%S",
    event_id="hit_id",
    occurred_at="hit_time",
    channel=MappedField(column="platform", map={"desktop": "web"}),
    event_type=MappedField(column="action", map={"pageview": "page_view", "order": "purchase"}),
    identifiers={"email": "email", "phone": "phone", "client_id": "cookie_id"},
    revenue="order_value",
)
EMAIL = SourceConfig(
    name="email",
    path="email/*",
    format="jsonl",
    event_id="id",
    occurred_at="ts",
    channel=MappedField(value="email"),
    event_type=MappedField(column="event", map={"open": "email_open"}),
    identifiers={"email": "email"},
)


def settings(root: Path, *sources: SourceConfig, **kw) -> Settings:
    return Settings(
        data_root=root, pii_salt=SALT, sources=list(sources) or [WEB, EMAIL], memory_limit="512MB", threads=2, **kw
    )


def zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


def land(root: Path, rel: str, data: bytes | str) -> Path:
    p = root / "landing" / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


def ingest(s: Settings) -> IngestReport:
    report = ingest_sources(s, as_of=AS_OF, batch_id="b1")
    assert report.accounting_ok()
    return report


def rows(glob: str, cols: str, order: str) -> list[tuple]:
    with duckdb.connect() as con:
        return con.sql(f"select {cols} from read_parquet($g) order by {order}", params={"g": glob}).fetchall()


def h(value: str) -> str:
    return hashlib.sha256((SALT + value).encode()).hexdigest()


# --- compressed input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("web_name", "email_name", "pack"),
    [
        ("a.csv.gz", "a.jsonl.gz", gzip.compress),
        ("a.csv.zst", "a.jsonl.zst", zstd),
        ("a.csv", "a.jsonl", gzip.compress),  # gzip under a plain name: recognised by its bytes
    ],
    ids=["gzip", "zstd", "gzip-named-plain"],
)
def test_compressed_files_are_read_with_exact_lines_and_accounting(tmp_path, web_name, email_name, pack):
    land(tmp_path, f"web/{web_name}", pack((HEADER + ROWS).encode()))
    land(tmp_path, f"email/{email_name}", pack(JSONL.encode()))
    s = settings(tmp_path)
    report = ingest(s)
    assert (report.loaded, report.quarantined, report.duplicates) == (4, 3, 0)
    assert rows(events_glob(s), "event_id, source_line, revenue", "event_id") == [
        ("email:e1", 1, None),
        ("email:e3", 3, None),
        ("web:h1", 2, None),
        ("web:h3", 5, pytest.approx(9.5)),
    ]
    quarantined = rows(quarantine_glob(s), "source_file, line, field", "source_file, line")
    assert quarantined == [
        (f"email/{email_name}", 2, "occurred_at"),
        (f"web/{web_name}", 3, "occurred_at"),
        (f"web/{web_name}", 6, "row"),
    ]
    # Unchanged compressed files are not ingested twice.
    again = ingest_sources(s, as_of=AS_OF, batch_id="b2")
    assert again.loaded == 0 and all(f.skipped for f in again.files)


def test_latin1_gzip_csv_is_decoded_with_the_source_encoding(tmp_path):
    land(
        tmp_path,
        "web/a.csv.gz",
        gzip.compress((HEADER + "h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,/caf\xe9\n").encode("latin-1")),
    )
    s = settings(tmp_path, WEB.model_copy(update={"encoding": "latin-1"}))
    assert ingest(s).loaded == 1


def test_utf8_text_with_bytes_latin1_refuses_is_read_when_a_field_spans_lines(tmp_path):
    # A quoted field with a line break makes the reader number lines itself; `É` (c3 89) and curly quotes
    # (e2 80 9c) hold bytes 0x80-0x9f, which DuckDB's latin-1 refuses: the whole file was refused.
    land(
        tmp_path,
        "web/a.csv",
        HEADER + 'h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,"/ÓTIMO\n\u201cproduto\u201d"\n'
        "h2,2026-01-15 11:00:00,desktop,pageview,,,c1,,/É\n"
        "h3,bad time,desktop,pageview,,,c1,,/x\n",
    )
    s = settings(tmp_path, WEB)
    report = ingest(s)
    assert (report.loaded, report.quarantined) == (2, 1)
    assert rows(events_glob(s), "event_id, source_line", "event_id") == [("web:h1", 2), ("web:h2", 4)]
    assert rows(quarantine_glob(s), "line", "line") == [(5,)]


def test_a_truncated_gzip_is_refused_alone(tmp_path):
    whole = gzip.compress((HEADER + ROWS * 50).encode())
    land(tmp_path, "web/a.csv.gz", whole[: len(whole) // 2])
    land(tmp_path, "web/b.csv", HEADER + ROWS)
    report = ingest(settings(tmp_path, WEB))
    assert (report.read, report.loaded, report.quarantined) == (4, 2, 2)  # web/b.csv's rows only
    [bad] = [f for f in report.files if f.refused]
    assert bad.file == "web/a.csv.gz" and bad.refused.startswith("cannot be decompressed (gzip): ")
    assert report.sources_refused() == []


def test_empty_gzip_file_is_an_empty_file(tmp_path):
    land(tmp_path, "web/a.csv.gz", gzip.compress(b""))
    land(tmp_path, "email/a.jsonl.gz", gzip.compress(b""))
    report = ingest(settings(tmp_path))
    assert (report.read, report.loaded) == (0, 0)
    assert not manifest_path(settings(tmp_path)).exists() or report.files


# --- blank rows ----------------------------------------------------------------------------------------


def test_padding_rows_are_blank_not_quarantined_and_do_not_fail_the_quarantine_share(tmp_path):
    from journeys.quality import validate_landing

    good = "".join(f"h{i},2026-01-15 10:{i % 60:02d}:00,desktop,pageview,,,c{i},,/p\n" for i in range(60))
    bad = "x1,not a time,desktop,pageview,,,c1,,/p\nx2,,desktop,pageview,,,c1,,/p\n"  # lines 62, 63
    padding = ",,,,,,,,\n" * 480 + ",,,\n" * 10 + "\n" * 10  # a spreadsheet's trailing rows
    land(tmp_path, "web/a.csv", HEADER + good + bad + padding)
    s = settings(tmp_path, WEB)
    report = ingest(s)
    assert (report.read, report.loaded, report.quarantined, report.blank) == (62, 60, 2, 500)
    assert rows(quarantine_glob(s), "line, field", "line") == [(62, "occurred_at"), (63, "occurred_at")]
    [(blank, read)] = rows(str(manifest_path(s)), "blank, read", "file")
    assert (blank, read) == (500, 62)
    # 2 of 62 rows is under the 5% limit; 502 of 562 (blank rows counted as bad) would not be.
    quality = validate_landing(s, batch_id="b1")
    assert [f.share for f in quality.files] == [pytest.approx(2 / 62)]
    assert quality.success, quality.summary()


# --- channels read from a column -----------------------------------------------------------------------


def test_unknown_channel_in_a_column_stops_the_batch_before_any_write(tmp_path):
    land(tmp_path, "web/a.csv", HEADER + "h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,/\n")
    bad = land(tmp_path, "web/b.csv", HEADER + "h2,2026-01-15 10:00:00,Smart TV,pageview,,,c1,,/\n")
    cdp = EMAIL.model_copy(update={"name": "cdp", "path": "cdp/*", "channel": MappedField(column="channel")})
    land(tmp_path, "cdp/a.jsonl", '{"id": "1", "ts": "2026-01-10T10:00:00Z", "event": "open", "channel": "Chat"}\n')
    s = settings(tmp_path, WEB, cdp)
    msg = (
        rf"source 'web', file '{bad}': column 'platform' gives channel\(s\) \['smart_tv'\] that are not in"
        r" `channels`; add them to `channels` or map them in sources\[0\].channel.map"
    )
    with pytest.raises(SourceError, match=msg):
        ingest_sources(s, as_of=AS_OF, batch_id="b1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["landing"]  # not even web/a.csv was written

    land(tmp_path, "cdp/b.jsonl", '{"id": "2", "ts": "2026-01-10T10:00:00Z", "event": "open", "channel": "fax"}\n')
    s = settings(tmp_path, WEB, cdp, channels=["web", "chat", "smart_tv"])
    with pytest.raises(SourceError, match=r"source 'cdp', file '.*b\.jsonl': column 'channel' gives .*\['fax'\]"):
        ingest_sources(s, as_of=AS_OF, batch_id="b1")
    (tmp_path / "landing" / "cdp" / "b.jsonl").unlink()
    report = ingest(s)
    assert report.loaded == 3
    assert rows(events_glob(s), "channel", "channel") == [("chat",), ("smart_tv",), ("web",)]


def test_an_unknown_channel_error_names_ten_channels_and_marks_more(tmp_path):
    def web_file(n: int) -> None:
        land(
            tmp_path,
            "web/a.csv",
            HEADER + "".join(f"h{i},2026-01-15 10:00:00,tv_{i:02d},pageview,,,c1,,/\n" for i in range(n)),
        )

    def named(n: int) -> str:
        web_file(n)
        with pytest.raises(SourceError, match="that are not in `channels`") as err:
            ingest_sources(settings(tmp_path, WEB), as_of=AS_OF, batch_id="b1")
        return str(err.value).split(" gives channel(s) ")[1].split(" that are not")[0]

    ten = [f"tv_{i:02d}" for i in range(10)]
    assert named(10) == str(ten)  # exactly ten: all of them, nothing left out
    assert named(11) == str([*ten, "..."])


# --- phones --------------------------------------------------------------------------------------------

CALLS = SourceConfig(
    name="calls",
    path="calls/*.csv",
    format="csv",
    delimiter=";",
    timezone="Europe/London",
    event_id="call_id",
    occurred_at="started",
    channel=MappedField(value="call_centre"),
    event_type=MappedField(value="call"),
    identifiers={"caller": "phone", "callback": "phone", "cookie": "cookie_id"},
)
UK_FORMATS = [
    "+44 (0)20 7946 0958",
    "020 7946 0958",
    "+44 20 7946 0958",
    "0044 20 7946 0958",
    "(020) 7946-0958",
    "+442079460958",
]


def calls_file(root: Path, callers: list[str], callbacks: list[str] | None = None) -> None:
    callbacks = callbacks or [""] * len(callers)
    body = "".join(
        f"k{i};2026-01-15 10:{i // 60:02d}:{i % 60:02d};{a};{b};cookie{i}\n"
        for i, (a, b) in enumerate(zip(callers, callbacks, strict=True))
    )
    land(root, "calls/a.csv", "call_id;started;caller;callback;cookie\n" + body)


def phone_ids(s: Settings) -> dict[str, list[str]]:
    got = rows(events_glob(s), "event_id, identifiers", "event_id")
    return {eid: [i["id_value"] for i in ids if i["id_type"] == "phone"] for eid, ids in got}


def test_six_uk_formats_and_an_extension_give_one_e164_hash(tmp_path):
    calls_file(tmp_path, [*UK_FORMATS, "020 7946 0958 ext. 12", "+44 20 7946 0958 x3"])
    s = settings(tmp_path, CALLS, default_phone_region="GB")
    report = ingest(s)
    assert (report.loaded, report.quarantined) == (8, 0)
    assert set(map(tuple, phone_ids(s).values())) == {(h("+442079460958"),)}


def test_default_region_may_be_a_calling_code(tmp_path):
    calls_file(tmp_path, ["020 7946 0958"])
    s = settings(tmp_path, CALLS, default_phone_region="+44")
    ingest(s)
    assert phone_ids(s) == {"calls:k0": [h("+442079460958")]}


def test_vanity_and_invalid_numbers_are_quarantined_naming_the_field_and_never_the_value(tmp_path):
    calls_file(
        tmp_path,
        ["0800 CALL NOW", "020 7946", "020 7946 0958", "n/a", "0000", "not known"],
        ["", "", "12345", "", "", ""],
    )
    s = settings(tmp_path, CALLS, default_phone_region="GB")
    report = ingest(s)
    assert (report.loaded, report.quarantined) == (2, 4)
    # Placeholders are no number at all: the row loads without a phone identifier.
    assert phone_ids(s) == {"calls:k3": [], "calls:k4": []}
    got = rows(quarantine_glob(s), 'line, field, "column", reason, raw', "line")
    assert [(line, field, col) for line, field, col, _, _ in got] == [
        (2, "phone", "caller"),
        (3, "phone", "caller"),
        (4, "phone", "callback"),  # the caller is fine, the callback number is not
        (7, "phone", "caller"),
    ]
    reasons = [r for _, _, _, r, _ in got]
    assert reasons[0].startswith("phone: expected a phone number in column 'caller', got letters (a vanity number")
    assert reasons[1] == (
        "phone: expected a phone number in column 'caller', got a number that is not valid in its numbering plan"
        " (read with default region GB)"
    )
    assert reasons[2].startswith("phone: expected a phone number in column 'callback', got a number that is not")
    assert reasons[3].startswith("phone: expected a phone number in column 'caller', got letters")
    for raw_value in ("CALL NOW", "7946", "12345", "not known"):
        assert all(raw_value not in r and raw_value not in (w or "") for _, _, _, r, w in got), raw_value


def test_phones_are_normalised_once_per_distinct_value_of_the_run(tmp_path, monkeypatch):
    from journeys import phones

    seen: list[str] = []
    real = phones.normalise

    def counting(raw: str, region: str) -> phones.Phone:
        seen.append(raw)
        return real(raw, region)

    monkeypatch.setattr(phones, "normalise", counting)
    callers = [UK_FORMATS[i % 3] for i in range(300)]
    calls_file(tmp_path, callers, [UK_FORMATS[0]] * 300)
    # A second file of the run with the same numbers (and one more) reads only the new one.
    land(
        tmp_path, "calls/b.csv", f"call_id;started;caller;callback;cookie\nb1;2026-01-15 11:00:00;{UK_FORMATS[3]};;z\n"
    )
    land(
        tmp_path, "calls/c.csv", f"call_id;started;caller;callback;cookie\nc1;2026-01-15 12:00:00;{UK_FORMATS[1]};;z\n"
    )
    s = settings(tmp_path, CALLS, default_phone_region="GB")
    assert ingest(s).loaded == 302
    assert sorted(seen) == sorted(UK_FORMATS[:4])


def test_one_person_phone_in_six_formats_resolves_to_one_customer(tmp_path):
    from journeys import db
    from journeys.identity import resolve_identities

    # Six calls from six devices (own cookies): only the phone, written six ways, ties them together.
    calls_file(tmp_path, UK_FORMATS)
    land(tmp_path, "calls/b.csv", "call_id;started;caller;callback;cookie\nx1;2026-01-16 09:00:00;020 7946 0000;;z\n")
    s = settings(tmp_path, CALLS, default_phone_region="GB")
    assert ingest(s).loaded == 7
    with db.connect() as con:
        db.execute(con, "create table events as select * from read_parquet($g)", {"g": events_glob(s)})
        resolve_identities(con, s, run_at=datetime(2026, 2, 1))
        keys = dict(db.fetch(con, "select event_id, customer_key from int_event_customers"))
    assert len({keys[f"calls:k{i}"] for i in range(6)}) == 1
    assert keys["calls:x1"] != keys["calls:k0"]


@pytest.mark.parametrize(
    ("rel", "text"),
    [("web/a.csv", HEADER + ",,,,,,,,\n" * 40 + "\n\n"), ("email/a.jsonl", "\n  \n\n")],
    ids=["csv", "jsonl"],
)
def test_a_file_of_nothing_but_blank_rows_passes_the_landing_checks(tmp_path, rel, text):
    from journeys.quality import validate_landing

    land(tmp_path, "web/ok.csv", HEADER + "h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,/\n")
    land(tmp_path, rel, text)
    s = settings(tmp_path)
    report = ingest(s)
    assert (report.read, report.loaded, report.quarantined) == (1, 1, 0)
    assert report.blank == text.count("\n") - (1 if rel.endswith(".csv") else 0)
    quality = validate_landing(s, batch_id="b1")
    assert quality.success, quality.summary()
