"""DuckDB connections and the only ways SQL is run: bound parameters and quoted identifiers.

SQL models are read and built by `journeys.models`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb


def quote_ident(name: str) -> str:
    """Quote one SQL identifier; the single place identifiers enter SQL text."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"not a valid identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote a string literal for DDL that cannot take parameters (a view's file path, a comment); nowhere else."""
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError(f"not a valid literal: {value!r}")
    return "'" + value.replace("'", "''") + "'"


def quote_qualified(name: str) -> str:
    """Quote a dotted name (`schema.table`) part by part."""
    return ".".join(quote_ident(p) for p in name.split("."))


def connect(
    path: str | Path | None = None,
    *,
    memory_limit: str = "4GB",
    threads: int = 2,
    temp_directory: str | Path | None = None,
    read_only: bool = False,
    search_path: list[str | Path] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open DuckDB with bounded memory, a spill directory, UTC as its time zone and the file's folder to find files."""
    config: dict[str, Any] = {
        "memory_limit": memory_limit,
        "threads": threads,
        "preserve_insertion_order": False,
    }
    if temp_directory is not None:
        Path(temp_directory).mkdir(parents=True, exist_ok=True)
        config["temp_directory"] = str(temp_directory)
    if path is not None and not read_only:
        # BI tools still bundle DuckDB 1.x, which cannot open a file in 2.0's storage format.
        config["storage_compatibility_version"] = "v1.0.0"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path) if path is not None else ":memory:", read_only=read_only, config=config)
    # The folder of the path as given, not of the file a link leads to: the published warehouse is a link
    # (warehouse/journeys.duckdb -> the current set's file) and its lake views are relative to warehouse/.
    folders = [*(search_path or []), *([Path(os.path.abspath(path)).parent] if path is not None else [])]
    try:
        # Every time is UTC: a naive value becomes TIMESTAMP WITH TIME ZONE as UTC whatever the machine's zone
        # (a connect option would not autoload ICU, which the setting needs).
        con.execute("set TimeZone = 'UTC'")
        if folders:
            set_file_search_path(con, folders)
    except BaseException:
        con.close()
        raise
    return con


def set_file_search_path(con: duckdb.DuckDBPyConnection, folders: list[str | Path]) -> None:
    """Resolve relative file paths against `folders`, then the working directory (the warehouse's lake views)."""
    # The warehouse's views name the lake relative to the warehouse's folder, so a moved data root still reads;
    # DuckDB stops looking in the working directory once the setting is made, so it is added last.
    dirs = [os.path.abspath(f) for f in folders] + [str(Path.cwd())]
    con.execute("set file_search_path = $1", [",".join(dict.fromkeys(dirs))])


def _params_used(sql: str, params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """DuckDB rejects named parameters a statement does not use; pass only the used ones."""
    if not params:
        return None
    used = {k: _bindable(v) for k, v in params.items() if re.search(r"\$" + re.escape(k) + r"\b", sql)}
    return used or None


def _bindable(value: Any) -> Any:
    """A tz-aware datetime as naive UTC: a naive value is UTC in every table, and the connection's zone is UTC."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def execute(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None) -> None:
    """Run a statement that returns no rows (DDL/DML) with bound named parameters."""
    p = _params_used(sql, params)
    con.execute(sql, p) if p else con.execute(sql)


def fetch(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
    """Run a query with bound named parameters and fetch every row."""
    p = _params_used(sql, params)
    return con.sql(sql, params=p).fetchall() if p else con.sql(sql).fetchall()


def table_exists(
    con: duckdb.DuckDBPyConnection, table: str, *, temporary: bool = False, database: str | None = None
) -> bool:
    """Whether the database holds a table of that name in `main`: a persistent one (of the current database, or
    of the attached `database`), or with `temporary` a temp one."""
    sql = (
        "select count(*) from duckdb_tables() where table_name = $t and temporary = $temporary"
        " and schema_name = 'main' and (temporary or database_name = coalesce($d, current_database()))"
    )
    return bool(fetch(con, sql, {"t": table, "temporary": temporary, "d": database})[0][0])
