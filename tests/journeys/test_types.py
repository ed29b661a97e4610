"""Types every reader takes: the published marts and warehouse read alike in pyarrow, pandas, polars and DuckDB 1.1.

Counts are BIGINT / INT64, timestamps TIMESTAMP WITH TIME ZONE in UTC, money DECIMAL(18,2), no HUGEINT, and a
list column has a text twin; the warehouse's lake views survive a moved data root and the lake folder reads
with pyarrow's and pandas' hive partitioning.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from journeys import db, publish

# Columns that count rows of data (README: journeys_<state>, n_<thing>, <things>_in_cell); n_stages and
# n_conditions are sizes of a stage model from its YAML, INTEGER like stage_index.
COUNT = re.compile(r"^(journeys_.*|n_(?!stages$|conditions$).*|.*_in_cell)$")
MONEY = re.compile(r"^(revenue|avg_customer_value|cost_to_serve|monetised_value)$")
"""Money amounts (cost_per_contact is a rate per contact and keeps four decimals)."""

READER = Path(__file__).with_name("duckdb_reader.py")
# `make test` installs DuckDB 1.1 beside the venv (Makefile); TEST_JOURNEYS_DUCKDB_1_1 points elsewhere.
DUCKDB_1_1 = Path(os.environ.get("TEST_JOURNEYS_DUCKDB_1_1", Path(sys.prefix) / "duckdb-1.1"))


@pytest.fixture(scope="module")
def catalog_types(published):
    """(table, column) -> DuckDB type of every kept table and view of the published warehouse, and the marts."""
    settings, catalog = published.settings, published.context.catalog
    with db.connect(settings.warehouse_path, read_only=True) as con:
        rows = db.fetch(
            con,
            "select table_name, column_name, data_type from duckdb_columns()"
            " where schema_name = 'main' and not internal",
        )
        marts = publish.publish_marts(con, settings, catalog.published(), published.context.batch_id)
    kept = {m.name for m in catalog.kept()}
    return {(t, c): ty for t, c, ty in rows if t in kept}, marts


def test_warehouse_counts_bigint_times_utc_money_decimal_and_lists_with_text(catalog_types):
    warehouse, _ = catalog_types
    assert not [k for k, ty in warehouse.items() if ty in ("HUGEINT", "UHUGEINT")]
    counts = {k: ty for k, ty in warehouse.items() if COUNT.match(k[1])}
    assert len(counts) > 20 and set(counts.values()) == {"BIGINT"}, counts
    times = {k: ty for k, ty in warehouse.items() if ty.startswith("TIMESTAMP")}
    # every published table and the lake views: journeys.started_at, events.occurred_at, runs.as_of, ...
    assert len(times) > 15 and set(times.values()) == {"TIMESTAMP WITH TIME ZONE"}, times
    money = {k: ty for k, ty in warehouse.items() if MONEY.match(k[1])}
    assert len(money) >= 6 and set(money.values()) == {"DECIMAL(18,2)"}, money
    assert warehouse[("stage_channel_matrix", "cost_per_contact")] == "DECIMAL(18,4)"
    assert warehouse[("events", "attributes")] == "VARCHAR"  # DuckDB 1.x clients have no JSON type without it
    lists = {k for k, ty in warehouse.items() if ty.endswith("[]") and k[0] != "runs"}
    assert {("journeys", "stage_path"), ("journey_stages", "stages_over_budget"), ("events", "identifiers")} <= lists
    # runs keeps its bookkeeping lists (batch ids, warnings) as they are: README, "Types every tool reads".
    assert {k: warehouse.get((k[0], f"{k[1]}_text")) for k in lists} == dict.fromkeys(lists, "VARCHAR")


def _mart_columns(warehouse: dict, table: str) -> dict[str, str]:
    return {c: ty for (t, c), ty in warehouse.items() if t == table}


def test_every_mart_reads_alike_in_pyarrow_pandas_and_polars(catalog_types):
    warehouse, marts = catalog_types
    arrow_of = {
        "BIGINT": pa.int64(),
        "INTEGER": pa.int32(),
        "DOUBLE": pa.float64(),
        "VARCHAR": pa.string(),
        "BOOLEAN": pa.bool_(),
        "DATE": pa.date32(),
        "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="UTC"),
        "DECIMAL(18,2)": pa.decimal128(18, 2),
        "DECIMAL(18,4)": pa.decimal128(18, 4),
        "VARCHAR[]": pa.list_(pa.string()),
        "INTEGER[]": pa.list_(pa.int32()),
    }
    wrong, seen = [], set()
    for table, path in marts.items():
        want = _mart_columns(warehouse, table)
        arrow = pq.read_table(path)
        frame = pd.read_parquet(path, dtype_backend="numpy_nullable")
        polars = pl.read_parquet(path)
        assert arrow.column_names == list(want) == list(frame.columns) == polars.columns, table
        for field in arrow.schema:
            ty = want[field.name]
            seen.add(ty)
            if arrow_of.get(ty) != field.type:
                wrong.append(f"pyarrow {table}.{field.name}: {field.type} for {ty}")
            dtype, ptype = frame[field.name].dtype, polars.schema[field.name]
            if ty == "TIMESTAMP WITH TIME ZONE":
                ok = str(getattr(dtype, "tz", None)) == "UTC" and ptype == pl.Datetime("us", "UTC")
            elif ty in ("BIGINT", "INTEGER"):
                ok = pd.api.types.is_integer_dtype(dtype) and ptype.is_integer()
            elif ty.startswith("DECIMAL"):
                values = frame[field.name].dropna()
                scale = int(ty.split(",")[1].rstrip(")"))
                ok = ptype == pl.Decimal(18, scale) and all(isinstance(v, Decimal) for v in values)
            else:
                ok = True
            if not ok:
                wrong.append(f"pandas/polars {table}.{field.name}: {dtype} / {ptype} for {ty}")
    assert not wrong, wrong
    assert {"BIGINT", "TIMESTAMP WITH TIME ZONE", "DECIMAL(18,2)", "VARCHAR[]"} <= seen
    # The instant is unchanged: a naive UTC time became the same time marked UTC.
    journeys = pl.read_parquet(marts["journeys"])
    assert journeys["started_at"].min() <= journeys["ended_at"].max()
    assert journeys.filter(pl.col("stage_path").list.len() > 1)["stage_path_text"].str.contains(" > ").all()


def _duckdb_1_1(*args: str, cwd: Path) -> dict:
    if not (DUCKDB_1_1 / "duckdb").is_dir():
        pytest.skip(f"DuckDB 1.1 is not installed at {DUCKDB_1_1} (`make test` installs it; see the Makefile)")
    env = {**os.environ, "PYTHONPATH": str(DUCKDB_1_1)}
    done = subprocess.run(
        [sys.executable, str(READER), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["version"].startswith("1.1."), out["version"]
    return out


def test_duckdb_1_1_reads_every_mart_and_the_warehouse_with_the_same_types(catalog_types, published, tmp_path):
    warehouse, marts = catalog_types
    out = _duckdb_1_1(str(published.settings.warehouse_path), *marts.values(), cwd=tmp_path)
    for table, path in marts.items():
        assert out["parquet"][path] == _mart_columns(warehouse, table), table
    kept = {t for t, _ in warehouse}
    assert {t: out["warehouse"][t] for t in kept} == {t: _mart_columns(warehouse, t) for t in kept}
    with db.connect(published.settings.warehouse_path, read_only=True) as con:
        for view in ("events", "quarantine", "links"):
            assert out["rows"][view] == db.fetch(con, f"select count(*) from {db.quote_ident(view)}")[0][0], view
    assert out["rows"]["events"] > 1000 and out["rows"]["quarantine"] > 0


def test_lake_views_follow_a_moved_data_root(published, tmp_path):
    root = published.settings.root
    moved = tmp_path / "elsewhere"
    for part in ("lake", "warehouse"):
        shutil.copytree(root / part, moved / part)
    with db.connect(root / "warehouse" / "journeys.duckdb", read_only=True) as con:
        want = {v: db.fetch(con, f"select count(*) from {db.quote_ident(v)}")[0][0] for v in ("events", "quarantine")}
    with db.connect(moved / "warehouse" / "journeys.duckdb", read_only=True) as con:
        sql = " ".join(r[0] for r in db.fetch(con, "select sql from duckdb_views() where not internal"))
        got = {v: db.fetch(con, f"select count(*) from {db.quote_ident(v)}")[0][0] for v in ("events", "quarantine")}
    assert str(root) not in sql and "'../lake/events/" in sql
    assert got == want
    out = _duckdb_1_1(str(moved / "warehouse" / "journeys.duckdb"), cwd=tmp_path)
    assert {v: out["rows"][v] for v in want} == want


def test_lake_folders_read_with_pyarrow_and_pandas_hive_partitioning(published):
    settings = published.settings
    with db.connect(settings.warehouse_path, read_only=True) as con:
        want = {v: db.fetch(con, f"select count(*) from {db.quote_ident(v)}")[0][0] for v in ("events", "quarantine")}
    events = ds.dataset(settings.events_dir, partitioning="hive").to_table()
    assert events.num_rows == want["events"]
    assert events.schema.names.count("event_date") == 1
    assert pd.read_parquet(settings.events_dir)["event_date"].notna().all()
    quarantine = pd.read_parquet(settings.quarantine_dir)
    assert len(quarantine) == want["quarantine"] and quarantine["source"].notna().all()


def test_a_tz_aware_parameter_binds_as_utc_whatever_the_machines_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        with db.connect() as con:
            assert db.fetch(con, "select current_setting('TimeZone')") == [("UTC",)]
            at = datetime(2026, 11, 1, 9, 30, tzinfo=timezone(timedelta(hours=9)))
            rows = db.fetch(
                con,
                "select timezone('UTC', timestamp '2026-11-01 00:30:00') = $at, strftime($at, '%H:%M')",
                {"at": at},
            )
    finally:
        monkeypatch.undo()
        time.tzset()
    assert rows == [(True, "00:30")]
    assert at.astimezone(UTC).hour == 0
