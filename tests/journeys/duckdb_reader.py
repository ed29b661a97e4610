"""Read Parquet files and a warehouse with whatever `duckdb` is importable; print the types as JSON.

Run by tests/journeys/test_types.py with an older DuckDB (1.1) first on PYTHONPATH: a BI tool's bundled DuckDB
must read what a run publishes. Arguments: the warehouse file, then Parquet files.
"""

from __future__ import annotations

import json
import os
import sys

import duckdb


def _quote(name: str) -> str:
    """Quote an identifier (this script runs without the journeys package, under another DuckDB)."""
    return '"' + name.replace('"', '""') + '"'


def main(warehouse: str, *parquet: str) -> None:
    """Print {"version", "parquet": {path: {column: type}}, "warehouse": {table: {column: type}}, "rows": {...}}."""
    out: dict = {"version": duckdb.__version__, "parquet": {}, "warehouse": {}, "rows": {}}
    with duckdb.connect() as con:
        for path in parquet:
            rows = con.execute("select column_name, column_type from (describe select * from read_parquet(?))", [path])
            out["parquet"][path] = dict(rows.fetchall())
            out["rows"][path] = con.execute("select count(*) from read_parquet(?)", [path]).fetchone()[0]
    with duckdb.connect(warehouse, read_only=True) as con:
        # What README tells an analyst to do: the lake views are relative to the warehouse's folder.
        con.execute("set file_search_path = ?", [os.path.abspath(os.path.dirname(warehouse))])
        types = con.execute(
            "select table_name, column_name, data_type from duckdb_columns()"
            " where schema_name = 'main' and not internal order by table_name, column_index"
        ).fetchall()
        for table, column, data_type in types:
            out["warehouse"].setdefault(table, {})[column] = data_type
        for (table,) in con.execute(
            "select distinct table_name from duckdb_columns() where schema_name = 'main' and not internal order by 1"
        ).fetchall():
            # Every table and view must read, not only bind: a view over the lake opens its files here.
            out["rows"][table] = con.execute(f"select count(*) from {_quote(table)}").fetchone()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
