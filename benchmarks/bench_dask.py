"""Single process vs `executor: dask`: `python benchmarks/bench_dask.py [--events 1000000] [--workers 2]`.

On the cached generated sample of run.py/floor.py (benchmarks/out/sample-<events>-<seed>), one data root: a
first run ingests and publishes; then full refreshes on the same lake (nothing new to ingest), alternating
`executor: local` and `executor: dask` on a local cluster of `--workers` processes, after Prefect's temporary
server was started by a warm-up flow. For each: the whole flow's wall time, and its build (from the end of
plan-build to the start of check-quality: identity, the per-customer models, the aggregate marts). The marts
of every run must be identical. Prints the JSON (also written to benchmarks/out/dask-<events>-<seed>.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONFIG = REPO / "journeys.yaml"


def marts_digest(marts: Path) -> str:
    """One digest over every Parquet mart's rows in order (the key-value metadata names the run: left out)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    for p in sorted(marts.glob("*/*.parquet")):
        table = pq.read_table(p).replace_schema_metadata(None)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        h.update(p.name.encode())
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


def build_seconds() -> float:
    """Of the last journeys-nightly run: seconds from the end of plan-build to the start of check-quality."""
    import anyio
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    async def fetch() -> float:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["journeys-nightly"])),
                sort=FlowRunSort.START_TIME_DESC,
                limit=1,
            )
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[runs[0].id])))
            planned = max(t.end_time for t in tasks if t.name.startswith("plan-build") and t.end_time)
            checked = min(t.start_time for t in tasks if t.name.startswith("check-quality") and t.start_time)
            return (checked - planned).total_seconds()

    return anyio.run(fetch)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="local/dask pairs of full refreshes (default 1)")
    args = ap.parse_args(argv)

    from sample import cached_sample

    spec, cache = cached_sample(args.events, args.seed)
    root = HERE / "out" / "dask-run"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    # Hard links: ingest only reads landing files, and a 10M-event copy costs minutes and gigabytes.
    shutil.copytree(cache / "landing", root / "landing", copy_function=os.link)

    from prefect import flow

    from pipelines.nightly import nightly

    @flow(name="dask-warm-up")
    def warm_up() -> None:
        """Starts Prefect's temporary server, so the timed flows below do not pay for it."""

    warm_up()
    t0 = time.perf_counter()
    first = nightly(config_path=str(CONFIG), as_of=spec.as_of, data_root=str(root))
    report: dict[str, Any] = {
        "events_generated": args.events,
        "rows_loaded": first["ingest"]["loaded"],
        "dask_workers": args.workers,
        "first_run_s": round(time.perf_counter() - t0, 2),
        "runs": [],
    }
    digests = {marts_digest(root / "marts")}
    for _ in range(args.rounds):
        for executor in ("local", "dask"):
            params: dict[str, Any] = {"executor": "dask", "dask_workers": args.workers} if executor == "dask" else {}
            t0 = time.perf_counter()
            nightly(config_path=str(CONFIG), as_of=spec.as_of, data_root=str(root), full_refresh=True, **params)
            flow_s = time.perf_counter() - t0
            report["runs"].append(
                {"executor": executor, "flow_s": round(flow_s, 2), "build_s": round(build_seconds(), 2)}
            )
            digests.add(marts_digest(root / "marts"))
    report["marts_identical"] = len(digests) == 1
    text = json.dumps(report, indent=2)
    print(text)
    (HERE / "out" / f"dask-{args.events}-{args.seed}.json").write_text(text + "\n")
    return 0 if report["marts_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
