import struct
import time

import pytest

from journeys import db


def test_quote_ident_escapes_quotes_and_rejects_empty():
    assert db.quote_ident('we"ird') == '"we""ird"'
    with pytest.raises(ValueError, match=r"^not a valid identifier: ''$"):
        db.quote_ident("")


def test_quote_literal_escapes_single_quotes():
    assert db.quote_literal("it's") == "'it''s'"


def test_named_params_are_bound_and_unused_ones_ignored():
    con = db.connect()
    rows = db.fetch(con, "select $a::integer + 1 as x", {"a": 41, "unused": "drop table x"})
    assert rows == [(42,)]


def test_warehouse_file_is_readable_by_duckdb_1x(tmp_path):
    # DuckDB 1.x reads storage version 64; 2.0's own format would lock BI tools out.
    path = tmp_path / "w.duckdb"
    con = db.connect(path)
    db.execute(con, "create table t as select 1 as x")
    con.close()
    header = path.read_bytes()[8:20]
    assert header[:4] == b"DUCK"
    assert struct.unpack("<Q", header[4:12])[0] == 64


@pytest.fixture
def berlin_machine(monkeypatch):
    """The process's local zone is Berlin for one test, and back afterwards."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_sessions_are_utc_whatever_the_machine_zone(berlin_machine):
    con = db.connect()
    from datetime import UTC, datetime

    at = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    # DuckDB alone would give 14:00 (+02) here: the machine's zone must not shift a UTC instant.
    assert db.fetch(con, "select $at::timestamp, cast($at as varchar)", {"at": at}) == [
        (datetime(2026, 7, 1, 12, 0), "2026-07-01 12:00:00")
    ]


def test_table_exists_tells_persistent_from_temporary_tables():
    with db.connect() as con:
        db.execute(con, "create table kept as select 1 as x")
        db.execute(con, "create temp table scratch as select 1 as x")
        assert db.table_exists(con, "kept") and not db.table_exists(con, "kept", temporary=True)
        assert db.table_exists(con, "scratch", temporary=True) and not db.table_exists(con, "scratch")
        assert not db.table_exists(con, "absent") and not db.table_exists(con, "absent", temporary=True)


def test_table_exists_looks_in_the_current_or_the_named_attached_database(tmp_path):
    with db.connect(tmp_path / "other.duckdb") as other:
        db.execute(other, "create table only_there as select 1 as x")
    with db.connect() as con:
        db.execute(con, "attach $p as other (read_only)", {"p": str(tmp_path / "other.duckdb")})
        assert not db.table_exists(con, "only_there")
        assert db.table_exists(con, "only_there", database="other")
        db.execute(con, "create table kept as select 1 as x")
        assert not db.table_exists(con, "kept", database="other")
