"""Ingest: landing files -> canonical events in the Parquet lake, bad rows in quarantine."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from journeys.config import DEFAULT_CHANNELS, MappedField, Settings, SourceConfig
from journeys.ingest import (
    IngestReport,
    NothingToPublishError,
    events_glob,
    file_fingerprint,
    ingest_sources,
    manifest_path,
    quarantine_glob,
    require_events,
)
from tests.journeys.conftest import fail_ingest_file_on_call

AS_OF = datetime(2026, 3, 1)
SALT = "test-salt"


def web_source(**overrides) -> SourceConfig:
    spec = dict(
        name="web",
        path="web/*.csv",
        format="csv",
        timezone="Europe/Berlin",
        timestamp_format="%Y-%m-%d %H:%M:%S",
        event_id="hit_id",
        occurred_at="hit_time",
        channel=MappedField(column="platform", map={"desktop": "web", "ios": "app"}),
        event_type=MappedField(column="action", map={"pageview": "page_view", "order": "purchase"}),
        identifiers={"email": "email", "phone": "phone", "client_id": "cookie_id"},
        revenue="order_value",
    )
    spec.update(overrides)
    return SourceConfig(**spec)


def email_source(**overrides) -> SourceConfig:
    spec = dict(
        name="email",
        path="email/*.jsonl",
        format="jsonl",
        event_id="id",
        occurred_at="ts",
        channel=MappedField(value="email"),
        event_type=MappedField(column="event", map={"open": "email_open"}),
        identifiers={"email": "email"},
    )
    spec.update(overrides)
    return SourceConfig(**spec)


def make_settings(root: Path, *sources: SourceConfig, **kw) -> Settings:
    return Settings(data_root=root, pii_salt=SALT, sources=list(sources), memory_limit="512MB", threads=2, **kw)


def write(root: Path, rel: str, text: str) -> Path:
    p = root / "landing" / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def ingest(settings: Settings, batch_id: str = "b1", as_of: datetime = AS_OF) -> IngestReport:
    report = ingest_sources(settings, as_of=as_of, batch_id=batch_id)
    assert report.accounting_ok()
    assert report.read == report.loaded + report.quarantined + report.duplicates + report.held
    return report


def events(settings: Settings) -> list[dict]:
    rel = duckdb.connect().sql(
        "select * from read_parquet($glob, hive_partitioning = true) order by event_id",
        params={"glob": events_glob(settings)},
    )
    return rel.to_arrow_table().to_pylist()


def quarantine(settings: Settings) -> list[dict]:
    rel = duckdb.connect().sql(
        "select * from read_parquet($glob) order by source_file, line", params={"glob": quarantine_glob(settings)}
    )
    return rel.to_arrow_table().to_pylist()


def h(value: str) -> str:
    return hashlib.sha256((SALT + value).encode()).hexdigest()


WEB_HEADER = "hit_id,hit_time,platform,action,email,phone,client_id,order_value,page\n"


@pytest.mark.parametrize(
    ("data", "lines", "mixed"),
    [
        (b"a\nb\n", 2, False),  # no lone CR: read as it is
        (b"a\r\nb\r\n", 2, False),
        (b"a\rb\r", 2, True),  # any lone CR gets the LF copy (LandingFile.content), even one kind throughout
        (b"a\nb\rc", 3, True),  # a single lone CR among LF breaks
        (b"a\r\nb\nc\n", 3, True),
    ],
)
def test_line_breaks_are_mixed_from_the_first_lone_cr(tmp_path, data, lines, mixed):
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    assert file_fingerprint(path)[1:] == (lines, "none", mixed)


def test_csv_naive_berlin_times_become_utc_and_fields_are_mapped(tmp_path):
    write(
        tmp_path,
        "web/a.csv",
        WEB_HEADER
        + "h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,/home\n"  # winter: UTC+1
        + "h2,2026-02-20 23:30:00,ios,order,,,c1,19.99,/cart\n"  # winter, late evening
        + "h3,2025-07-01 01:30:00,Mobile Web,Add To Cart,,,c2,,\n",
    )  # summer: UTC+2, previous UTC day
    s = make_settings(tmp_path, web_source(), channels=[*DEFAULT_CHANNELS, "mobile_web"])
    started = datetime.now(UTC).replace(tzinfo=None)
    report = ingest(s)
    finished = datetime.now(UTC).replace(tzinfo=None)
    assert (report.read, report.loaded, report.quarantined) == (3, 3, 0)
    rows = {r["event_id"]: r for r in events(s)}
    # one batch: its name, its file, and one wall-clock start (naive UTC) within the call
    assert {(r["source"], r["source_file"], r["batch_id"]) for r in rows.values()} == {("web", "web/a.csv", "b1")}
    (ingested_at,) = {r["ingested_at"] for r in rows.values()}
    assert started <= ingested_at <= finished
    assert rows["web:h1"]["occurred_at"] == datetime(2026, 1, 15, 9, 0)
    assert rows["web:h2"]["occurred_at"] == datetime(2026, 2, 20, 22, 30)
    assert rows["web:h3"]["occurred_at"] == datetime(2025, 6, 30, 23, 30)
    assert rows["web:h3"]["event_date"] == date(2025, 6, 30)
    assert (rows["web:h1"]["channel"], rows["web:h1"]["event_type"], rows["web:h1"]["touchpoint"]) == (
        "web",
        "page_view",
        "web:page_view",
    )
    # Unmapped raw values are lower-snake-cased.
    assert (rows["web:h3"]["channel"], rows["web:h3"]["event_type"]) == ("mobile_web", "add_to_cart")
    assert str(rows["web:h2"]["revenue"]) == "19.99"
    assert rows["web:h1"]["identifiers"] == [{"id_type": "cookie_id", "id_value": "c1"}]
    # the cookie id is an identifier and an attribute; e-mail and phone never are
    assert rows["web:h1"]["attributes"] == '{"client_id":"c1","page":"/home"}'
    assert rows["web:h1"]["source_line"] == 2 and rows["web:h3"]["source_line"] == 4
    assert report.affected_dates == [date(2025, 6, 30), date(2026, 1, 15), date(2026, 2, 20)]
    files = sorted(p.relative_to(s.events_dir).as_posix() for p in s.events_dir.rglob("*.parquet"))
    assert files == [
        "event_date=2025-06-30/b1-0.parquet",
        "event_date=2026-01-15/b1-0.parquet",
        "event_date=2026-02-20/b1-0.parquet",
    ]


def test_semicolon_csv_with_quotes(tmp_path):
    write(
        tmp_path,
        "web/a.csv",
        'hit_id;hit_time;platform;action;page\n"h1";"2026-01-15 10:00:00";"desktop";"pageview";"a;b ""quoted"""\n',
    )
    s = make_settings(tmp_path, web_source(delimiter=";", identifiers={}, revenue=None))
    ingest(s)
    [row] = events(s)
    assert row["attributes"] == '{"page":"a;b \\"quoted\\""}'


def test_jsonl_offset_aware_times_are_converted(tmp_path):
    write(
        tmp_path,
        "email/a.jsonl",
        '{"id": "e1", "ts": "2026-01-10T10:00:00+02:00", "event": "open", "campaign": "Spring", "n": 3}\n'
        '{"id": "e2", "ts": "2026-01-10T10:00:00Z", "event": "click"}\n'
        '{"id": "e3", "ts": "2026-01-10 10:00:00.123456-05:00", "event": "open"}\n',
    )
    s = make_settings(tmp_path, email_source(timezone="Asia/Tokyo"))
    ingest(s)
    rows = {r["event_id"]: r for r in events(s)}
    assert rows["email:e1"]["occurred_at"] == datetime(2026, 1, 10, 8, 0)
    assert rows["email:e2"]["occurred_at"] == datetime(2026, 1, 10, 10, 0)
    assert rows["email:e3"]["occurred_at"] == datetime(2026, 1, 10, 15, 0, 0, 123456)
    assert rows["email:e1"]["touchpoint"] == "email:email_open"
    assert rows["email:e1"]["attributes"] == '{"campaign":"Spring","n":3}'
    assert rows["email:e2"]["event_type"] == "click"


def test_time_zone_names_are_read_not_dropped(tmp_path):
    write(
        tmp_path,
        "email/a.jsonl",
        '{"id": "e1", "ts": "2026-01-15 10:00:00 America/New_York", "event": "open"}\n'
        '{"id": "e2", "ts": "2026-01-15 10:00:00 Europe/Paris", "event": "open"}\n'
        '{"id": "e3", "ts": "2026-01-15 10:00:00 EST", "event": "open"}\n'
        '{"id": "e4", "ts": "2026-01-15 10:00:00 Mars/Olympus_Mons", "event": "open"}\n',
    )
    s = make_settings(tmp_path, email_source(timezone="Asia/Tokyo"))
    ingest(s)
    rows = {r["event_id"]: r["occurred_at"] for r in events(s)}
    # The name in the value wins over the source's zone (Tokyo would give 01:00 the same day).
    assert rows == {
        "email:e1": datetime(2026, 1, 15, 15, 0),
        "email:e2": datetime(2026, 1, 15, 9, 0),
        "email:e3": datetime(2026, 1, 15, 15, 0),
    }
    (bad,) = quarantine(s)
    assert (bad["line"], bad["field"]) == (4, "occurred_at")
    assert "got '2026-01-15 10:00:00 Mars/Olympus_Mons'" in bad["reason"]


def test_jsonl_naive_times_use_source_zone(tmp_path):
    write(tmp_path, "email/a.jsonl", '{"id": "e1", "ts": "2026-01-10T10:00:00", "event": "open"}\n')
    s = make_settings(tmp_path, email_source(timezone="America/New_York"))
    ingest(s)
    assert events(s)[0]["occurred_at"] == datetime(2026, 1, 10, 15, 0)


def test_parquet_native_timestamps(tmp_path):
    (tmp_path / "landing" / "pos").mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "receipt_id": ["r1", "r2"],
                "sold_at": pa.array([datetime(2026, 1, 5, 9), datetime(2026, 1, 6, 23)], pa.timestamp("us", tz="UTC")),
                "local": pa.array([datetime(2026, 1, 5, 9), datetime(2026, 1, 6, 23)], pa.timestamp("us")),
                "amount": [1.5, 2.255],
                "kind": ["sale", "renewal"],
                "qty": [1, 2],
            }
        ),
        tmp_path / "landing" / "pos" / "a.parquet",
    )
    pos = SourceConfig(
        name="pos",
        path="pos/*.parquet",
        format="parquet",
        event_id="receipt_id",
        occurred_at="sold_at",
        channel=MappedField(value="store"),
        event_type=MappedField(column="kind", map={"sale": "purchase"}),
        revenue="amount",
        attributes=["qty"],
    )
    pos_local = pos.model_copy(update={"name": "pos_local", "occurred_at": "local", "timezone": "Europe/Paris"})
    s = make_settings(tmp_path, pos, pos_local)
    ingest(s)
    rows = {r["event_id"]: r for r in events(s)}
    assert rows["pos:r1"]["occurred_at"] == datetime(2026, 1, 5, 9)
    assert rows["pos_local:r2"]["occurred_at"] == datetime(2026, 1, 6, 22)
    assert rows["pos:r1"]["event_type"] == "purchase" and rows["pos:r2"]["event_type"] == "renewal"
    assert rows["pos:r1"]["attributes"] == '{"qty":1}'
    assert rows["pos:r1"]["source_line"] == 1


def test_no_raw_pii_anywhere_under_the_data_root(tmp_path):
    emails = ["Alice.Secret@Example.com", "bob.hidden@example.org", "carol.x@example.net"]
    phones = ["+1 (212) 555-0199", "212-555-0188", "+44 20 7946 0123"]
    write(
        tmp_path,
        "web/a.csv",
        WEB_HEADER
        + f"h1,2026-01-15 10:00:00,desktop,pageview,{emails[0]},{phones[0]},c1,,\n"
        + f"h2,2026-99-15 10:00:00,desktop,pageview,{emails[1]},{phones[1]},c1,,\n"  # bad time
        + f"h3,2026-01-15 10:00:00,desktop,{emails[2]},{phones[2]}\n",
    )  # ragged
    write(
        tmp_path,
        "email/a.jsonl",
        f'{{"id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open", '
        f'"email": "{emails[0]}"}}\n{{"id": "e2", "email": "{emails[1]}",\n',
    )
    s = make_settings(tmp_path, web_source(), email_source())
    report = ingest(s)
    assert report.quarantined == 3
    needles = [v.encode() for v in emails + phones]
    needles += [v.lower().encode() for v in emails] + [b"2125550199", b"442079460123", b"2125550188"]
    scanned = 0
    for p in s.root.rglob("*"):
        if p.is_file() and "landing" not in p.relative_to(s.root).parts:
            data = p.read_bytes()
            scanned += 1
            for needle in needles:
                assert needle not in data, f"{needle!r} found in {p}"
    assert scanned >= 4  # events, two quarantine files, manifest
    rows = {r["event_id"]: r for r in events(s)}
    ids = {i["id_type"]: i["id_value"] for i in rows["web:h1"]["identifiers"]}
    assert ids["email"] == h("alice.secret@example.com")
    assert ids["phone"] == h("+12125550199")


@pytest.mark.parametrize(
    "raw",
    [
        "+1 (212) 555-0123",
        "(212) 555-0123",
        "212.555.0123",
        "1-212-555-0123",
        "001 212 555 0123",
        " +12125550123 ",
        "212-555-0123 ext. 12",
        "tel:+1-212-555-0123",
    ],
)
def test_phone_formats_normalise_to_one_hash(tmp_path, raw):
    write(tmp_path, "web/a.csv", WEB_HEADER + f'h1,2026-01-15 10:00:00,desktop,pageview,,"{raw}",,,\n')
    s = make_settings(tmp_path, web_source())
    ingest(s)
    [row] = events(s)
    assert row["identifiers"] == [{"id_type": "phone", "id_value": h("+12125550123")}]


def test_phone_region_and_email_normalisation(tmp_path):
    write(
        tmp_path,
        "web/a.csv",
        WEB_HEADER
        + "h1,2026-01-15 10:00:00,desktop,pageview,  Bob@Example.COM ,020 7946 0123,,,\n"
        + "h2,2026-01-15 10:00:00,desktop,pageview,bob@example.com,+44 20 7946 0123,,,\n",
    )
    s = make_settings(tmp_path, web_source(), default_phone_region="44")
    ingest(s)
    a, b = events(s)
    assert (
        a["identifiers"]
        == b["identifiers"]
        == [
            {"id_type": "email", "id_value": h("bob@example.com")},
            {"id_type": "phone", "id_value": h("+442079460123")},
        ]
    )


def test_quarantine_reasons_and_line_numbers(tmp_path):
    write(
        tmp_path,
        "web/a.csv",
        WEB_HEADER
        + "h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,\n"  # line 2 ok
        + "h2,2026-13-45 25:61:00,desktop,pageview,,,c1,,\n"  # line 3 bad timestamp
        + "h3,2026-01-15 10:00:00,ios,order,,,c1,12.x,\n"  # line 4 bad revenue
        + "h4,2026-01-15 10:00:00,ios\n"  # line 5 ragged
        + "\n"  # line 6 blank
        + "h5,2027-01-15 10:00:00,ios,order,,,c1,1,\n"  # line 7 future: held back, not quarantined
        + "h6,1999-01-15 10:00:00,ios,order,,,c1,1,\n"  # line 8 too old
        + ",2026-01-15 10:00:00,ios,order,,,c1,1,\n"  # line 9 no event id
        + "h8,2026-01-15 10:00:00,ios,,,,c1,1,\n"  # line 10 no event type
        + "h9,2026-01-15 11:00:00,ios,order,,,c1,1,x,y\n"  # line 11 too many columns
        + "h10,2026-01-15 12:00:00,ios,order,,,c1,1,\n",
    )  # line 12 ok
    write(
        tmp_path,
        "email/a.jsonl",
        '{"id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n'
        '{"id": "e2", "ts": "2026-01-10T10:00:00Z", "event": \n'
        "\n"
        "[1, 2]\n"
        '{"id": "e5", "ts": "yesterday", "event": "open"}\n',
    )
    s = make_settings(tmp_path, web_source(), email_source())
    started = datetime.now(UTC).replace(tzinfo=None)
    report = ingest(s)
    finished = datetime.now(UTC).replace(tzinfo=None)
    web, mail = report.files
    assert (web.read, web.loaded, web.quarantined, web.duplicates, web.held) == (10, 2, 7, 0, 1)
    assert (mail.read, mail.loaded, mail.quarantined, mail.duplicates) == (4, 1, 3, 0)
    assert {r["source_line"] for r in events(s) if r["source"] == "web"} == {2, 12}
    q = {(r["source_file"], r["line"]): r for r in quarantine(s)}
    assert sorted(q) == [("email/a.jsonl", n) for n in (2, 4, 5)] + [("web/a.csv", n) for n in (3, 4, 5, 8, 9, 10, 11)]
    reason = {k: (v["field"], v["reason"]) for k, v in q.items()}
    assert reason[("web/a.csv", 3)] == (
        "occurred_at",
        "occurred_at: expected timestamp '%Y-%m-%d %H:%M:%S', got '2026-13-45 25:61:00'",
    )
    assert reason[("web/a.csv", 4)] == ("revenue", "revenue: expected a decimal number (18,2), got '12.x'")
    assert reason[("web/a.csv", 5)][0] == "row" and "missing columns" in reason[("web/a.csv", 5)][1]
    assert "before the earliest" in reason[("web/a.csv", 8)][1]
    assert reason[("web/a.csv", 9)][0] == "event_id"
    assert reason[("web/a.csv", 10)][0] == "event_type"
    assert "too many columns" in reason[("web/a.csv", 11)][1]
    assert "broken JSON line" in reason[("email/a.jsonl", 2)][1]
    assert "another JSON value" in reason[("email/a.jsonl", 4)][1]
    assert reason[("email/a.jsonl", 5)] == (
        "occurred_at",
        "occurred_at: expected timestamp 'ISO 8601', got 'yesterday'",
    )
    row = q[("web/a.csv", 3)]
    assert (row["source"], row["column"], row["batch_id"]) == ("web", "hit_time", "b1")
    (quarantined_at,) = {r["quarantined_at"] for r in q.values()}
    assert started <= quarantined_at <= finished
    assert '"hit_time":"2026-13-45 25:61:00"' in row["raw"]
    # A row the reader could not split keeps only its shape: nothing of it is known to be safe.
    assert q[("web/a.csv", 5)]["raw"] == "x9,9999-99-99 99:99:99,xxx"


def test_reingest_is_idempotent_and_byte_identical(tmp_path):
    write(
        tmp_path,
        "web/a.csv",
        WEB_HEADER
        + "h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,\n"
        + "h2,2026-13-45 10:00:00,desktop,pageview,,,c1,,\n",
    )
    s = make_settings(tmp_path, web_source())
    first = ingest(s, "b1")
    assert (first.loaded, first.quarantined) == (1, 1)

    def snapshot() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in s.lake_dir.rglob("*") if p.is_file()} | {
            str(p): p.read_bytes() for p in s.state_dir.rglob("*") if p.is_file()
        }

    before = snapshot()
    second = ingest(s, "b2")
    assert [f.skipped for f in second.files] == [True]
    assert (second.read, second.loaded, second.quarantined, second.duplicates) == (0, 0, 0, 0)
    assert second.affected_dates == []
    assert snapshot() == before

    # A new file is ingested; the old one is still skipped.
    write(tmp_path, "web/b.csv", WEB_HEADER + "h3,2026-01-16 10:00:00,desktop,pageview,,,c1,,\n")
    third = ingest(s, "b3")
    assert [(f.file, f.skipped, f.loaded) for f in third.files] == [("web/a.csv", True, 0), ("web/b.csv", False, 1)]
    assert len(events(s)) == 2


def test_duplicates_within_and_across_files_and_batches(tmp_path):
    write(
        tmp_path,
        "web/a.csv",
        WEB_HEADER
        + "h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,first\n"
        + "h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,again\n"
        + "h2,2026-01-15 11:00:00,ios,order,,,c1,,\n",
    )
    write(
        tmp_path,
        "web/b.csv",
        WEB_HEADER + "h2,2026-01-15 11:00:00,ios,order,,,c1,,\n" + "h3,2026-01-15 12:00:00,ios,order,,,c1,,\n",
    )
    s = make_settings(tmp_path, web_source())
    report = ingest(s)
    assert [(f.read, f.loaded, f.duplicates) for f in report.files] == [(3, 2, 1), (2, 1, 1)]
    rows = events(s)
    assert [r["event_id"] for r in rows] == ["web:h1", "web:h2", "web:h3"]
    assert next(r for r in rows if r["event_id"] == "web:h1")["attributes"] == '{"client_id":"c1","page":"first"}'
    # A changed file in a later batch is a new version of b.csv: it replaces the h3 its first version loaded
    # (h2 of that version was a duplicate of a.csv's, never b.csv's row in the lake).
    write(
        tmp_path,
        "web/b.csv",
        WEB_HEADER + "h3,2026-01-15 12:00:00,ios,order,,,c1,,\n" + "h4,2026-01-15 13:00:00,ios,order,,,c1,,\n",
    )
    later = ingest(s, "b2")
    assert [(f.skipped, f.read, f.loaded, f.duplicates, f.replaced) for f in later.files] == [
        (True, 0, 0, 0, 0),
        (False, 2, 2, 0, 1),
    ]
    assert [(r["event_id"], r["source_file"], r["batch_id"]) for r in events(s)] == [
        ("web:h1", "web/a.csv", "b1"),
        ("web:h2", "web/a.csv", "b1"),
        ("web:h3", "web/b.csv", "b2"),
        ("web:h4", "web/b.csv", "b2"),
    ]


def test_event_id_hash_when_source_has_no_id_column(tmp_path):
    write(
        tmp_path,
        "web/a.csv",
        "hit_time,platform,action\n2026-01-15 10:00:00,desktop,pageview\n"
        "2026-01-15 10:00:00,desktop,pageview\n2026-01-15 10:00:01,desktop,pageview\n",
    )
    s = make_settings(tmp_path, web_source(event_id=None, identifiers={}, revenue=None))
    report = ingest(s)
    assert (report.loaded, report.duplicates) == (2, 1)  # identical rows are one event
    ids = [r["event_id"] for r in events(s)]
    assert all(i.startswith("web:") and len(i) == 4 + 64 for i in ids)


def test_composite_event_ids_make_one_review_of_two_orders_two_events(tmp_path):
    write(
        tmp_path,
        "web/a.csv",
        "review_id,order_id,hit_time,platform,action\n"
        "r1,o1,2026-01-15 10:00:00,desktop,pageview\n"
        "r1,o2,2026-01-15 10:00:00,desktop,pageview\n"  # the same review of a second order: not a duplicate
        "r1,o1,2026-01-15 10:00:00,desktop,pageview\n"  # a real duplicate
        "r2,,2026-01-15 10:00:00,desktop,pageview\n",  # one part empty: no id
    )
    source = web_source(event_id=["review_id", "order_id"], identifiers={}, revenue=None)
    s = make_settings(tmp_path, source)
    report = ingest(s)
    assert (report.loaded, report.duplicates, report.quarantined) == (2, 1, 1)
    assert sorted(r["event_id"] for r in events(s)) == ['web:["r1","o1"]', 'web:["r1","o2"]']
    (bad,) = quarantine(s)
    assert (bad["line"], bad["field"], bad["column"]) == (5, "event_id", "review_id, order_id")


def test_a_file_missing_a_mapped_column_is_refused_alone_and_again_until_replaced(tmp_path):
    write(tmp_path, "web/a.csv", WEB_HEADER + "h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,\n")
    write(tmp_path, "email/a.jsonl", '{"id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n')
    calls = SourceConfig(
        name="calls",
        path="calls/*.csv",
        format="csv",
        delimiter=";",
        event_id="call_id",
        occurred_at="started",
        channel=MappedField(value="call_centre"),
        event_type=MappedField(value="call"),
        identifiers={"caller": "phone"},
    )
    write(tmp_path, "calls/x.csv", "call_id;started;phone\nc1;2026-01-15 10:00:00;555\n")
    s = make_settings(tmp_path, web_source(), email_source(), calls)
    report = ingest(s)
    assert (report.read, report.loaded) == (2, 2)
    assert sorted(e["event_id"] for e in events(s)) == ["email:e1", "web:h1"]
    [bad] = [f for f in report.files if f.refused]
    assert (bad.source, bad.file, bad.read) == ("calls", "calls/x.csv", 0)
    assert bad.refused == "column 'caller' not found; columns are ['call_id', 'started', 'phone']"
    # The only file of its source: the whole source delivered nothing, which the run summary must say.
    assert report.sources_refused() == ["calls"]
    with duckdb.connect() as con:
        recorded = con.sql("select file from read_parquet($p) order by 1", params={"p": str(manifest_path(s))})
        assert recorded.fetchall() == [("email/a.jsonl",), ("web/a.csv",)]
    # Refused again, and only it, until it fits: once replaced, it loads.
    again = ingest(s, "b2")
    assert [f.file for f in again.files if f.refused] == ["calls/x.csv"] and again.read == 0
    write(tmp_path, "calls/x.csv", "call_id;started;caller\nc1;2026-01-15 10:00:00;+14155550100\n")
    fixed = ingest(s, "b3")
    assert (fixed.loaded, fixed.sources_refused()) == (1, [])


def test_empty_and_header_only_files(tmp_path):
    write(tmp_path, "web/a.csv", "")
    write(tmp_path, "web/b.csv", WEB_HEADER)
    write(tmp_path, "email/a.jsonl", "")
    s = make_settings(tmp_path, web_source(), email_source())
    report = ingest(s)
    assert [(f.read, f.skipped) for f in report.files] == [(0, False)] * 3
    assert not list(s.events_dir.rglob("*.parquet"))


@pytest.mark.parametrize(
    ("scale", "raw", "expected"),
    [
        ("csat_1_5", "1", -1.0),
        ("csat_1_5", "3", 0.0),
        ("csat_1_5", "5", 1.0),
        ("nps_0_10", "0", -1.0),
        ("nps_0_10", "10", 1.0),
        ("nps_0_10", "8", 0.6),
        ("stars_1_5", "4", 0.5),
        ("stars_1_10", "1", -1.0),
        ("stars_1_10", "10", 1.0),
        ("unit", "-0.25", -0.25),
    ],
)
def test_sentiment_scales(tmp_path, scale, raw, expected):
    write(
        tmp_path,
        "web/a.csv",
        "hit_id,hit_time,platform,action,score\n"
        f"h1,2026-01-15 10:00:00,desktop,survey,{raw}\nh2,2026-01-15 10:00:00,desktop,survey,\n",
    )
    s = make_settings(tmp_path, web_source(identifiers={}, revenue=None, sentiment="score", sentiment_scale=scale))
    ingest(s)
    a, b = events(s)
    assert a["sentiment"] == pytest.approx(expected)
    assert b["sentiment"] is None


@pytest.mark.parametrize(("raw", "why"), [("six", "expected a number"), ("7", "expected a csat_1_5 score")])
def test_bad_sentiment_is_quarantined(tmp_path, raw, why):
    write(tmp_path, "web/a.csv", f"hit_id,hit_time,platform,action,score\nh1,2026-01-15 10:00:00,web,survey,{raw}\n")
    s = make_settings(tmp_path, web_source(identifiers={}, revenue=None, sentiment="score", sentiment_scale="csat_1_5"))
    assert ingest(s).quarantined == 1
    [q] = quarantine(s)
    assert q["field"] == "sentiment" and why in q["reason"]


def test_unknown_time_zone_is_rejected_with_the_config(tmp_path):
    with pytest.raises(ValidationError, match=r"expected an IANA time zone .* got 'Mars/Olympus'"):
        web_source(timezone="Mars/Olympus")


def test_a_file_cut_inside_its_last_row_waits_and_the_complete_file_loads_once(tmp_path):
    s = make_settings(tmp_path, web_source())
    full = WEB_HEADER + "h1,2026-01-10 10:00:00,desktop,order,,,c1,123.45,/buy\n"
    path = write(tmp_path, "web/a.csv", full[: full.index("123.45") + 2])  # the exporter is at "12"
    first = ingest(s)
    assert [f.not_ready for f in first.files] == [
        "it ends inside a line (still being written?); read if unchanged next run"
    ]
    assert not any(s.lake_dir.rglob("*.parquet"))
    # A run that loaded nothing because of it says so, instead of sending the user to check the globs.
    held = r"1 file\(s\) not ready, held for the next run: web/a.csv.*Run again"
    with pytest.raises(NothingToPublishError, match=held):
        require_events(s, first)
    path.write_text(full, encoding="utf-8")
    ingest(s, "b2")
    (row,) = events(s)
    assert row["revenue"] == Decimal("123.45")
    assert not (s.lake_dir / "quarantine").exists()


def test_a_file_without_a_final_newline_loads_when_it_has_not_changed_by_the_next_run(tmp_path):
    s = make_settings(tmp_path, web_source())
    write(tmp_path, "web/a.csv", WEB_HEADER + "h1,2026-01-10 10:00:00,desktop,pageview,,,c1,,/")
    assert ingest(s).loaded == 0
    assert ingest(s, "b2").loaded == 1
    assert ingest(s, "b3").loaded == 0  # and only once


def test_a_file_rewritten_while_it_is_read_is_left_for_the_next_run(tmp_path, monkeypatch):
    from journeys import ingest as ingest_module

    s = make_settings(tmp_path, web_source())
    path = write(tmp_path, "web/a.csv", WEB_HEADER + "h1,2026-01-10 10:00:00,desktop,pageview,,,c1,,/\n")
    real_read = ingest_module.read_source_rows

    def exporter_appends_meanwhile(con, f, columns):
        real_read(con, f, columns)
        with path.open("a", encoding="utf-8") as fh:
            fh.write("h2,2026-01-10 11:00:00,desktop,pageview,,,c2,,/x\n")

    monkeypatch.setattr(ingest_module, "read_source_rows", exporter_appends_meanwhile)
    report = ingest(s)
    assert report.files[0].not_ready == "its content changed while it was read"
    assert not any(s.lake_dir.rglob("*.parquet"))
    monkeypatch.undo()
    ingest(s, "b2")
    assert sorted(r["event_id"] for r in events(s)) == ["web:h1", "web:h2"]


def held_rows(settings: Settings) -> list[dict]:
    from journeys.ingest import held_dir, held_glob

    if not any(held_dir(settings).rglob("*.parquet")):
        return []
    rel = duckdb.connect().sql(
        "select * from read_parquet($g, hive_partitioning = false) order by event_id",
        params={"g": held_glob(settings)},
    )
    return rel.to_arrow_table().to_pylist()


def test_rows_later_than_the_limit_are_held_back_and_loaded_once_when_as_of_passes_them(tmp_path):
    write(
        tmp_path,
        "web/a.csv",
        WEB_HEADER
        + "h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,\n"
        + "h2,2026-04-10 10:00:00,desktop,pageview,,,c1,,\n"  # after as_of + 1d: held
        + "h3,2026-06-01 10:00:00,ios,order,,,c1,5,\n"  # held until a June run
        + "h2,2026-01-20 10:00:00,desktop,pageview,,,c1,,\n",  # the held h2 came first: a duplicate
    )
    s = make_settings(tmp_path, web_source())
    first = ingest(s, "b1")
    (web,) = first.files
    assert (web.read, web.loaded, web.quarantined, web.duplicates, web.held) == (4, 1, 0, 1, 2)
    assert (first.released, first.still_held) == (0, 2)
    assert [r["event_id"] for r in events(s)] == ["web:h1"]
    assert not list(s.quarantine_dir.rglob("*.parquet"))  # never quarantined for its time
    assert [(r["event_id"], r["occurred_at"]) for r in held_rows(s)] == [
        ("web:h2", datetime(2026, 4, 10, 8, 0)),
        ("web:h3", datetime(2026, 6, 1, 8, 0)),
    ]

    # A later file's row with a held id is a duplicate, exactly as if the held row had been loaded.
    write(tmp_path, "web/b.csv", WEB_HEADER + "h3,2026-02-01 10:00:00,ios,order,,,c1,7,\n")
    may = ingest(s, "b2", as_of=datetime(2026, 5, 1))
    skipped, b = may.files
    assert skipped.skipped and skipped.read == 0
    assert (b.read, b.loaded, b.duplicates, b.held) == (1, 0, 1, 0)
    assert (may.released, may.still_held) == (1, 1)
    lake = {r["event_id"]: r for r in events(s)}
    assert sorted(lake) == ["web:h1", "web:h2"]
    assert (lake["web:h2"]["occurred_at"], lake["web:h2"]["batch_id"]) == (datetime(2026, 4, 10, 8, 0), "b2")
    assert (lake["web:h2"]["source_file"], lake["web:h2"]["source_line"]) == ("web/a.csv", 3)
    assert date(2026, 4, 10) in may.affected_dates

    again = ingest(s, "b3", as_of=datetime(2026, 5, 1))
    assert (again.read, again.released, again.still_held) == (0, 0, 1)
    june = ingest(s, "b4", as_of=datetime(2026, 7, 1))
    assert (june.released, june.still_held) == (1, 0)
    lake = {r["event_id"]: r for r in events(s)}
    assert sorted(lake) == ["web:h1", "web:h2", "web:h3"]
    assert lake["web:h3"]["revenue"] == Decimal("5.00")  # the held version, not the later duplicate
    assert held_rows(s) == []
    # Every row read once, each held row released once: read = loaded + quarantined + duplicates + released.
    runs = [first, may, again, june]
    assert sum(r.read for r in runs) == 5 == sum(r.loaded + r.quarantined + r.duplicates + r.released for r in runs)


def test_a_run_killed_while_releasing_held_rows_never_loads_them_twice(tmp_path, monkeypatch):
    import journeys.ingest as ingest_module

    write(
        tmp_path,
        "web/a.csv",
        WEB_HEADER + "h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,\n" + "h2,2026-04-10 10:00:00,ios,order,,,c1,,\n",
    )
    s = make_settings(tmp_path, web_source())
    assert ingest(s, "b1").held == 1
    real = ingest_module._fsync_replace

    def dying(src, dst):
        if "held" in dst.parts or (dst.suffix == ".parquet" and dst.name.startswith("b2")):
            real(src, dst)
            raise RuntimeError("killed after the lake was written, before state/held/ was")
        real(src, dst)

    monkeypatch.setattr(ingest_module, "_fsync_replace", dying)
    with pytest.raises(RuntimeError, match="killed"):
        ingest_sources(s, as_of=datetime(2026, 5, 1), batch_id="b2")
    monkeypatch.undo()
    assert len(held_rows(s)) == 1 and sorted(r["event_id"] for r in events(s)) == ["web:h1", "web:h2"]

    rerun = ingest(s, "b3", as_of=datetime(2026, 5, 1))
    assert (rerun.released, rerun.still_held) == (0, 0)  # already in the lake: only dropped from state/held/
    assert sorted(r["event_id"] for r in events(s)) == ["web:h1", "web:h2"]
    assert held_rows(s) == []


# --- a new version of a landing file -----------------------------------------------------------------


def manifest(settings: Settings) -> list[dict]:
    from journeys.ingest import manifest_path

    rel = duckdb.connect().sql(
        "select * from read_parquet($p) order by ingested_at, file", params={"p": str(manifest_path(settings))}
    )
    return rel.to_arrow_table().to_pylist()


def test_a_changed_file_replaces_the_rows_and_quarantine_records_of_its_earlier_version(tmp_path):
    s = make_settings(tmp_path, web_source())
    write(
        tmp_path,
        "web/a.csv",
        WEB_HEADER
        + "h1,2026-01-10 10:00:00,desktop,order,,,c1,12.00,/buy\n"  # the exporter's wrong value
        + "h2,2026-01-10 11:00:00,desktop,pageview,,,c1,,/gone\n"  # not in the next version
        + "h3,2026-01-10 12:00:00,ios,order,,,c1,12.x,\n",  # bad revenue: quarantined
    )
    write(tmp_path, "web/b.csv", WEB_HEADER + "h9,2026-01-10 13:00:00,desktop,pageview,,,c9,,/other\n")
    first = ingest(s, "b1")
    assert [(f.read, f.loaded, f.quarantined, f.duplicates) for f in first.files] == [(3, 2, 1, 0), (1, 1, 0, 0)]
    assert [q["line"] for q in quarantine(s)] == [4]

    corrected = (
        WEB_HEADER
        + "h1,2026-01-10 10:00:00,desktop,order,,,c1,123.45,/buy\n"
        + "h3,2026-01-10 12:00:00,ios,order,,,c1,5.00,\n"  # fixed
        + "h9,2026-01-10 13:00:00,desktop,pageview,,,c9,,/other\n"  # b.csv's row: still a duplicate
    )
    write(tmp_path, "web/a.csv", corrected)
    second = ingest(s, "b2")
    a, b = second.files
    assert (a.read, a.loaded, a.quarantined, a.duplicates, a.held) == (3, 2, 0, 1, 0)
    # h1 and h2 left the lake, h3's quarantine record went: nothing of the earlier version disappears uncounted.
    assert (a.replaced, second.replaced) == (3, 3)
    assert b.skipped and b.replaced == 0
    lake = {r["event_id"]: r for r in events(s)}
    assert sorted(lake) == ["web:h1", "web:h3", "web:h9"]
    assert lake["web:h1"]["revenue"] == Decimal("123.45")
    assert (lake["web:h1"]["batch_id"], lake["web:h3"]["batch_id"]) == ("b2", "b2")
    assert lake["web:h3"]["revenue"] == Decimal("5.00")
    # Other files' rows are untouched; the partition was rewritten, not emptied, still named after its batch.
    assert (lake["web:h9"]["source_file"], lake["web:h9"]["batch_id"]) == ("web/b.csv", "b1")
    names = sorted(re.sub(r"-r[0-9a-f]{12}$", "-r<digest>", p.stem) for p in s.events_dir.rglob("*.parquet"))
    assert names == ["b1-0-r<digest>", "b2-0"]
    assert not list(s.quarantine_dir.rglob("*.parquet"))
    # The manifest keeps the earlier version, marked with the batch that replaced it.
    rows = [(m["file"], m["batch_id"], m["quarantined"], m["replaced"], m["superseded_by"]) for m in manifest(s)]
    assert rows == [
        ("web/a.csv", "b1", 1, 0, "b2"),
        ("web/b.csv", "b1", 0, 0, None),
        ("web/a.csv", "b2", 0, 3, None),
    ]

    # The same bytes again under another name are all duplicates; nothing is replaced.
    write(tmp_path, "web/c.csv", corrected)
    third = ingest(s, "b3")
    assert [(f.read, f.duplicates, f.replaced) for f in third.files if not f.skipped] == [(3, 3, 0)]
    assert sorted(r["event_id"] for r in events(s)) == ["web:h1", "web:h3", "web:h9"]
    # And going back to the first version is a new version again: the wrong value and the bad row return.
    write(
        tmp_path,
        "web/a.csv",
        WEB_HEADER
        + "h1,2026-01-10 10:00:00,desktop,order,,,c1,12.00,/buy\n"
        + "h2,2026-01-10 11:00:00,desktop,pageview,,,c1,,/gone\n"
        + "h3,2026-01-10 12:00:00,ios,order,,,c1,12.x,\n",
    )
    fourth = ingest(s, "b4")
    assert [(f.file, f.loaded, f.quarantined, f.replaced) for f in fourth.files if not f.skipped] == [
        ("web/a.csv", 2, 1, 2)
    ]
    assert {r["event_id"]: r["revenue"] for r in events(s)} == {
        "web:h1": Decimal("12.00"),
        "web:h2": None,
        "web:h9": None,
    }
    assert [(q["source_file"], q["line"], q["batch_id"]) for q in quarantine(s)] == [("web/a.csv", 4, "b4")]


def test_a_changed_file_replaces_its_earlier_versions_held_back_rows(tmp_path):
    s = make_settings(tmp_path, web_source())
    write(
        tmp_path,
        "web/a.csv",
        WEB_HEADER
        + "h1,2026-01-10 10:00:00,desktop,pageview,,,c1,,\n"
        + "h2,2099-01-10 10:00:00,desktop,pageview,,,c1,,\n",  # a nonsense year: held back for good
    )
    first = ingest(s, "b1")
    assert (first.loaded, first.held, first.still_held) == (1, 1, 1)
    write(
        tmp_path,
        "web/a.csv",
        WEB_HEADER
        + "h1,2026-01-10 10:00:00,desktop,pageview,,,c1,,\n"
        + "h2,2026-01-10 11:00:00,desktop,pageview,,,c1,,\n",
    )
    second = ingest(s, "b2")
    ((a),) = second.files
    assert (a.read, a.loaded, a.duplicates, a.held, a.replaced) == (2, 2, 0, 0, 2)
    assert (second.released, second.still_held) == (0, 0)
    assert held_rows(s) == []
    assert [(r["event_id"], r["occurred_at"]) for r in events(s)] == [
        ("web:h1", datetime(2026, 1, 10, 9, 0)),
        ("web:h2", datetime(2026, 1, 10, 10, 0)),
    ]


def test_a_new_version_that_is_still_being_written_leaves_the_earlier_one_in_place(tmp_path):
    s = make_settings(tmp_path, web_source())
    write(tmp_path, "web/a.csv", WEB_HEADER + "h1,2026-01-10 10:00:00,desktop,order,,,c1,12.00,/buy\n")
    ingest(s, "b1")
    # The exporter is rewriting it and has reached the middle of the corrected value.
    write(tmp_path, "web/a.csv", WEB_HEADER + "h1,2026-01-10 10:00:00,desktop,order,,,c1,12")
    waiting = ingest(s, "b2")
    assert waiting.files[0].not_ready and waiting.replaced == 0
    assert [r["revenue"] for r in events(s)] == [Decimal("12.00")]
    write(tmp_path, "web/a.csv", WEB_HEADER + "h1,2026-01-10 10:00:00,desktop,order,,,c1,123.45,/buy\n")
    done = ingest(s, "b3")
    assert (done.loaded, done.duplicates, done.replaced) == (1, 0, 1)
    assert [r["revenue"] for r in events(s)] == [Decimal("123.45")]


def test_rows_exactly_at_the_plausible_time_limits_are_loaded(tmp_path):
    # Berlin is UTC+1 in winter: 01:00 local on 2000-01-01 is quality.min_occurred_at (2000-01-01 UTC), and
    # 01:00 local on 2026-03-02 is as_of + max_future (1 day). At the limits a row loads; a second beyond, the
    # first is quarantined as too old and the second held back.
    write(
        tmp_path,
        "web/a.csv",
        WEB_HEADER
        + "h1,2000-01-01 01:00:00,desktop,pageview,,,c1,,\n"
        + "h2,2000-01-01 00:59:59,desktop,pageview,,,c1,,\n"
        + "h3,2026-03-02 01:00:00,desktop,pageview,,,c1,,\n"
        + "h4,2026-03-02 01:00:01,desktop,pageview,,,c1,,\n",
    )
    s = make_settings(tmp_path, web_source())
    (web,) = ingest(s).files
    assert (web.read, web.loaded, web.quarantined, web.held) == (4, 2, 1, 1)
    assert [r["event_id"] for r in events(s)] == ["web:h1", "web:h3"]
    assert [r["line"] for r in quarantine(s)] == [3]
    assert [r["event_id"] for r in held_rows(s)] == ["web:h4"]


@pytest.mark.slow
def test_a_run_of_many_files_is_ingested_within_a_small_memory_limit(tmp_path):
    # The run's events wait in one spillable table for the lake write: a union of every file's part under the
    # write's sort ran out of memory (10M events at 4 GB; this sample's files at 40 MB, where one file at a time
    # needs about 20 MB).
    from journeys.config import load_settings
    from journeys.generate import GenerateSpec, generate_sample
    from journeys.ingest import ingest_sources

    spec = GenerateSpec(events=30_000, seed=5)
    generate_sample(spec, tmp_path)
    repo = Path(__file__).resolve().parents[2]
    settings = load_settings(repo / "journeys.yaml", data_root=tmp_path, pii_salt="s", memory_limit="40MB")
    report = ingest_sources(settings, as_of=spec.as_of, batch_id="b1")
    assert report.accounting_ok and report.loaded > 29_000
    with duckdb.connect() as con:
        lake = con.execute("select count(*) from read_parquet($p)", {"p": f"{settings.events_dir}/*/*.parquet"})
        assert lake.fetchall()[0][0] == report.events


def test_a_retry_whose_first_file_takes_the_first_attempts_ordinal_keeps_that_attempts_lake_rows(tmp_path, monkeypatch):

    s = make_settings(tmp_path, web_source(identifiers={}, revenue=None))
    header = "hit_id,hit_time,platform,action\n"
    for name in ("b", "c", "d"):
        write(tmp_path, f"web/{name}.csv", header + f"{name}1,2026-01-15 10:00:00,desktop,pageview\n")
    fail_ingest_file_on_call(monkeypatch, 2)
    with pytest.raises(OSError, match="share"):
        ingest_sources(s, as_of=AS_OF, batch_id="b1")  # b.csv (ordinal 0) is flushed as b1-0
    monkeypatch.undo()
    # A delivery between the attempts sorts first: the retry's first file has ordinal 0 again.
    write(tmp_path, "web/a.csv", header + "a1,2026-01-15 10:00:00,desktop,pageview\n")
    again = ingest(s)
    assert sum(f.skipped for f in again.files) == 1
    # Every row the manifest counts as loaded is in the lake: the retry did not overwrite b1-0.
    assert sorted(e["event_id"] for e in events(s)) == ["web:a1", "web:b1", "web:c1", "web:d1"]
    # Nor its raw handoff index: each attempt's files are handed to the quality step.
    assert len(list((s.handoff_dir / "b1").glob("*.files.parquet"))) == 2
