"""Benchmark the whole nightly flow: `make bench` or `python benchmarks/run.py --events 1000000`.

Generates a sample once per (events, seed) under benchmarks/out/, runs the real flow on a fresh copy of
its landing folder, and prints wall time per step, events per second and peak memory (RSS).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def peak_rss_mb() -> float:
    """Peak resident memory of this process (DuckDB runs in it), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--memory-limit", default="4GB")
    args = ap.parse_args(argv)

    from sample import cached_sample

    t0 = time.perf_counter()
    spec, cache = cached_sample(args.events, args.seed)
    gen_s = time.perf_counter() - t0

    root = HERE / "out" / "run"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    shutil.copytree(cache / "landing", root / "landing")

    import os

    os.environ["JOURNEYS_MEMORY_LIMIT"] = args.memory_limit
    from pipelines.nightly import nightly

    t0 = time.perf_counter()
    result = nightly(config_path=str(REPO / "journeys.yaml"), as_of=spec.as_of, data_root=str(root))
    flow_s = time.perf_counter() - t0
    read = result["ingest"]["read"]
    report = {
        "events_generated": args.events,
        "rows_read": read,
        "generate_s": round(gen_s, 1),
        "flow_s": round(flow_s, 1),
        "events_per_s": round(read / flow_s),
        "peak_rss_mb": round(peak_rss_mb()),
        "memory_limit": args.memory_limit,
        "customers": result["identity"].get("n_customers"),
        "journeys": result["marts"].get("journeys"),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
