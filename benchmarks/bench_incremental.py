"""Incremental run vs full rebuild: `python benchmarks/bench_incremental.py [--events 3000000]`.

From one generated sample (cached under benchmarks/out/), the landing rows are split by the ground truth's
event time into
- a base: everything except the two scenarios below,
- "next day": the rows of the last days before as_of (about 1 % of events), landing as new files,
- "late": about 1 % of events, from 10 earlier dates, landing as new files afterwards.
The real flow then runs: base (full, the first run, with Prefect's start-up), next day (incremental),
late (incremental), and a full refresh of the same final lake. Prints each run's wall time, per-step
times (Prefect task durations), finer timings inside the steps (`parts_s`: each model built, each mart
written, copying the kept build in and out, the warehouse's type conversion, the quality suites, ...), and
incremental / full-refresh ratios.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import os
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def event_dates(truth: Path) -> dict[tuple[str, str], str]:
    """(source, source event id) -> UTC date of the true event."""
    frame = pl.read_parquet(truth / "events.parquet", columns=["source", "event_id", "occurred_at"])
    frame = frame.with_columns(pl.col("occurred_at").dt.convert_time_zone("UTC").dt.date().cast(pl.Utf8).alias("d"))
    return dict(zip(zip(frame["source"], frame["event_id"], strict=True), frame["d"], strict=True))


def choose(dates: dict[tuple[str, str], str], as_of_date: str) -> tuple[set[str], set[str]]:
    """Dates of the "next day" scenario (latest days up to ~1 % of events) and 10 earlier dates for "late"."""
    per_day = pl.DataFrame({"d": list(dates.values())}).group_by("d").len().sort("d", descending=True)
    per_day = per_day.filter(pl.col("d") < as_of_date)
    total = len(dates)
    day: set[str] = set()
    n = 0
    for d, c in per_day.iter_rows():
        if n >= total * 0.01:
            break
        day.add(d)
        n += c
    earlier = [d for d, _ in per_day.iter_rows() if d not in day][5:]
    late = set(earlier[:: max(1, len(earlier) // 10)][:10])
    return day, late


def split(landing: Path, out: Path, settings, dates, day: set[str], late: set[str], late_share: float) -> dict:
    """Write base/, day/ and late/ landing folders; return row counts."""
    counts = {"base": 0, "day": 0, "late": 0}
    by_source = {s.name: s for s in settings.sources}
    for src_dir in sorted(p for p in landing.iterdir() if p.is_dir()):
        source = by_source[src_dir.name]
        for f in sorted(src_dir.iterdir()):
            parts: dict[str, list] = {"base": [], "day": [], "late": []}
            if f.suffix == ".parquet":
                table = pl.read_parquet(f)
                keys = table[source.event_id].cast(pl.Utf8).to_list()
                for i, k in enumerate(keys):
                    parts[_which(dates.get((source.name, k)), day, late, i, late_share)].append(i)
                for name, rows in parts.items():
                    if rows:
                        target = out / name / src_dir.name / _named(name, f.name)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        pq.write_table(table[rows].to_arrow(), target)
                        counts[name] += len(rows)
                continue
            lines = f.read_bytes().splitlines(keepends=True)
            header: list[bytes] = []
            if f.suffix == ".csv":
                header, lines = lines[:1], lines[1:]
                cols = next(csv.reader(io.StringIO(header[0].decode()), delimiter=source.delimiter))
                at = cols.index(source.event_id)
            for i, line in enumerate(lines):
                try:
                    if f.suffix == ".csv":
                        key = next(csv.reader(io.StringIO(line.decode()), delimiter=source.delimiter))[at]
                    else:
                        key = str(json.loads(line)[source.event_id])
                except (ValueError, IndexError, KeyError, StopIteration, TypeError):
                    key = ""
                parts[_which(dates.get((source.name, key)), day, late, i, late_share)].append(line)
            for name, rows in parts.items():
                if rows:
                    target = out / name / src_dir.name / _named(name, f.name)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(b"".join(header + rows))
                    counts[name] += len(rows)
    return counts


def _named(part: str, name: str) -> str:
    """A new landing file's name: a file landing again under the same name would replace the earlier version."""
    return name if part == "base" else f"{part}_{name}"


def _which(d: str | None, day: set[str], late: set[str], i: int, late_share: float) -> str:
    if d in day:
        return "day"
    # A deterministic share of the late dates' rows (spread over the file by row number).
    if d in late and (i * 7919) % 1000 < late_share * 1000:
        return "late"
    return "base"


PARTS = (
    ("journeys.incremental", "plan_build"),
    ("journeys.incremental", "_start_subset"),
    ("journeys.incremental", "_merge"),
    ("journeys.incremental", "seal_build"),
    ("journeys.incremental", "keep_build"),
    ("journeys.publish", "write_identity_state"),
    ("journeys.publish", "record_run"),
    ("journeys.publish", "switch_set"),
    ("journeys.build", "publish_warehouse"),
    ("journeys.build", "drop_intermediates"),
    ("journeys.dictionary", "comment_warehouse"),
    ("journeys.quality", "validate_warehouse"),
    ("journeys.quality", "validate_landing"),
    ("journeys.quality", "write_data_docs"),
    ("journeys.report", "write_report"),
)
"""Functions inside the flow's steps whose time the benchmark reports (seconds summed per run)."""

_parts: dict[str, float] = {}


def timed_part(name: str, fn: Any, parts: dict[str, float] = _parts) -> Any:
    """`fn`, adding the seconds of each call to `parts[name]`."""

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0

    return wrapper


def instrument() -> None:
    """Time the PARTS, each model built and each mart written (the items of `progress.track`) into `_parts`."""
    import importlib

    from journeys import progress

    for module, attr in PARTS:
        mod = importlib.import_module(module)
        setattr(mod, attr, timed_part(attr, getattr(mod, attr)))
    track = progress.track

    def timed_track(items, description, label=None):
        # The time between handing out an item and asking for the next is that item's work.
        for item in track(items, description, label):
            t0 = time.perf_counter()
            yield item
            # Landing files are many and small: ingest is reported as one figure.
            name = description if description == "ingest" else f"{description}:{label(item) if label else item}"
            _parts[name] = _parts.get(name, 0.0) + time.perf_counter() - t0

    progress.track = timed_track


def step_times(result: dict) -> dict[str, float]:
    """Seconds per flow task of the last flow run (Prefect's own task durations)."""
    import anyio
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def fetch() -> dict[str, float]:
        async with get_client() as client:
            runs = await client.read_flow_runs(limit=1, sort="START_TIME_DESC")
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[runs[0].id])))
            out: dict[str, float] = {}
            for t in tasks:
                name = t.name.rsplit("-", 1)[0]
                out[name] = round(out.get(name, 0.0) + (t.total_run_time.total_seconds() if t.total_run_time else 0), 1)
            return out

    return anyio.run(fetch)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=3_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--memory-limit", default="4GB")
    args = ap.parse_args(argv)

    from sample import cached_sample

    from journeys.config import load_settings

    spec, cache = cached_sample(args.events, args.seed)
    settings = load_settings(REPO / "journeys.yaml", data_root=cache)
    dates = event_dates(cache / "truth")
    day, late = choose(dates, str(spec.as_of.date()))
    parts = HERE / "out" / f"incremental-{args.events}-{args.seed}"
    # counts.json is written last (a cut that was interrupted has none); parts cut before the day's and late
    # files got names of their own are cut again.
    if not (parts / "counts.json").exists() or not any((parts / "day").glob("*/day_*")):
        shutil.rmtree(parts, ignore_errors=True)
        per_late_date = sum(1 for d in dates.values() if d in late)
        counts = split(
            cache / "landing", parts, settings, dates, day, late, min(1.0, 0.01 * len(dates) / per_late_date)
        )
        (parts / "counts.json").write_text(json.dumps(counts))
    counts = json.loads((parts / "counts.json").read_text())

    root = HERE / "out" / "incremental-run"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(parts / "base", root / "landing")
    os.environ["JOURNEYS_MEMORY_LIMIT"] = args.memory_limit
    instrument()
    from pipelines.nightly import nightly

    config = str(REPO / "journeys.yaml")
    report: dict = {
        "events_generated": args.events,
        "rows": counts,
        "day_dates": sorted(day),
        "late_dates": sorted(late),
    }

    def timed(name: str, as_of, **kw) -> None:
        _parts.clear()
        t0 = time.perf_counter()
        result = nightly(config_path=config, as_of=as_of, data_root=str(root), **kw)
        report[name] = {
            "flow_s": round(time.perf_counter() - t0, 1),
            "mode": result["build"]["mode"],
            "rows_loaded": result["ingest"]["loaded"],
            "affected_customers": result["steps"]
            .get("build-marts", {})
            .get("incremental", {})
            .get("affected_customers"),
            "customers": result["identity"].get("n_customers"),
            "steps_s": step_times(result),
            "parts_s": {k: round(v, 2) for k, v in sorted(_parts.items(), key=lambda kv: -kv[1]) if v >= 0.05},
        }
        print(name, json.dumps(report[name]), flush=True)

    timed("base_full_first_run", spec.as_of - timedelta(days=1))
    shutil.copytree(parts / "day", root / "landing", dirs_exist_ok=True)
    timed("next_day_incremental", spec.as_of)
    shutil.copytree(parts / "late", root / "landing", dirs_exist_ok=True)
    timed("late_incremental", spec.as_of + timedelta(hours=1))
    timed("full_refresh_same_lake", spec.as_of + timedelta(hours=1), full_refresh=True)

    full = report["full_refresh_same_lake"]["flow_s"]
    report["ratio_next_day"] = round(report["next_day_incremental"]["flow_s"] / full, 3)
    report["ratio_late"] = round(report["late_incremental"]["flow_s"] / full, 3)
    print(json.dumps(report, indent=2))
    (HERE / "out" / "bench_incremental.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
