"""E-mails and phones found in free text and redacted, values masked to their shape: Python and DuckDB alike."""

from __future__ import annotations

import duckdb
import pytest

from journeys import pii

EMAILS = [
    "ana.lopez@example.com",
    "Jöhn.Dœ+tag@exämple.de",
    "用户@例子.广告",
    '"john doe"@example.org',
    "o'brien@example.ie",
]
PHONES = [
    "+1 (415) 555-0100 ext. 12",
    "(212) 555-0147",
    "415.555.0199 x7",
    "+44\u00b720\u00b77946\u00b70958",
    "0049 30 1234567",
    "030/123456789",
    "+4930123456",
    "212 555 0100;ext=9",
    "415\u00a0555\u00a00100",
    "030/123456",  # one separator: a phone from 9 digits on
]
NOT_PII = [
    "2026-01-15 10:00:00",
    "2026-13-45 25:61:00",
    "15.01.2026",
    "1767225600",
    "52.5200066",
    "129.99",
    "ord-1234567",
    "/cart?step=2",
    "@handle",
    "0301/2345",  # one separator and 8 digits: not yet a phone
]


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    for stmt in pii.SQL_MACROS.split(";\n"):
        if stmt.strip():
            c.execute(stmt)
    return c


def sql_redacted(con, text: str) -> str:
    return con.execute("select journeys_redact($t)", {"t": text}).fetchone()[0]


@pytest.mark.parametrize("email", EMAILS)
def test_emails_are_redacted_in_text_and_json_text(con, email):
    for text in (email, f"write to {email}, thanks", '{"a": {"b": ' + _json_string(email) + "}}"):
        for got in (pii.redacted(text), sql_redacted(con, text)):
            assert "<redacted-email>" in got, (text, got)
            assert email.split("@")[0].strip('"') not in got, (text, got)


@pytest.mark.parametrize("phone", PHONES)
def test_phones_with_extensions_and_other_separators_are_redacted(con, phone):
    for text in (phone, f"call {phone} today", '{"n": [' + _json_string(phone) + "]}"):
        for got in (pii.redacted(text), sql_redacted(con, text)):
            assert "<redacted-phone>" in got, (text, got)
            assert not any(c.isdigit() for c in got), (text, got)


@pytest.mark.parametrize("text", NOT_PII)
def test_dates_decimals_ids_and_bare_digits_are_left_alone(con, text):
    assert pii.redacted(text) == text
    assert sql_redacted(con, text) == text


def test_shape_mask_keeps_only_digits_as_9_letters_as_x_and_punctuation(con):
    text = 'h4,"用户@例子.广告",+1 (415) 555-0100 ext. 12'
    want = 'x9,"xx@xx.xx",+9 (999) 999-9999 xxx. 99'
    assert pii.shape_masked(text) == want
    assert con.execute("select journeys_mask($t)", {"t": text}).fetchone()[0] == want


def test_redacted_json_stays_json_even_when_redaction_would_break_it(con):
    fine, broken = con.execute(
        "select journeys_redact_json($a::json)::varchar, journeys_redact_json($b::json)::varchar",
        {"a": '{"m": "ana@example.com", "n": 3}', "b": '{"a":"x","@b":1}'},
    ).fetchone()
    assert fine == '{"m": "<redacted-email>", "n": 3}'
    assert con.execute("select json_valid($j)", {"j": broken}).fetchone()[0]


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("Email", True),
        ("E-Mail", True),
        ("contactEmail", True),
        ("phone_2", True),
        ("Mobile No", True),
        ("tel", True),
        ("fax_number", True),
        ("hotel", False),
        ("cellar", False),
        ("page", False),
        ("client_id", False),
    ],
)
def test_pii_named_columns(name, named):
    assert pii.pii_named(name) is named


def _json_string(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)
