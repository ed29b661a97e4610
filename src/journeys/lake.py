"""Lake upkeep: compact a date partition's small event files into files near a target size.

Each run writes one file per event_date it touches, so a date that keeps receiving late rows gathers one
small file per night; readers pay per file (open, footer, row groups). Compaction rewrites a partition's
small files into files near `TARGET_FILE_BYTES`, rows and columns unchanged.

Only files whose ingest batch a published run has checked are compacted: the quality step finds the rows
it still has to check by file name (journeys.quality.unchecked_event_files), so a compacted file is named
after a checked batch, `<batch>-c<digest>.parquet`, and never holds a row of an unchecked one.

A kill at any point leaves the lake whole: the new file is written aside, a journal naming it and the files
it replaces is written, the new file is renamed in, the old ones are deleted, then the journal. Before
anything reads the lake (compaction itself, ingest) `finish_compaction` completes a journal whose new file is
in place (deletes the old files left) and drops one whose new file never arrived (the old files are intact).
The same journal makes `drop_landing_rows` safe: when a landing file arrives in a new version, ingest rewrites
each lake file that holds rows of the earlier version without them (`<stem>-r<digest>.parquet`, still named
after its batch) or, when nothing else is left in it, deletes it.
Runs hold the run lock (journeys.publish.run_lock) around it; a reader outside the run (a BI tool on the
warehouse's `events` view) that lists a partition at the very moment of the swap can fail to open a deleted
file or, for an instant, see a partition's rows twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from journeys import db
from journeys.config import Settings

log = logging.getLogger(__name__)

TARGET_FILE_BYTES = 128 * 1024 * 1024
"""Size a compacted file grows to (compressed Parquet); files of at least half of it are left alone."""


@dataclass
class CompactionReport:
    """What one compaction did: files before and after over the whole events lake, partitions rewritten."""

    files_before: int = 0
    files_after: int = 0
    partitions_compacted: list[str] = field(default_factory=list)
    rows_rewritten: int = 0


def _journal(settings: Settings) -> Path:
    # Inside the events folder, so a reset's swap of the lake takes its journal along.
    return settings.events_dir / "_compaction.json"


def checked_batches(settings: Settings) -> set[str]:
    """Ingest batches whose events a published run has checked (from state/runs.parquet), as quality counts them."""
    from journeys.build import runs_state_path  # build imports ingest, which imports this module

    path = runs_state_path(settings)
    if not path.exists():
        return set()
    with duckdb.connect() as con:
        rows = db.fetch(
            con,
            "select batch_id from read_parquet($p) union select unnest(event_batches) from read_parquet($p)"
            " where event_batches is not null",
            {"p": str(path)},
        )
    return {r[0] for r in rows if r[0] is not None}


def file_batch(path: Path, batches: Collection[str]) -> str | None:
    """The batch among `batches` a lake file belongs to (its name is `<batch>-<suffix>`; batch ids hold '-')."""
    prefixes = [path.stem[:i] for i, ch in enumerate(path.stem) if ch == "-"]
    return next((p for p in reversed(prefixes) if p in batches), None)


def compaction_groups(sizes: Sequence[int], target_bytes: int) -> list[list[int]]:
    """Indexes of the files to merge, in order: consecutive small files packed up to `target_bytes` each.

    A file of at least half the target is never rewritten; a group of one file is left as it is.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i, size in enumerate(sizes):
        if size * 2 >= target_bytes:
            continue
        if current and total + size > target_bytes:
            groups.append(current)
            current, total = [], 0
        current.append(i)
        total += size
    groups.append(current)
    return [g for g in groups if len(g) > 1]


def finish_compaction(settings: Settings) -> None:
    """Complete or undo a compaction that a kill interrupted (see the module docstring); no-op without journal."""
    journal = _journal(settings)
    if not journal.exists():
        return
    entry = json.loads(journal.read_text(encoding="utf-8"))
    # A rewrite of a links folder names it from the lake's root; an events partition by its own name.
    part = settings.lake_dir / entry["folder"] if "folder" in entry else settings.events_dir / entry["partition"]
    # No new file: every row of the old ones was dropped, so deleting them is all that is left to do.
    if entry["new"] is None or (part / entry["new"]).exists():
        for name in entry["old"]:
            (part / name).unlink(missing_ok=True)
    journal.unlink()


def _write_durably(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rows(con: duckdb.DuckDBPyConnection, files: list[str]) -> int:
    sql = "select coalesce(sum(num_rows), 0) from parquet_file_metadata($files::varchar[])"
    return int(db.fetch(con, sql, {"files": files})[0][0])


def compact_group(
    con: duckdb.DuckDBPyConnection, settings: Settings, part: Path, files: list[Path], batch: str, tmp: Path
) -> int:
    """Rewrite `files` of one partition as one file named after `batch`, swapped in; return its rows."""
    digest = hashlib.sha256("\0".join(p.name for p in files).encode()).hexdigest()[:12]
    name = f"{batch}-c{digest}.parquet"
    out = tmp / name
    paths = [str(p) for p in files]
    db.execute(
        con,
        # The date is the folder's name only (pyarrow and pandas reject a hive key that is also a column); files
        # of lakes written before that still carry it, and leave it here.
        "copy (select * exclude (event_date) from read_parquet($files::varchar[], hive_partitioning = true,"
        " union_by_name = true) order by occurred_at, event_id) to $out (format parquet)",
        {"files": paths, "out": str(out)},
    )
    rows = _rows(con, [str(out)])
    if rows != _rows(con, paths):
        raise RuntimeError(f"compaction of {part.name} lost rows; nothing was replaced")
    _fsync(out)
    journal = _journal(settings)
    _write_durably(journal, json.dumps({"partition": part.name, "new": name, "old": [p.name for p in files]}))
    os.replace(out, part / name)
    for p in files:
        p.unlink()
    journal.unlink()
    return rows


def compact_events(
    settings: Settings, checked: Collection[str], *, target_bytes: int = TARGET_FILE_BYTES
) -> CompactionReport:
    """Compact every event_date partition's small files of `checked` batches into files near `target_bytes`."""
    finish_compaction(settings)
    report = CompactionReport()
    parts = sorted(p for p in settings.events_dir.glob("event_date=*") if p.is_dir())
    tmp = settings.lake_dir / "_tmp" / "compaction"
    shutil.rmtree(tmp, ignore_errors=True)
    con = db.connect(memory_limit=settings.memory_limit, threads=settings.threads, temp_directory=settings.tmp_dir)
    try:
        for part in parts:
            files = sorted(part.glob("*.parquet"))
            report.files_before += len(files)
            candidates = [(p, b) for p in files if (b := file_batch(p, checked)) is not None]
            groups = compaction_groups([p.stat().st_size for p, _ in candidates], target_bytes)
            for group in groups:
                tmp.mkdir(parents=True, exist_ok=True)
                chosen = [candidates[i][0] for i in group]
                # The newest batch of the group (ids start with the run's as_of): any checked batch would do.
                batch = max(candidates[i][1] for i in group)
                report.rows_rewritten += compact_group(con, settings, part, chosen, batch, tmp)
            if groups:
                report.partitions_compacted.append(part.name)
            report.files_after += len(files) - sum(len(g) - 1 for g in groups)
    finally:
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)
        with_tmp = settings.lake_dir / "_tmp"
        if with_tmp.is_dir() and not any(with_tmp.iterdir()):
            with_tmp.rmdir()
    return report


# What ingest and compaction name a lake file: `<batch>-<first file>[-<k>]`, `<batch>-held[-<k>]`,
# `<batch>-c<digest>`, each possibly rewritten once more as `...-r<digest>`. Anything else is not ours.
_OWN_FILE = re.compile(r"^[A-Za-z0-9_.\-]+-(?:\d+|held|c[0-9a-f]{12})(?:-\d+)?(?:-r[0-9a-f]{12})?$")
_REWRITE_SUFFIX = re.compile(r"-r[0-9a-f]{12}$")


def own_file(path: Path) -> bool:
    """True when the lake file's name is one journeys gives (ingest, compaction, a rewrite)."""
    return path.suffix == ".parquet" and _OWN_FILE.match(path.stem) is not None


def _rewritten_name(path: Path) -> str:
    # Keeps the batch prefix, so the quality step still tells checked rows from unchecked ones by name.
    digest = hashlib.sha256(path.name.encode()).hexdigest()[:12]
    return f"{_REWRITE_SUFFIX.sub('', path.stem)}-r{digest}.parquet"


def drop_landing_rows(
    con: duckdb.DuckDBPyConnection, settings: Settings, files: Sequence[Path], landing: Sequence[tuple[str, str]]
) -> int:
    """Rewrite each lake file in `files` without the rows of the landing files `landing` ((source, source_file)).

    Each file is swapped under the compaction journal (a kill leaves it whole); a file left with no row is
    deleted; a file whose name is not one journeys gives is left alone (logged). Returns the rows dropped.
    """
    finish_compaction(settings)
    db.execute(con, "create or replace temp table _lake_dropped (source varchar, source_file varchar)")
    db.execute(
        con,
        "insert into _lake_dropped select unnest($sources::varchar[]), unnest($files::varchar[])",
        {"sources": [s for s, _ in landing], "files": [f for _, f in landing]},
    )
    tmp = settings.lake_dir / "_tmp" / "rewrite"
    shutil.rmtree(tmp, ignore_errors=True)
    dropped = 0
    try:
        for path in sorted(set(files)):
            if not path.exists():
                continue
            if not own_file(path):
                log.warning(
                    "lake file %s holds rows of a replaced landing file but was not written by journeys; left as it is",
                    path,
                )
                continue
            dropped += _drop_from_file(con, settings, path, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        db.execute(con, "drop table if exists _lake_dropped")
    return dropped


def _drop_from_file(con: duckdb.DuckDBPyConnection, settings: Settings, path: Path, tmp: Path) -> int:
    part = path.parent
    key = part.name.split("=", 1)[0]
    # Events are kept in time order, links in landing order (as ingest writes them).
    order = "occurred_at, event_id" if key == "event_date" else "source_file, source_line"
    # The folder's value is the partition key (files of older lakes may carry it too: the folder wins).
    read = "read_parquet($file, hive_partitioning = true, union_by_name = true)"
    on = "d.source = r.source and d.source_file = r.source_file"
    matched = f"select count(*) from {read} as r semi join _lake_dropped as d on {on}"
    dropped = int(db.fetch(con, matched, {"file": str(path)})[0][0])
    if dropped == 0:
        return 0
    total = _rows(con, [str(path)])
    journal = _journal(settings)
    journal.parent.mkdir(parents=True, exist_ok=True)
    folder = part.relative_to(settings.lake_dir).as_posix()
    if dropped == total:
        _write_durably(journal, json.dumps({"partition": part.name, "folder": folder, "new": None, "old": [path.name]}))
        path.unlink()
        journal.unlink()
        return dropped
    tmp.mkdir(parents=True, exist_ok=True)
    name = _rewritten_name(path)
    out = tmp / name
    db.execute(
        con,
        f"copy (select r.* exclude ({db.quote_ident(key)}) from {read} as r"
        f" anti join _lake_dropped as d on {on} order by {order}) to $out (format parquet)",
        {"file": str(path), "out": str(out)},
    )
    if _rows(con, [str(out)]) != total - dropped:
        raise RuntimeError(f"rewrite of lake file {path} lost rows; nothing was replaced")
    _fsync(out)
    _write_durably(journal, json.dumps({"partition": part.name, "folder": folder, "new": name, "old": [path.name]}))
    os.replace(out, part / name)
    path.unlink()
    journal.unlink()
    return dropped
