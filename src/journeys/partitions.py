"""Build the customer-partitioned models in separate processes, one group of customer buckets each.

Used by the flow's `executor: dask` (pipelines/nightly.py submits `build_group` to Dask workers). The main
process builds identity and the config tables as usual, then `export_inputs` writes every table the
partitioned models read as Parquet under the run's working area; each group opens its own DuckDB file,
loads those inputs restricted to its buckets' customers, builds the partitioned models with the same SQL and
writes their tables as Parquet; `load_outputs` puts them back in the working file, where the aggregate marts
are built from them as in a single-process run. Only paths and table names travel between processes, and
the processes share nothing but the data root's filesystem.

Why restricting the inputs is exact: a `partition: customer` model's rows for a customer depend only on that
customer's events, its `customers` row and the configuration (the rule incremental runs rely on too), and the
root model `int_journey_events` joins every event to its `customers` row.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from journeys import db, models

CUSTOMERS = "customers"
"""The identity table whose `bucket` column assigns customers to buckets."""

KILL_HOOK = "TEST_JOURNEYS_KILL_GROUP"
"""Test-only: a group index; the process building that group kills itself (a worker lost mid-run)."""

# Parquet has no 128-bit integer (DuckDB would write a lossy DOUBLE): such columns travel as text.
_TEXT_TYPES = frozenset({"HUGEINT", "UHUGEINT"})


@dataclass(frozen=True)
class Layout:
    """What the partitioned part of the catalog reads and makes."""

    nodes: tuple[str, ...]
    inputs: tuple[str, ...]  # tables made outside the partition, copied to every group
    view_nodes: tuple[str, ...]  # nodes whose views (over the lake's paths) each group recreates
    outputs: tuple[str, ...]  # tables the partitioned nodes leave behind


def layout(catalog: models.Catalog) -> Layout:
    """Split the catalog at the customer partition: its nodes, the tables it reads, the tables it makes."""
    nodes = catalog.partitioned()
    reads = sorted({t for n in nodes for t in catalog.node_reads(n)} - set(_tables(catalog, nodes, "temp")))
    outside = [t for t in reads if catalog.producer(t) not in nodes]
    views = sorted({catalog.producer(t) for t in outside if catalog.models[t].materialized == "view"})
    later = catalog.downstream(nodes) - set(nodes)
    feeding = sorted(catalog.producer(t) for t in outside if catalog.producer(t) in later)
    if feeding:
        raise models.CatalogError(f"customer-partitioned models read {feeding}, built from their own outputs")
    return Layout(
        nodes=tuple(nodes),
        inputs=tuple(t for t in outside if catalog.models[t].materialized != "view"),
        view_nodes=tuple(views),
        outputs=tuple(_tables(catalog, nodes, "table")),
    )


def _tables(catalog: models.Catalog, nodes: list[str], kind: str) -> list[str]:
    return sorted(
        m.name for m in catalog.models.values() if (m.name in nodes or m.procedure in nodes) and m.materialized == kind
    )


def bucket_groups(buckets: int, workers: int | None) -> list[list[int]]:
    """Buckets dealt round-robin into min(buckets, 4 x workers) groups: a few tasks per worker balance sizes.

    `workers` None (a cluster whose size is not known): one group per bucket.
    """
    n = buckets if workers is None else max(1, min(buckets, 4 * workers))
    return [list(range(i, buckets, n)) for i in range(n)]


def area_path(working: Path) -> Path:
    """The run's folder for the groups' files, beside its working file (removed with it as a stale run file)."""
    return working.with_name(working.name + ".dask")


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return [
        (r[0], r[1])
        for r in db.fetch(
            con,
            "select column_name, data_type from duckdb_columns() where table_name = $t and schema_name = 'main'"
            " order by column_index",
            {"t": table},
        )
    ]


def _write(con: duckdb.DuckDBPyConnection, table: str, path: Path) -> dict[str, Any]:
    """Copy a table to one Parquet file; return its path and the column types to restore on reading."""
    columns = _columns(con, table)
    select = ", ".join(
        f"cast({db.quote_ident(c)} as varchar) as {db.quote_ident(c)}" if t in _TEXT_TYPES else db.quote_ident(c)
        for c, t in columns
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    db.execute(
        con,
        f"copy (select {select} from {db.quote_ident(table)}) to {db.quote_literal(str(path))} (format parquet)",
    )
    return {"path": str(path), "columns": columns}


def _read(files: list[str], columns: list[tuple[str, str]]) -> str:
    """SELECT over Parquet files written by `_write`, with every column back in its original type."""
    cols = ", ".join(f"cast({db.quote_ident(c)} as {t}) as {db.quote_ident(c)}" for c, t in columns)
    paths = ", ".join(db.quote_literal(f) for f in files)
    return f"select {cols} from read_parquet([{paths}])"


def export_inputs(con: duckdb.DuckDBPyConnection, catalog: models.Catalog, area: Path) -> dict[str, Any]:
    """Write the tables the partitioned models read (identity's, the config tables) as Parquet for the groups."""
    return {t: _write(con, t, area / "inputs" / f"{t}.parquet") for t in layout(catalog).inputs}


def build_group(context: Any, area: str, inputs: Mapping[str, Any], group: int, buckets: list[int]) -> dict[str, Any]:
    """Build the partitioned models for `buckets` in a DuckDB file of their own; return their Parquet tables."""
    if os.environ.get(KILL_HOOK) == str(group):
        os.kill(os.getpid(), signal.SIGKILL)
    settings = context.settings
    shape = layout(context.catalog)
    folder = Path(area)
    path = folder / f"group-{group}.duckdb"
    for stale in (path, path.with_name(path.name + ".wal")):
        # A retried group (its first worker died) starts from nothing.
        stale.unlink(missing_ok=True)
    con = db.connect(
        path, memory_limit=settings.memory_limit, threads=settings.threads, temp_directory=settings.tmp_dir
    )
    try:
        models.build(con, context.catalog, context, list(shape.view_nodes))
        # customers first: the other inputs keep the rows of its restricted customers.
        for table, spec in sorted(inputs.items(), key=lambda item: item[0] != CUSTOMERS):
            names = [c for c, _ in spec["columns"]]
            body = _read([spec["path"]], spec["columns"])
            if table == CUSTOMERS:
                body = f"select * from ({body}) where list_contains($buckets::integer[], bucket)"
            elif "customer_key" in names:
                body = f"select * from ({body}) where customer_key in (select cu.customer_key from {CUSTOMERS} as cu)"
            db.execute(con, f"create table {db.quote_ident(table)} as {body}", {"buckets": buckets})
        counts = models.build(con, context.catalog, context, list(shape.nodes))
        written = {t: _write(con, t, folder / "outputs" / t / f"group-{group}.parquet") for t in shape.outputs}
    finally:
        con.close()
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)
    return {"group": group, "buckets": buckets, "tables": written, "counts": counts}


def load_outputs(con: duckdb.DuckDBPyConnection, results: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Create each partitioned table in the working file from every group's Parquet; return row counts."""
    tables = sorted({t for r in results for t in r["tables"]})
    out: dict[str, int] = {}
    for table in tables:
        parts = sorted((r["group"], r["tables"][table]) for r in results)
        files = [spec["path"] for _, spec in parts]
        db.execute(con, f"create or replace table {db.quote_ident(table)} as {_read(files, parts[0][1]['columns'])}")
        out[table] = db.fetch(con, f"select count(*) from {db.quote_ident(table)}")[0][0]
    return out


def remove_area(working: Path) -> None:
    """Delete the groups' files of a run (after they were loaded, or when the run will not publish)."""
    shutil.rmtree(area_path(working), ignore_errors=True)
