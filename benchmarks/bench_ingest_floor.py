"""Ingest alone on the cached generated sample, against the floor's read: `python benchmarks/bench_ingest_floor.py`.

Copies the landing folder of benchmarks/out/sample-<events>-<seed> (see sample.py) to a fresh data root, runs
`journeys.ingest.ingest_sources` on it once per `--repeat` (a cold lake each time) and prints each run's time,
the row accounting and, with `--profile FILE`, a cProfile of the last run (sorted by cumulative time). The
floor's read (benchmarks/floor.py, DuckDB reading every landing file) is timed in the same process first, so
the ratio is taken in one window. Run with the package on PYTHONPATH to time another checkout's code.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "journeys.yaml"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--memory-limit", default="4GB")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--profile", help="write a cProfile of the last run's ingest here (text, top functions)")
    ap.add_argument("--no-floor", action="store_true", help="skip the floor's read")
    ap.add_argument("--statements", type=int, default=0, help="print the N costliest SQL statements (by text)")
    args = ap.parse_args(argv)

    import os

    os.environ["JOURNEYS_MEMORY_LIMIT"] = args.memory_limit
    sys.path.insert(0, str(HERE))
    from floor import floor
    from sample import cached_sample

    from journeys import ingest
    from journeys.config import load_settings

    spec, cache = cached_sample(args.events, args.seed)
    spent: dict[str, list[float]] = {}
    if args.statements:
        _time_statements(spent)
    result: dict = {"code": str(Path(ingest.__file__).resolve().parent), "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        settings = load_settings(CONFIG, data_root=root / "run")
        if not args.no_floor:
            measured = floor(settings, cache / "landing", root / "floor" / "sorted.parquet")
            result["floor_read_s"] = measured["read_s"]
            shutil.rmtree(root / "floor")
        for k in range(args.repeat):
            shutil.rmtree(root / "run", ignore_errors=True)
            shutil.copytree(cache / "landing", root / "run" / "landing")
            settings = load_settings(CONFIG, data_root=root / "run")
            profiler = cProfile.Profile() if args.profile and k == args.repeat - 1 else None
            t0 = time.perf_counter()
            if profiler:
                profiler.enable()
            report = ingest.ingest_sources(settings, as_of=spec.as_of, batch_id=f"bench{k}")
            if profiler:
                profiler.disable()
            seconds = time.perf_counter() - t0
            result["runs"].append(
                {
                    "ingest_s": round(seconds, 2),
                    "read": report.read,
                    "loaded": report.loaded,
                    "quarantined": report.quarantined,
                    "duplicates": report.duplicates,
                    "held": report.held,
                    "blank": report.blank,
                    "events": report.events,
                }
            )
            if profiler:
                with open(args.profile, "w") as out:
                    stats = pstats.Stats(profiler, stream=out)
                    stats.sort_stats("cumulative").print_stats(60)
                    stats.sort_stats("tottime").print_stats(40)
    if "floor_read_s" in result:
        best = min(r["ingest_s"] for r in result["runs"])
        result["ingest_x_floor_read"] = round(best / result["floor_read_s"], 1)
    if args.statements:
        ranked = sorted(spent.items(), key=lambda kv: -sum(kv[1]))[: args.statements]
        result["statements"] = [{"s": round(sum(v), 2), "n": len(v), "sql": k} for k, v in ranked]
        result["statements_total"] = {
            "s": round(sum(sum(v) for v in spent.values()), 2),
            "n": sum(len(v) for v in spent.values()),
        }
    print(json.dumps(result, indent=2))
    return 0


def _time_statements(spent: dict[str, list[float]]) -> None:
    """Time every statement run through journeys.db, keyed by its first words (the last run's only count)."""
    import re

    from journeys import db

    def timed(fn):  # type: ignore[no-untyped-def]
        def wrapper(con, sql, params=None):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return fn(con, sql, params)
            finally:
                key = re.sub(r"\s+", " ", sql).strip()[:110]
                spent.setdefault(key, []).append(time.perf_counter() - t0)

        return wrapper

    db.execute = timed(db.execute)
    db.fetch = timed(db.fetch)


if __name__ == "__main__":
    sys.exit(main())
