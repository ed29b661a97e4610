"""Bad-input corpus: every kind of malformed row or file ends as designed, and no row is ever lost.

Each case is one row of CASES: the landing files (text, bytes, or a file of tests/journeys/bad_input/)
and what ingest must do with them: load / quarantine / de-duplicate with the designed reason, field,
column and line, or refuse the file alone (a mapping that does not fit it, a file that cannot be read),
naming source, file and why, while the batch's other files load. Whatever happens,
read = loaded + quarantined + duplicates + held.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from journeys.config import MappedField, Settings, SourceConfig
from journeys.ingest import MAX_COLUMNS, events_glob, ingest_sources, quarantine_glob

AS_OF = datetime(2026, 3, 1)
CORPUS = Path(__file__).resolve().parent / "bad_input"
HEADER = "hit_id,hit_time,platform,action,email,phone,client_id,order_value,page\n"
OK = "2026-01-15 10:00:00,desktop,pageview"


def row(hit_id: str = "h1", when: str = "2026-01-15 10:00:00", rest: str = "desktop,pageview,,,c1,,/home") -> str:
    return f"{hit_id},{when},{rest}\n"


def parquet(**columns: pa.Array | list) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def corrupt_parquet() -> bytes:
    """A Parquet file whose footer is sound but whose first data page does not decompress."""
    n = 1000
    buf = io.BytesIO()
    table = pa.table(
        {
            "receipt_id": [f"r{i}" for i in range(n)],
            "sold_at": pa.array([datetime(2026, 1, 5)] * n, pa.timestamp("us")),
            "amount": [1.0] * n,
            "card": ["L1"] * n,
        }
    )
    pq.write_table(table, buf, compression="snappy")
    data = bytearray(buf.getvalue())
    data[200:260] = bytes(b ^ 0xFF for b in data[200:260])  # inside receipt_id's first page
    return bytes(data)


POS_OK = parquet(
    receipt_id=["r9"], sold_at=pa.array([datetime(2026, 1, 5)], pa.timestamp("us")), amount=[1.0], card=["L9"]
)


def wide_csv(columns: int, rows: int) -> str:
    """A CSV of the web source with `columns` columns in all: the mapped ones, then unmapped x0, x1, ..."""
    extra = columns - HEADER.count(",") - 1
    return (
        HEADER.rstrip("\n")
        + "".join(f",x{i}" for i in range(extra))
        + "\n"
        + "".join(row(f"h{r}").rstrip("\n") + ",v" * extra + "\n" for r in range(rows))
    )


SOURCES = [
    SourceConfig(
        name="web",
        path="web/*.csv",
        format="csv",
        timezone="Europe/Berlin",
        timestamp_format="%Y-%m-%d %H:%M:%S",
        event_id="hit_id",
        occurred_at="hit_time",
        channel=MappedField(column="platform", map={"desktop": "web"}),
        event_type=MappedField(column="action", map={"pageview": "page_view", "order": "purchase"}),
        identifiers={"email": "email", "phone": "phone", "client_id": "cookie_id"},
        revenue="order_value",
    ),
    SourceConfig(
        name="email",
        path="email/*.jsonl",
        format="jsonl",
        event_id="id",
        occurred_at="ts",
        channel=MappedField(value="email"),
        event_type=MappedField(column="event", map={"open": "email_open"}),
        identifiers={"email": "email"},
    ),
    SourceConfig(
        name="pos",
        path="pos/*.parquet",
        format="parquet",
        event_id="receipt_id",
        occurred_at="sold_at",
        channel=MappedField(value="store"),
        event_type=MappedField(value="purchase"),
        revenue="amount",
        identifiers={"card": "loyalty_id"},
    ),
]


@dataclass(frozen=True)
class Case:
    """One kind of bad input and its designed outcome."""

    kind: str
    files: dict[str, str | bytes]
    loaded: int = 0
    quarantined: int = 0
    duplicates: int = 0
    blank: int = 0  # rows of nothing but white space / delimiters: counted, not read
    held: int = 0  # valid rows later than as_of + max_future: kept in state/held/, never quarantined
    # (file, line, field, column, regex on the reason) of every quarantined row
    reasons: list[tuple[str, int, str, str | None, str]] = field(default_factory=list)
    warning: str | None = None  # regex a logged warning must match
    # regex the refusal of file P/W... must match: that file alone is not read, the rest of the batch loads
    refused: tuple[str, str] | None = None
    sources_refused: list[str] = field(default_factory=list)  # sources whose every file was refused
    # event_id -> expected values of some lake columns (attributes compared as parsed JSON)
    lake: dict[str, dict] = field(default_factory=dict)


W = "web/a.csv"
E = "email/a.jsonl"
P = "pos/a.parquet"
TS = r"occurred_at: expected timestamp '%Y-%m-%d %H:%M:%S', got "

CASES = [
    # --- timestamps
    Case(
        "bad_timestamp",
        {W: HEADER + row(when="2026-13-45 25:61:00") + row("h2")},
        1,
        1,
        reasons=[(W, 2, "occurred_at", "hit_time", TS + "'2026-13-45 25:61:00'")],
    ),
    Case(
        "impossible_date_feb_30",
        {W: HEADER + row(when="2026-02-30 10:00:00")},
        0,
        1,
        reasons=[(W, 2, "occurred_at", "hit_time", TS + "'2026-02-30 10:00:00'")],
    ),
    Case(
        "timestamp_in_other_format",
        {W: HEADER + row(when="15/01/2026 10:00")},
        0,
        1,
        reasons=[(W, 2, "occurred_at", "hit_time", TS + "'15/01/2026 10:00'")],
    ),
    Case(
        "empty_timestamp",
        {W: HEADER + row(when="")},
        0,
        1,
        reasons=[(W, 2, "occurred_at", "hit_time", "expected a timestamp in column 'hit_time', got an empty value")],
    ),
    Case(
        "future_date",
        {W: HEADER + row(when="2030-01-01 00:00:00") + row("h2")},
        1,
        0,
        held=1,
    ),
    Case(
        "implausibly_old_date",
        {W: HEADER + row(when="1970-01-01 00:00:00")},
        0,
        1,
        reasons=[(W, 2, "occurred_at", "hit_time", "before the earliest plausible time 2000-01-01")],
    ),
    Case(
        "jsonl_timestamp_as_number",
        {E: '{"id": "e1", "ts": 1767225600, "event": "open"}\n'},
        0,
        1,
        reasons=[(E, 1, "occurred_at", "ts", "expected timestamp 'ISO 8601', got '1767225600'")],
    ),
    Case(
        "jsonl_offset_out_of_range",
        {E: '{"id": "e1", "ts": "2026-01-10T10:00:00+25:00", "event": "open"}\n'},
        0,
        1,
        reasons=[(E, 1, "occurred_at", "ts", "expected timestamp 'ISO 8601'")],
    ),
    # --- wrong types
    Case(
        "revenue_not_a_number",
        {W: HEADER + row(rest="desktop,order,,,c1,12.x,")},
        0,
        1,
        reasons=[(W, 2, "revenue", "order_value", r"expected a decimal number \(18,2\), got '12.x'")],
    ),
    Case(
        "revenue_overflows_decimal",
        {W: HEADER + row(rest="desktop,order,,,c1,1e30,")},
        0,
        1,
        reasons=[(W, 2, "revenue", "order_value", "got '1e30'")],
    ),
    Case(
        "parquet_wrong_types",
        {
            P: parquet(
                receipt_id=[1, 2],
                sold_at=[1767225600, 1767225601],
                amount=["abc", "1.5"],
                card=[True, False],
            )
        },
        0,
        2,
        reasons=[
            (P, 1, "occurred_at", "sold_at", "got '1767225600'"),
            (P, 2, "occurred_at", "sold_at", "got '1767225601'"),
        ],
    ),
    Case(
        "parquet_revenue_as_text",
        {
            P: parquet(
                receipt_id=["r1", "r2"],
                sold_at=pa.array([datetime(2026, 1, 5), datetime(2026, 1, 6)], pa.timestamp("us")),
                amount=["abc", "1.5"],
                card=["L1", None],
            )
        },
        1,
        1,
        reasons=[(P, 1, "revenue", "amount", "got 'abc'")],
    ),
    Case(
        "jsonl_object_where_text_expected",
        {E: '{"id": "e1", "ts": {"at": "2026-01-10"}, "event": "open"}\n'},
        0,
        1,
        reasons=[(E, 1, "occurred_at", "ts", "expected timestamp 'ISO 8601'")],
    ),
    # --- ragged rows, quoting, delimiters
    Case(
        "ragged_short_row",
        {W: HEADER + "h1,2026-01-15 10:00:00,desktop\n" + row("h2")},
        1,
        1,
        reasons=[(W, 2, "row", "action", "missing columns: Expected Number of Columns: 9 Found: 3")],
    ),
    Case(
        "ragged_long_row",
        {W: HEADER + row(rest="desktop,pageview,,,c1,,/home,extra,more") + row("h2")},
        1,
        1,
        reasons=[(W, 2, "row", None, "too many columns")],
    ),
    Case(
        "unterminated_quote",
        {W: HEADER + row("h2") + 'h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,"/home\n'},
        1,
        1,
        reasons=[(W, 3, "row", "page", "unterminated quote")],
    ),
    Case(
        "embedded_newline_in_quoted_field",
        {W: HEADER + 'h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,"line one\nline two"\n' + row("h2")},
        2,
        0,
    ),
    Case(
        "wrong_delimiter",
        {W: HEADER.replace(",", ";") + row().replace(",", ";"), "web/b.csv": HEADER + row("h9")},
        1,
        refused=(
            W,
            r"column 'hit_id' not found; columns are \['hit_id;hit_time;.*'\] \(one column: is the delimiter ';'",
        ),
    ),
    Case(
        "jsonl_in_a_csv_source",
        {
            W: '{"hit_id": "h1", "hit_time": "2026-01-15 10:00:00", "platform": "desktop"}\n',
            "web/b.csv": HEADER + row("h9"),
        },
        1,
        refused=(W, r"column 'hit_id' not found; columns are \['\{.*\(the file looks like JSON, not csv\)"),
    ),
    Case("blank_and_whitespace_lines", {W: HEADER + "\n" + row("h1") + "\n \t\n" + row("h2")}, 2, 0, blank=3),
    Case(
        "rows_of_bare_delimiters",
        {
            W: HEADER
            + row("h1")
            + ",,,,,,,,\n" * 3
            + ",,\n"
            + ",,,,,,,,,,,,\n"
            + '"","",,,,,,,\n'
            + row("h2", when="bad")
        },
        1,
        1,
        blank=6,
        reasons=[(W, 9, "occurred_at", "hit_time", TS + "'bad'")],
    ),
    Case(
        "jsonl_blank_lines",
        {
            E: '{"id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n  \n\t\n'
            '{"id": "e2", "ts": "bad", "event": "open"}\n\n'
        },
        1,
        1,
        blank=3,
        reasons=[(E, 4, "occurred_at", "ts", "expected timestamp 'ISO 8601', got 'bad'")],
    ),
    Case(
        "jsonl_leading_empty_lines",
        {
            E: '\n\n{"id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n'
            '{"id": "e2", "ts": "bad", "event": "open"}\n'
        },
        1,
        1,
        blank=2,
        reasons=[(E, 4, "occurred_at", "ts", "expected timestamp 'ISO 8601', got 'bad'")],
    ),
    Case("crlf_line_endings", {W: (HEADER + row("h1") + row("h2")).replace("\n", "\r\n")}, 2, 0),
    # --- encodings
    Case(
        "latin1_bytes_in_utf8_source",
        {W: corpus("latin1_in_utf8.csv")},
        1,
        1,
        reasons=[(W, 2, "row", "page", "invalid encoding: Invalid unicode")],
    ),
    Case("utf8_bom_csv", {W: corpus("utf8_bom.csv")}, 1, 0),
    Case("utf8_bom_jsonl", {E: corpus("utf8_bom.jsonl")}, 2, 0),
    Case("nul_byte_in_field", {W: HEADER + row(rest="desktop,pageview,,,c1,,/a\x00b") + row("h2")}, 2, 0),
    # --- whole files
    Case("empty_csv_file", {W: ""}),
    Case("empty_jsonl_file", {E: ""}),
    Case("header_only_csv", {W: HEADER}),
    Case(
        "not_csv_at_all_png",
        {W: corpus("not_csv.png.csv"), "web/b.csv": HEADER + row("h9")},
        1,
        refused=(W, r"^cannot be read as csv: 'utf-8' codec can't decode byte 0x89"),
    ),
    # The only file of its source: refused all the same, and the source is named as refused whole.
    Case(
        "not_parquet_at_all",
        {P: b"receipt_id,sold_at\nr1,2026-01-05\n", W: HEADER + row()},
        1,
        refused=(P, r"^cannot be read as parquet"),
        sources_refused=["pos"],
    ),
    Case(
        "truncated_parquet",
        {P: parquet(receipt_id=["r1"], sold_at=["2026-01-05"])[:-20], "pos/b.parquet": POS_OK},
        1,
        refused=(P, r"^cannot be read as parquet"),
    ),
    Case("huge_field_1mb", {W: HEADER + row(rest="desktop,pageview,,,c1,,/" + "x" * 1_000_000) + row("h2")}, 2, 0),
    Case(
        "huge_field_3mb_over_line_limit",
        {W: HEADER + row(rest="desktop,pageview,,,c1,,/" + "x" * 3_000_000) + row("h2")},
        1,
        1,
        reasons=[(W, 2, "row", None, "line size")],
    ),
    # --- JSON shapes
    Case(
        "broken_json",
        {E: '{"id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n{"id": "e2", "ts": \n'},
        1,
        1,
        reasons=[(E, 2, "row", None, "broken JSON line: expected a JSON object, got text that is not valid")],
    ),
    Case(
        "json_array_instead_of_lines",
        {E: '[{"id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open"}, {"id": "e2"}]\n'},
        0,
        1,
        reasons=[(E, 1, "row", None, "expected a JSON object, got another JSON value")],
    ),
    Case(
        "pretty_printed_json_array",
        {E: '[\n  {"id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n]\n'},
        1,
        2,
        reasons=[
            (E, 1, "row", None, "got text that is not valid JSON"),
            (E, 3, "row", None, "got text that is not valid JSON"),
        ],
    ),
    Case(
        "jsonl_scalar_lines",
        {E: '"just a string"\n42\nnull\n'},
        0,
        3,
        reasons=[(E, n, "row", None, "another JSON value") for n in (1, 2, 3)],
    ),
    # --- identifiers and ids
    Case(
        "null_event_id",
        {W: HEADER + row(hit_id="") + row("h2")},
        1,
        1,
        reasons=[(W, 2, "event_id", "hit_id", "expected a value in column 'hit_id', got an empty value")],
    ),
    Case(
        "jsonl_null_in_every_identifier",
        {E: '{"id": null, "ts": null, "event": null, "email": null}\n'},
        0,
        1,
        reasons=[(E, 1, "event_id", "id", "got an empty value")],
    ),
    Case("null_in_every_identifier_column", {W: HEADER + row(rest="desktop,pageview,,,,,")}, 1, 0),
    Case(
        "empty_channel_and_type",
        {W: HEADER + row(rest=",,,,c1,,")},
        0,
        1,
        reasons=[(W, 2, "channel", None, "channel: expected a value, got an empty value")],
    ),
    Case(
        "duplicate_ids_within_file", {W: HEADER + row("h1") + row("h1", rest="desktop,pageview,,,c1,,/again")}, 1, 0, 1
    ),
    Case("duplicate_ids_across_files", {W: HEADER + row("h1"), "web/b.csv": HEADER + row("h1") + row("h2")}, 2, 0, 1),
    Case(
        "duplicate_ids_across_formats",
        {
            P: parquet(
                receipt_id=["r1", "r1"],
                sold_at=pa.array([datetime(2026, 1, 5)] * 2, pa.timestamp("us", tz="UTC")),
                amount=[1.0, 1.0],
                card=["L1", "L1"],
            )
        },
        1,
        0,
        1,
    ),
    # --- schema drift
    Case(
        "missing_required_column",
        {W: "hit_id,hit_time,platform,action,email,phone,order_value\n" + row(), "web/b.csv": HEADER + row("h9")},
        1,
        refused=(W, r"^column 'client_id' not found; columns are \['hit_id', 'hit_time', .*'order_value'\]$"),
    ),
    Case(
        "missing_required_jsonl_key",
        {
            E: '{"id": "e1", "when": "2026-01-10T10:00:00Z", "event": "open"}\n',
            "email/b.jsonl": '{"id": "e2", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n',
        },
        1,
        refused=(E, r"^column 'ts' not found; columns are \['event', 'id', 'when'\]$"),
    ),
    Case(
        "parquet_missing_column",
        {P: parquet(receipt_id=["r1"], amount=[1.0], card=["L1"]), "pos/b.parquet": POS_OK},
        1,
        refused=(P, r"^column 'sold_at' not found; columns are \['receipt_id', 'amount', 'card'\]$"),
    ),
    # The first file of a source is its baseline; a later file with an unknown column is drift.
    Case(
        "extra_unknown_column",
        {
            W: HEADER + row("h1"),
            "web/b.csv": HEADER.replace("\n", ",utm_source\n")
            + row("h2", rest="desktop,pageview,,,c1,,/home,newsletter"),
        },
        2,
        0,
        warning=r"source 'web', file 'web/b.csv': new column\(s\) \['utm_source'\] not in the mapping; kept in",
    ),
    Case(
        "duplicate_header_names",
        {W: HEADER.replace("page", "page,page") + row(rest="desktop,pageview,,,c1,,/a,/b")},
        1,
        0,
    ),
    # --- hostile files (issue 12): each blocks at most itself
    Case(
        "columns_named_like_ingest_internals",
        {
            W: HEADER.replace("\n", ",__line,rowid,$param,__reader_error\n")
            + row(rest="desktop,pageview,,,c1,,/home,1,2,3,4")
            + row("h2", rest="desktop,pageview,,,c1,,/home,5,6,7,8")
        },
        2,
        0,
        lake={
            "web:h1": {
                "source_line": 2,
                "attributes": {
                    "client_id": "c1",
                    "page": "/home",
                    "line": "1",
                    "rowid_10": "2",
                    "$param": "3",
                    "reader_error": "4",
                },
            },
            "web:h2": {"source_line": 3},
        },
    ),
    Case(
        "header_names_differing_only_in_case",
        {W: "HIT_ID," + HEADER.replace("\n", ",PAGE\n") + "X1," + row(rest="desktop,pageview,,,c1,,/home,/HOME")},
        1,
        0,
        lake={"web:h1": {"attributes": {"HIT_ID_0": "X1", "client_id": "c1", "page": "/home", "PAGE_10": "/HOME"}}},
    ),
    Case(
        "nul_in_header",
        {W: HEADER.replace("page", "pa\x00ge") + row() + row("h2")},
        2,
        0,
        lake={"web:h1": {"attributes": {"client_id": "c1", "page": "/home"}}},
    ),
    Case(
        "cr_inside_quoted_field",
        {W: HEADER + 'h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,"a\rb"\n' + row("h2")},
        2,
        0,
        lake={
            "web:h1": {"source_line": 2, "attributes": {"client_id": "c1", "page": "a\nb"}},
            "web:h2": {"source_line": 4},
        },
    ),
    Case(
        "crlf_inside_quoted_field",
        {W: HEADER + 'h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,"a\r\nb"\n' + row("h2")},
        2,
        0,
        lake={
            "web:h1": {"source_line": 2, "attributes": {"client_id": "c1", "page": "a\nb"}},
            "web:h2": {"source_line": 4},
        },
    ),
    Case(
        "spreadsheet_crlf_rows_lf_in_cells",
        {
            W: (
                HEADER
                + 'h1,2026-01-15 10:00:00,desktop,pageview,,,c1,,"a\nb"\n'
                + row("h2")
                + 'h3,2026-01-15 10:00:00,desktop,pageview,,,c1,,"x\n\n  \nz"\n'
                + "\n"
                + "h4,2026-01-15 10:00:00,desktop\n"
                + row("h5", when="bad")
            )
            .replace("\n", "\r\n")
            # the cells' own line breaks stay LF, as a spreadsheet writes them
            .replace("a\r\nb", "a\nb")
            .replace("x\r\n\r\n  \r\nz", "x\n\n  \nz")
        },
        3,
        2,
        blank=1,
        reasons=[
            (W, 10, "row", "action", "missing columns"),
            (W, 11, "occurred_at", "hit_time", TS + "'bad'"),
        ],
        lake={
            "web:h1": {"source_line": 2, "attributes": {"client_id": "c1", "page": "a\nb"}},
            "web:h2": {"source_line": 4},
            "web:h3": {"source_line": 5, "attributes": {"client_id": "c1", "page": "x\n\n  \nz"}},
        },
    ),
    Case(
        "mixed_line_endings",
        {
            W: HEADER
            + row("h1").replace("\n", "\r\n")
            + row("h2")
            + row("h3").replace("\n", "\r")
            + row("h4", when="bad")
        },
        3,
        1,
        reasons=[(W, 5, "occurred_at", "hit_time", TS + "'bad'")],
        lake={"web:h1": {"source_line": 2}, "web:h2": {"source_line": 3}, "web:h3": {"source_line": 4}},
    ),
    Case(
        "jsonl_empty_key",
        {E: '{"": "v", "id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n'},
        1,
        0,
        lake={"email:e1": {"attributes": {"column0": "v"}}},
    ),
    Case(
        "jsonl_key_differing_in_case_from_mapped_key",
        {
            E: '{"ID": "x", "id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n'
            '{"Id": "e2", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n'
        },
        1,
        1,
        reasons=[(E, 2, "event_id", "id", "expected a value in column 'id', got an empty value")],
        lake={"email:e1": {"attributes": {"ID_0": "x"}}},
    ),
    Case(
        "jsonl_latin1_byte_in_one_line",
        {
            E: b'{"id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n'
            b'{"id": "e2", "ts": "2026-01-10T10:00:00Z", "event": "open", "page": "caf\xe9"}\n'
            b'{"id": "e3", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n'
        },
        2,
        1,
        reasons=[(E, 2, "row", None, "invalid encoding")],
    ),
    Case(
        "jsonl_line_over_2mb",
        {
            E: '{"id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n'
            '{"id": "e2", "ts": "2026-01-10T10:00:00Z", "event": "open", "big": "' + "x" * 2_100_000 + '"}\n'
            '{"id": "e3", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n'
        },
        2,
        1,
        reasons=[(E, 2, "row", None, "line size")],
    ),
    Case(
        "parquet_corrupt_data_page",
        {P: corrupt_parquet(), W: HEADER + row()},
        1,
        0,
        refused=(P, r"cannot be read as parquet: .*(decompression|corrupt)"),
        sources_refused=["pos"],
    ),
    Case(
        "parquet_timestamp_ns_utc",
        {
            P: parquet(
                receipt_id=["r1", "r2"],
                sold_at=pa.array([1767225600123456789, 1767225601000000999], pa.timestamp("ns", tz="UTC")),
                amount=[1.0, 2.0],
                card=["L1", None],
            )
        },
        2,
        0,
        lake={
            # nanoseconds are cut to the lake's microseconds, never rounded up
            "pos:r1": {"occurred_at": datetime(2026, 1, 1, 0, 0, 0, 123456)},
            "pos:r2": {"occurred_at": datetime(2026, 1, 1, 0, 0, 1)},
        },
    ),
    Case("csv_of_a_single_newline", {W: "\n", "web/b.csv": "\r\n"}),
    Case(
        "attribute_key_with_double_quote",
        {
            W: HEADER.replace("\n", ',"a""b"\n') + row(rest='desktop,pageview,,,c1,,/home,"v"""'),
            E: '{"id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open", "a\\"b": "w", "c/d~e": 1}\n',
        },
        2,
        0,
        lake={
            "web:h1": {"attributes": {"client_id": "c1", "page": "/home", 'a"b': 'v"'}},
            "email:e1": {"attributes": {'a"b': "w", "c/d~e": 1}},
        },
    ),
    Case(
        "csv_exactly_max_columns",
        {W: wide_csv(MAX_COLUMNS, 2)},
        2,
        0,
    ),
    Case(
        "csv_wider_than_max_columns",
        {W: wide_csv(10_000, 3), "web/b.csv": HEADER + row("h9")},
        1,
        0,
        refused=(W, f"it has 10000 columns, more than the {MAX_COLUMNS} ingest reads"),
    ),
]


def make_settings(root: Path) -> Settings:
    return Settings(data_root=root, pii_salt="s", sources=SOURCES, memory_limit="512MB", threads=2)


def land(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = root / "landing" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)


def lake_rows(glob: str, order: str) -> list[dict]:
    with duckdb.connect() as con:
        rel = con.sql(f"select * from read_parquet($g) order by {order}", params={"g": glob})
        return rel.to_arrow_table().to_pylist()


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    land(tmp_path, case.files)
    settings = make_settings(tmp_path)
    with caplog.at_level(logging.WARNING, logger="journeys.ingest"):
        report = ingest_sources(settings, as_of=AS_OF, batch_id="b1")
    assert report.accounting_ok()
    assert report.read == report.loaded + report.quarantined + report.duplicates + report.held
    assert (report.loaded, report.quarantined, report.duplicates, report.held) == (
        case.loaded,
        case.quarantined,
        case.duplicates,
        case.held,
    )
    assert report.blank == case.blank
    if case.loaded:
        assert len(lake_rows(events_glob(settings), "event_id")) == case.loaded
    quarantined = lake_rows(quarantine_glob(settings), "source_file, line") if case.quarantined else []
    assert len(quarantined) == case.quarantined
    got = [(q["source_file"], q["line"], q["field"], q["column"], q["reason"]) for q in quarantined]
    assert len(got) == len(case.reasons)
    for (file, line, fld, col, reason), want in zip(got, case.reasons, strict=True):
        assert (file, line, fld, col) == want[:4], (file, line, fld, col, reason)
        assert re.search(want[4], reason), reason
    assert all(q["raw"] is not None and q["batch_id"] == "b1" for q in quarantined)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if case.warning:
        assert any(re.search(case.warning, w) for w in warnings), warnings
    lake = {e["event_id"]: e for e in lake_rows(events_glob(settings), "event_id")} if case.lake else {}
    for event_id, want in case.lake.items():
        got_row = {k: json.loads(v) if k == "attributes" else v for k, v in lake[event_id].items() if k in want}
        assert got_row == want, (event_id, got_row)
    refused = {f.file: f.refused for f in report.files if f.refused}
    if case.refused:
        file, why = case.refused
        assert list(refused) == [file] and re.search(why, refused[file]), refused
        assert any(file in w and "refused" in w for w in warnings), warnings
        assert report.sources_refused() == case.sources_refused
        # Not recorded as ingested: the next run refuses it again, and still loads nothing twice.
        again = ingest_sources(settings, as_of=AS_OF, batch_id="b2")
        assert [f.file for f in again.files if f.refused] == [file]
        assert (again.read, again.loaded) == (0, 0)
    else:
        assert not refused, refused


def test_corpus_has_at_least_30_kinds() -> None:
    assert len({c.kind for c in CASES}) == len(CASES) >= 30
