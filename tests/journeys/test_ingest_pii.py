"""Ingest stores no raw e-mail or phone: quarantine's raw text, attributes, reasons, errors and log lines."""

from __future__ import annotations

import hashlib
import json
import logging

import duckdb
import pytest
from test_ingest import AS_OF, SALT, email_source, events, make_settings, quarantine, web_source, write

from journeys.config import MappedField, SourceConfig
from journeys.ingest import ingest_sources

MAIL_INTL = "Jöhn.Dœ+tag@exämple.de"
MAIL_QUOTED = '"john doe"@example.org'
MAIL_PLAIN = "ana.lopez@example.com"
PHONE_EXT = "+1 (415) 555-0100 ext. 12"
PHONE_DOTS = "415.555.0199 x7"
PHONE_DOT_SEP = "+44\u00b720\u00b77946\u00b70958"
PLANTED = [MAIL_INTL, MAIL_QUOTED, MAIL_PLAIN, PHONE_EXT, PHONE_DOTS, PHONE_DOT_SEP]
FRAGMENTS = ["jöhn", "john doe", "ana.lopez", "555-0100", "555.0199", "7946"]
"""Pieces of the planted values that no redacted or masked text may still hold."""


def assert_clean(text: str | None) -> None:
    low = (text or "").lower()
    for piece in [*PLANTED, *FRAGMENTS]:
        assert piece.lower() not in low, (piece, text)


def csv_field(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


GA_COOKIE = "GA1.2.4817259.1767225"
NOTE_HEADER = "hit_id,hit_time,platform,action,email,phone,client_id,order_value,E-Mail,note\n"


def test_quarantined_row_keeps_only_its_safe_columns_readable(tmp_path):
    # A bad time quarantines the row; its unmapped columns carry an e-mail and a phone.
    write(
        tmp_path,
        "web/a.csv",
        NOTE_HEADER
        + f"h1,2026-13-45 10:00:00,desktop,pageview,{MAIL_PLAIN},{PHONE_EXT},c1,,{csv_field(MAIL_INTL)},"
        + f"{csv_field('call ' + PHONE_DOTS)}\n",
    )
    s = make_settings(tmp_path, web_source())
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    (row,) = quarantine(s)
    raw = json.loads(row["raw"])
    assert_clean(row["raw"])
    # Safe mapped columns as read; identifiers hashed; everything else only its shape.
    assert (raw["hit_id"], raw["hit_time"], raw["platform"], raw["action"]) == (
        "h1",
        "2026-13-45 10:00:00",
        "desktop",
        "pageview",
    )
    assert raw["email"] == "sha256:" + hashlib.sha256((SALT + MAIL_PLAIN).encode()).hexdigest()
    assert raw["client_id"].startswith("sha256:")
    assert raw["E-Mail"] == "xxxx.xx+xxx@xxxxxxx.xx"
    assert raw["note"] == "xxxx 999.999.9999 x9"


@pytest.mark.parametrize(
    ("rel", "source", "text"),
    [
        # Too many columns: the reader cannot split the row, so nothing of it is known to be safe.
        ("web/a.csv", "web", f"h1,2026-01-15 10:00:00,ios,order,{csv_field(MAIL_QUOTED)},{PHONE_DOT_SEP},c1,1,x,y,z\n"),
        ("email/a.jsonl", "email", '{"id": "e1", "ts": "2026-01-10T10:00:00Z", "mail": "' + MAIL_INTL + '" ' + "\n"),
    ],
)
def test_a_line_the_reader_cannot_split_keeps_only_its_shape(tmp_path, rel, source, text):
    header = NOTE_HEADER if source == "web" else ""
    write(tmp_path, rel, header + text)
    s = make_settings(tmp_path, web_source() if source == "web" else email_source())
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    (row,) = quarantine(s)
    assert row["field"] == "row"
    assert_clean(row["raw"])
    assert_clean(row["reason"])
    assert not any(c.isdigit() and c != "9" for c in row["raw"]), row["raw"]
    assert row["raw"].startswith("x9,9999-99-99" if source == "web" else '{"xx": "x9"')


def test_a_reason_quotes_a_safe_value_but_never_an_email_or_phone_in_it(tmp_path):
    write(
        tmp_path,
        "web/a.csv",
        NOTE_HEADER
        + f"h1,{MAIL_PLAIN},desktop,pageview,,,c1,,,\n"
        + f"h2,2026-01-15 10:00:00,desktop,pageview,,,c1,{csv_field(PHONE_EXT)},,\n",
    )
    s = make_settings(tmp_path, web_source())
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    rows = quarantine(s)
    assert [r["reason"] for r in rows] == [
        "occurred_at: expected timestamp '%Y-%m-%d %H:%M:%S', got '<redacted-email>'",
        "revenue: expected a decimal number (18,2), got '<redacted-phone>'",
    ]
    for r in rows:
        assert_clean(r["raw"])


# The object is written out per column up to _INLINE_REDACTIONS redacted columns, by one lambda beyond.
@pytest.mark.parametrize("inline", [32, 0])
def test_attributes_hash_pii_named_columns_and_redact_pii_anywhere_in_values_and_names(tmp_path, monkeypatch, inline):
    monkeypatch.setattr("journeys.ingest._INLINE_REDACTIONS", inline)
    write(
        tmp_path,
        "web/a.csv",
        NOTE_HEADER.replace("\n", f",order_ref,{csv_field(MAIL_PLAIN)},{csv_field(MAIL_QUOTED)}\n")
        + f"h1,2026-01-15 10:00:00,desktop,pageview,,,{GA_COOKIE},,{csv_field(MAIL_INTL)},"
        + f"{csv_field('call ' + PHONE_EXT + ' or ' + MAIL_QUOTED)},ord-1234567,2026-01-15,x\n",
    )
    nested = {"profile": {"mail": MAIL_INTL, "phones": [PHONE_DOTS, PHONE_DOT_SEP]}, "n": 3, "day": "2026-01-10"}
    write(
        tmp_path,
        "email/a.jsonl",
        json.dumps({"id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open", "nested": nested}) + "\n",
    )
    s = make_settings(tmp_path, web_source(), email_source())
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    by_id = {r["event_id"]: json.loads(r["attributes"]) for r in events(s)}
    for r in events(s):
        assert_clean(r["attributes"])
        # Compact JSON whatever white space the source's own JSON had.
        assert r["attributes"] == json.dumps(json.loads(r["attributes"]), ensure_ascii=False, separators=(",", ":"))
    web = by_id["web:h1"]
    # `E-Mail` is not the mapped `email` column: hashed as the lake hashes an e-mail (trim, lower case).
    assert web["E-Mail"] == "sha256:" + hashlib.sha256((SALT + MAIL_INTL.lower()).encode()).hexdigest()
    assert web["note"] == "call <redacted-phone> or <redacted-email>"
    assert (web["order_ref"], web["<redacted-email>"]) == ("ord-1234567", "2026-01-15")
    # A second name redacted alike is another key, its column's position added: an object repeats no key.
    assert web["<redacted-email>_12"] == "x"
    # An identifier column keeps its value (the lake's cookie id, read by hold_constant), though it looks like
    # a phone with dots.
    assert web["client_id"] == GA_COOKIE
    assert by_id["email:e1"]["nested"] == {
        "profile": {"mail": "<redacted-email>", "phones": ["<redacted-phone>", "<redacted-phone>"]},
        "n": 3,
        "day": "2026-01-10",
    }


def test_redact_attributes_false_keeps_values_as_they_are(tmp_path):
    write(tmp_path, "web/a.csv", "hit_id,hit_time,Phone\nh1,2026-01-15 10:00:00,415-555-0100\n")
    src = SourceConfig(
        name="web",
        path="web/*.csv",
        format="csv",
        event_id="hit_id",
        occurred_at="hit_time",
        channel=MappedField(value="web"),
        event_type=MappedField(value="page_view"),
        redact_attributes=False,
    )
    s = make_settings(tmp_path, src)
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    assert json.loads(events(s)[0]["attributes"]) == {"Phone": "415-555-0100"}


def test_a_headerless_file_never_puts_its_first_row_in_its_refusal_or_the_log(tmp_path, caplog):
    # No header: the first data row is read as the header, so the mapped columns are "missing".
    write(tmp_path, "web/a.csv", f"h1,2026-01-15 10:00:00,desktop,pageview,{MAIL_INTL},{csv_field(PHONE_EXT)}\n")
    s = make_settings(tmp_path, web_source())
    caplog.set_level(logging.DEBUG)
    report = ingest_sources(s, as_of=AS_OF, batch_id="b1")
    [why] = [f.refused for f in report.files if f.refused]
    assert why is not None and "column 'hit_id' not found" in why and "<redacted-email>" in why
    assert_clean(why)
    assert "column 'hit_id' not found" in caplog.text
    assert_clean(caplog.text)
    assert not (tmp_path / "lake" / "events").exists()


def test_a_new_column_named_like_an_email_is_redacted_in_drift_warning_and_manifest(tmp_path, caplog):
    write(tmp_path, "web/a.csv", NOTE_HEADER + "h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,,\n")
    s = make_settings(tmp_path, web_source())
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    write(
        tmp_path,
        "web/b.csv",
        NOTE_HEADER.replace("\n", f",{csv_field(MAIL_PLAIN)}\n")
        + "h2,2026-01-15 10:00:00,desktop,pageview,,,c1,,,,x\n",
    )
    caplog.set_level(logging.WARNING)
    report = ingest_sources(s, as_of=AS_OF, batch_id="b2")
    assert report.files[1].new_columns == ["<redacted-email>"]
    assert "new column(s) ['<redacted-email>']" in caplog.text
    assert_clean(caplog.text)
    manifest = duckdb.connect().sql(
        "select cast(list(columns) as varchar), cast(list(new_columns) as varchar) from read_parquet($p)",
        params={"p": str(s.state_dir / "ingest_manifest.parquet")},
    )
    assert_clean(str(manifest.fetchall()))
