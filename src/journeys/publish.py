"""Atomic publication: the marts of a run as one set of Parquet files, with its warehouse file.

A run writes its marts and its warehouse into `marts/.runs/<batch>/` and then turns one symlink,
`marts/.current`, to that folder; `marts/<table>/<table>.parquet` and `warehouse/journeys.duckdb` are
symlinks through `.current`. Readers therefore see the outputs of one run or of the next, never a mix,
whatever moment a run is killed at.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from journeys import db, progress
from journeys.config import Settings
from journeys.models import Model

KEEP_RUNS = 2
"""Published mart sets kept: the current one and the one before (a reader may still hold its files)."""


def mart_path(settings: Settings, table: str) -> Path:
    """Where a published mart is read: `marts/<table>/<table>.parquet` (a link into the current run's set)."""
    return settings.marts_dir / table / f"{table}.parquet"


def _runs_dir(settings: Settings) -> Path:
    return settings.marts_dir / ".runs"


def _copy_parquet(
    con: duckdb.DuckDBPyConnection,
    table: str,
    order: tuple[str, ...],
    final: Path,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write `table` ordered by `order` to Parquet aside (with key-value `metadata`), then rename it over `final`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    order_by = f" order by {', '.join(map(db.quote_ident, order))}" if order else ""
    # The keys are ours and fixed; the values are bound.
    meta = dict(metadata or {})
    kv = ", ".join(f"{db.quote_literal(k)}: $kv{i}" for i, k in enumerate(meta))
    kv_option = f", kv_metadata {{{kv}}}" if meta else ""
    # COPY cannot bind its target path; the path is ours, quoted by the one literal helper.
    db.execute(
        con,
        f"copy (select * from {db.quote_ident(table)}{order_by}) to {db.quote_literal(str(tmp))} "
        f"(format parquet, compression zstd{kv_option})",
        {f"kv{i}": v for i, v in enumerate(meta.values())},
    )
    os.replace(tmp, final)
    return final


MART_ROW_GROUP_ROWS = 122_880
"""Rows per Parquet row group of a mart (DuckDB's own default), and per Arrow batch read to write it."""


def _write_mart(con: duckdb.DuckDBPyConnection, model: Model, final: Path, metadata: Mapping[str, str] | None) -> Path:
    """Write a published model, ordered by its grain, to Parquet aside, then rename it over `final`.

    Written through Arrow in bounded batches, not with COPY, because COPY cannot set field metadata: every
    column carries its catalog description under the key `description`, the file the run's `metadata`.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    order_by = f" order by {', '.join(map(db.quote_ident, model.grain))}" if model.grain else ""
    reader = con.sql(f"select * from {db.quote_ident(model.name)}{order_by}").to_arrow_reader(MART_ROW_GROUP_ROWS)
    described = {c: str(text).strip() for c, text in model.columns.items() if str(text).strip()}
    fields = [f.with_metadata({"description": described[f.name]}) if f.name in described else f for f in reader.schema]
    schema = pa.schema(fields, metadata=dict(metadata or {}))
    with pq.ParquetWriter(str(tmp), schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch, row_group_size=MART_ROW_GROUP_ROWS)
    os.replace(tmp, final)
    return final


def _replace_symlink(link: Path, target: str) -> None:
    """Point `link` at `target` in one rename (a reader never finds it missing)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


def run_metadata(batch_id: str, as_of: datetime, published_at: datetime) -> dict[str, str]:
    """The Parquet key-value metadata that says which run a mart is from (times as ISO 8601 in UTC)."""
    return {
        "journeys.batch_id": batch_id,
        "journeys.as_of": as_of.astimezone(UTC).isoformat(),
        "journeys.published_at": published_at.astimezone(UTC).isoformat(),
    }


WAREHOUSE_FILE = "journeys.duckdb"
"""The warehouse's name inside a set (`marts/.runs/<batch>/journeys.duckdb`); the warehouse path links to it."""

PENDING = ".pending"
"""Folder of a set holding state files that change with it (`<set>/.pending/<path under the data root>`)."""


def staging_dir(settings: Settings, batch_id: str) -> Path:
    """The folder a run's set is written into before it switches in."""
    return _runs_dir(settings) / f".{batch_id}.tmp"


def start_set(settings: Settings, batch_id: str) -> Path:
    """An empty staging folder for the run's set (a leftover of the same batch removed)."""
    staging = staging_dir(settings, batch_id)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def pending_path(settings: Settings, staging: Path, final: Path) -> Path:
    """Where to write a state file that must change exactly when the set does: inside the set, until it switches."""
    path = staging / PENDING / final.relative_to(settings.root)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_marts(
    con: duckdb.DuckDBPyConnection, marts: Iterable[Model], staging: Path, metadata: Mapping[str, str] | None = None
) -> None:
    """Write every published model into the staging folder, ordered by its grain (same inputs, same rows)."""
    for m in progress.track(list(marts), "publish", label=lambda m: m.name):
        _write_mart(con, m, staging / f"{m.name}.parquet", metadata)


def publish_marts(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    marts: Iterable[Model],
    batch_id: str,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Write every published model as one set, then switch it in (marts only; the flow adds its warehouse)."""
    tables = list(marts)
    write_marts(con, tables, start_set(settings, batch_id), metadata)
    return switch_set(settings, batch_id, [m.name for m in tables])


def warehouse_link(settings: Settings) -> str:
    """The warehouse path's link target: the current set's file, relative so a moved data root still reads."""
    return os.path.relpath(settings.marts_dir / ".current" / WAREHOUSE_FILE, settings.warehouse_path.parent)


def switch_set(
    settings: Settings, batch_id: str, tables: Iterable[str], warehouse: Path | None = None
) -> dict[str, str]:
    """Publish the staged set by turning `marts/.current` to it: its marts, and its warehouse when given.

    The warehouse file moves into the set and `warehouse/journeys.duckdb` is a link through `.current`, so
    marts and warehouse switch in one rename. State files written under the set's PENDING folder are moved
    into place right after it (and by `finish_publication` at the next run's start if a kill came first).
    """
    runs = _runs_dir(settings)
    staging = staging_dir(settings, batch_id)
    if warehouse is not None:
        os.replace(warehouse, staging / WAREHOUSE_FILE)
        with contextlib.suppress(FileNotFoundError):
            warehouse.with_name(warehouse.name + ".wal").unlink()
    current = settings.marts_dir / ".current"
    if current.is_dir() and not current.is_symlink():
        # A data root copied without its links (cp -rL, shutil.copytree): keep that set with the others.
        os.replace(current, runs / f"copied-{time.time_ns()}")
    if warehouse is not None:
        _prepare_warehouse_link(settings)
    # Crash tests stop here (`switch:1`, all staged, a kill leaves a staging folder the next run removes) and
    # right after the switch (`switch:2`, published, its pending state not yet in place).
    progress.pause_point("switch")
    final = runs / batch_id
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    # The one step that publishes the whole set: marts and warehouse.
    _replace_symlink(current, f".runs/{batch_id}")
    progress.pause_point("switch")
    out = {}
    for name in tables:
        link = mart_path(settings, name)
        link.parent.mkdir(parents=True, exist_ok=True)
        # Once per table: a new table, or a file of the layout before sets (replaced by its link).
        if not link.is_symlink():
            _replace_symlink(link, f"../.current/{name}.parquet")
        out[name] = str(link)
    if warehouse is not None:
        if not settings.warehouse_path.is_symlink():
            # A first run, or a data root without a consistent earlier set: the link appears now.
            settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
            _replace_symlink(settings.warehouse_path, warehouse_link(settings))
        out["warehouse"] = str(settings.warehouse_path)
    finish_publication(settings)
    _prune_runs(settings, keep=batch_id)
    return out


def _prepare_warehouse_link(settings: Settings) -> None:
    """Before a switch: no foreign WAL beside the warehouse path, and the path a link through `.current`.

    A WAL beside the path (a DuckDB 1.x client's read-write session that did not checkpoint: 1.x puts it
    beside the link, 2.0 beside the file the link leads to) belongs to the file it was written against: left
    there, a 1.x client would replay it onto the new warehouse. It is moved to state/ first. A warehouse
    file of the layout before sets is hard-linked into the current set and replaced by the link, so
    readers keep the same file until the switch.
    """
    path = settings.warehouse_path
    foreign_wal = path.with_name(path.name + ".wal")
    if foreign_wal.exists():
        aside = settings.state_dir / "replaced-wal" / f"{path.name}.{time.time_ns()}.wal"
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.replace(foreign_wal, aside)
    current = settings.marts_dir / ".current"
    if path.is_symlink() or not path.exists() or not (current.is_symlink() and current.is_dir()):
        return
    inside = current / WAREHOUSE_FILE
    if not inside.exists():
        os.link(path, inside)
    _replace_symlink(path, warehouse_link(settings))


def finish_publication(settings: Settings) -> list[Path]:
    """Move the current set's pending state files into place; done after a switch, and at a run's start."""
    pending = settings.marts_dir / ".current" / PENDING
    if not pending.is_dir():
        return []
    moved = []
    # Each move is one rename: a kill midway leaves the rest for the next call.
    for p in sorted(x for x in pending.rglob("*") if x.is_file()):
        final = settings.root / p.relative_to(pending)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, final)
        moved.append(final)
    shutil.rmtree(pending, ignore_errors=True)
    return moved


def _prune_runs(settings: Settings, keep: str) -> None:
    """Remove published sets beyond the newest KEEP_RUNS (all of them were written by publish_marts)."""
    runs = sorted(
        (p for p in _runs_dir(settings).iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime_ns,
    )
    for old in runs[:-KEEP_RUNS]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


def write_identity_state(con: duckdb.DuckDBPyConnection, path: Path, audit: Mapping[str, Path] | None = None) -> Path:
    """Keep this run's identity_map (stable keys) and the audit tables' rows in state/, never read from marts/."""
    for table, history in (audit or {}).items():
        _copy_parquet(con, table, (), history)
    return _copy_parquet(con, "identity_map", ("id_type", "id_value"), path)


def record_run(con: duckdb.DuckDBPyConnection, state: Path, run: Mapping[str, Any]) -> Path:
    """Add this run's row to the working warehouse's `runs` table and keep the whole history in `state`."""
    cols = ", ".join(map(db.quote_ident, run))
    values = ", ".join(f"$c{i}" for i in range(len(run)))
    db.execute(con, f"insert into runs ({cols}) values ({values})", {f"c{i}": v for i, v in enumerate(run.values())})
    return _copy_parquet(con, "runs", ("published_at", "batch_id"), state)


WAREHOUSE_ALIAS = "warehouse"
"""Name under which an analysts' database attaches the published warehouse (`warehouse.journeys`)."""


def analyst_db_path(settings: Settings) -> Path:
    """Default analysts' database: beside the published outputs, never replaced by a run."""
    return settings.root / "analysts" / "analysts.duckdb"


def open_analyst_db(path: Path, warehouse: Path, **connect: Any) -> duckdb.DuckDBPyConnection:
    """Open (or create) an analysts' DuckDB file with the published warehouse attached read-only as `warehouse`."""
    # The analysts' objects live in a file no run touches; a view over `warehouse.<table>` is resolved when
    # queried, so it reads the new warehouse once attached again after the nightly swap (a session attached
    # before the swap keeps reading the old file).
    # The warehouse's lake views name the lake relative to the warehouse's folder.
    con = db.connect(path, search_path=[warehouse.parent], **connect)
    try:
        # ATTACH binds its path; the alias is an identifier.
        db.execute(con, f"attach $p as {db.quote_ident(WAREHOUSE_ALIAS)} (read_only)", {"p": str(warehouse)})
    except BaseException:
        con.close()
        raise
    return con


def working_warehouse_path(settings: Settings, batch_id: str) -> Path:
    """The file a run builds in; it becomes the warehouse only after the checks pass."""
    return settings.warehouse_path.with_name(f".build-{batch_id}.duckdb")


def discard_working_warehouse(working: Path) -> None:
    """Remove a working file of a run that will not publish."""
    for p in (working, working.with_name(working.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def clear_stale_run_files(settings: Settings) -> list[Path]:
    """Finish a publication killed after its switch, then remove working files of runs that died; under the run lock."""
    finish_publication(settings)
    stale = [
        *settings.warehouse_path.parent.glob(".build-*.duckdb*"),
        # marts/<table>/ files of the layout before sets, and marts/.runs/ sets that never switched in (with
        # the warehouse and pending state moved into them)
        *settings.marts_dir.glob("*/.*.tmp"),
        *settings.marts_dir.glob(".*.tmp"),
        *settings.state_dir.glob(".*.tmp"),
        *(settings.root / "reports").glob(".*.tmp"),
        # raw handoffs of runs that died before their quality step (a batch id is one flow run's)
        *settings.handoff_dir.glob("*"),
    ]
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return stale


class RunLockedError(RuntimeError):
    """Another run holds the data root's lock for longer than we wait."""


@contextlib.contextmanager
def run_lock(settings: Settings, wait_s: float = 3600.0, on_busy: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the data root's run lock: a second run waits, then finds the work done and changes nothing."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    path = settings.state_dir / "run.lock"
    with path.open("a+") as fh:
        deadline = time.monotonic() + wait_s
        busy = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # Once, at the first refusal: a test then knows this run really waited, without sleeping.
                if on_busy is not None and not busy:
                    on_busy()
                busy = True
                if time.monotonic() > deadline:
                    raise RunLockedError(f"{path} is held by another run") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
