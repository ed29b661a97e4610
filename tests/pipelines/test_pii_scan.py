"""No raw e-mail or phone anywhere: plant them wherever a row can carry them, run, and scan every output."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from pipelines import cli

# Three CLI runs on the session's Prefect server: `make test-fast` leaves it to `make test`.
pytestmark = pytest.mark.slow

MAILS = {
    "mapped": "ana.lopez@example.com",
    "unmapped": "Jöhn.Dœ+tag@exämple.de",
    "quoted": '"john doe"@example.org',
    "idn": "用户@例子.广告",
    "header": "hedda.header@example.net",
    "time": "tim.stamp@example.com",
    "nested": "nest.ed@example.org",
    "broken": "bro.ken@example.com",
    "headerless": "head.less@example.com",
    "key": "kay.case@example.com",
}
PHONES = {
    "mapped": "+1 (415) 555-0100 ext. 12",
    "note": "415.555.0199 x7",
    "quarantined": "+44 20 7946 0958",
    "nested": "+49\u00b730\u00b71234\u00b75678",
    "reject": "(212) 555-0147",
    "revenue": "+33 1 23 45 67 89",
    "headerless": "+1 646 555 0111",
}
FRAGMENTS = [
    "ana.lopez",
    "jöhn.dœ",
    "john doe",
    "用户",
    "hedda.header",
    "tim.stamp",
    "nest.ed",
    "bro.ken",
    "head.less",
    "kay.case",
]
FRAGMENTS += ["555-0100", "555.0199", "7946 0958", "1234\u00b75678", "555-0147", "45 67 89", "646 555"]

CONFIG = """
data_root: data
pii_salt: e2e-salt
quality: {max_quarantine_share: 0.95}
sources:
  - name: web
    path: web/*.csv
    format: csv
    event_id: hit_id
    occurred_at: hit_time
    channel: {value: web}
    event_type: {column: action, map: {view: page_view, buy: purchase}}
    identifiers: {email: email, phone: phone, client_id: cookie_id}
    revenue: order_value
  - name: crm
    path: crm/*.jsonl
    format: jsonl
    event_id: id
    occurred_at: ts
    channel: {value: email}
    event_type: {value: email_open}
    identifiers: {mail: email}
"""
HEADER = "hit_id,hit_time,action,email,phone,client_id,order_value,E-Mail,note\n"


def q(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def project(tmp_path: Path) -> Path:
    (tmp_path / "journeys.yaml").write_text(CONFIG, encoding="utf-8")
    web = tmp_path / "data" / "landing" / "web"
    crm = tmp_path / "data" / "landing" / "crm"
    web.mkdir(parents=True)
    crm.mkdir(parents=True)
    m, p = MAILS, PHONES
    (web / "a.csv").write_text(
        HEADER
        # mapped identifiers, an unmapped `E-Mail` column, a phone in free text
        + f"h1,2026-01-10 10:00:00,view,{m['mapped']},{q(p['mapped'])},c1,,{m['unmapped']},{q('call ' + p['note'])}\n"
        + f"h2,2026-01-11 10:00:00,buy,{m['mapped']},,c1,19.99,{q(m['idn'])},{q('or ' + m['quoted'])}\n"
        # a parsed row quarantined for its time, with PII in every column
        + f"h3,2026-13-45 10:00:00,view,{m['mapped']},{q(p['quarantined'])},c2,,{m['unmapped']},{q(m['quoted'])}\n"
        # a row the reader cannot split
        + f"h4,2026-01-12 10:00:00,view,{m['idn']},{q(p['reject'])},c3,,x,y,{m['quoted']},z\n"
        # an e-mail where a time belongs, a phone where revenue belongs
        + f"h5,{m['time']},view,,,c4,,,\n"
        + f"h6,2026-01-12 11:00:00,buy,,,c4,{q(p['revenue'])},,\n",
        encoding="utf-8",
    )
    # A later file with a column named by an e-mail: schema drift, and an attribute key.
    (web / "b.csv").write_text(
        HEADER.replace("\n", f",{m['header']}\n") + "h7,2026-01-13 10:00:00,view,,,c1,,,,v\n", encoding="utf-8"
    )
    nested = {"profile": {"email": m["nested"], "phones": [p["nested"]]}}
    (crm / "a.jsonl").write_text(
        json.dumps({"id": "e1", "ts": "2026-01-12T10:00:00Z", "mail": m["mapped"], "Email": m["key"], "nested": nested})
        + "\n"
        # a broken JSON line
        + '{"id": "e2", "ts": "2026-01-12T11:00:00Z", "mail": "'
        + m["broken"]
        + '" \n',
        encoding="utf-8",
    )
    return tmp_path / "journeys.yaml"


def needles() -> list[str]:
    out = []
    for v in [*MAILS.values(), *PHONES.values(), *FRAGMENTS]:
        out += [v.lower(), json.dumps(v)[1:-1].lower()]
    return list(dict.fromkeys(out))


def leaks(where: str, text: str) -> list[str]:
    low = text.lower()
    return [f"{where}: {n!r}" for n in needles() if n in low]


def outputs(root: Path) -> Iterator[tuple[str, str]]:
    """(path, text) of every file the pipeline wrote under the data root: Parquet and DuckDB read as rows."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("landing/"):
            continue
        if path.suffix == ".parquet":
            with duckdb.connect() as con:
                rows = con.sql("select * from read_parquet($p)", params={"p": str(path)}).fetchall()
            yield rel, str(rows)
        elif path.suffix == ".duckdb":
            with duckdb.connect(str(path), read_only=True) as con:
                tables = con.sql("select schema_name, table_name from duckdb_tables()").fetchall()
                for schema, table in tables:
                    rows = con.sql(f'select * from "{schema}"."{table}"').fetchall()
                    yield f"{rel}:{schema}.{table}", str(rows)
        elif path.suffix != ".wal":
            yield rel, path.read_bytes().decode("utf-8", "replace")


def test_no_raw_email_or_phone_reaches_any_output_log_or_prefect(tmp_path, capfd, caplog, harness):
    caplog.set_level(logging.INFO)
    config = str(project(tmp_path))
    root = tmp_path / "data"
    as_of = "2026-02-01T00:00:00"

    # A headerless file: its first row is read as the header, so the file is refused (the run goes on with the
    # others), and the refusal (console, log, Prefect's database) names no value of it.
    headerless = root / "landing" / "web" / "0-headerless.csv"
    headerless.write_text(f"h0,2026-01-09 10:00:00,view,{MAILS['headerless']},{q(PHONES['headerless'])},c9,,,\n")
    assert cli.main(["run", "--config", config, "--as-of", as_of]) == 0
    first = capfd.readouterr()
    assert "refused landing file web/0-headerless.csv: column 'hit_id' not found" in first.out
    headerless.unlink()

    assert cli.main(["run", "--config", config, "--as-of", as_of]) == 0
    assert cli.main(["report", "--config", config]) == 0
    second = capfd.readouterr()

    found = leaks("stdout/stderr", first.out + first.err + second.out + second.err)
    found += leaks("log records", caplog.text)
    scanned = list(outputs(root))
    for where, text in scanned:
        found += leaks(where, text)
    # Prefect's database holds both runs' logs, states (the failed run's error) and artifacts.
    assert harness.database is not None and harness.database.is_file(), harness
    found += leaks("prefect database", harness.database.read_bytes().decode("utf-8", "replace"))
    assert not found, "\n".join(found)

    # The scan looked where the planted rows went: lake, quarantine, marts, warehouse, reports.
    where = " ".join(w for w, _ in scanned)
    for part in ("lake/events/", "lake/quarantine/", "marts/", "warehouse/journeys.duckdb:", "reports/"):
        assert part in where, part
    quarantined = next(t for w, t in scanned if w.startswith("lake/quarantine/source=web"))
    assert "<redacted-email>" in quarantined and "9999-99-99" in quarantined
    events = " ".join(t for w, t in scanned if w.startswith("lake/events/"))
    assert "<redacted-email>" in events and "<redacted-phone>" in events and "sha256:" in events
