"""The hardware floor and the nightly flow as a multiple of it: `python benchmarks/floor.py [--events 1000000]`.

On one generated landing folder (cached under benchmarks/out/sample-<events>-<seed>, shared with run.py), in
one process:

1. the floor: (a) DuckDB reads every landing file of every source in its format (CSV with its delimiter and
   quote, JSON lines as objects, Parquet), all columns, into memory; (b) one sort of all those events by
   (identifier, time) written to Parquet (source, event id, first identifier of the row, time as text);
2. the real nightly flow on a fresh landing folder (hard links to the sample), after Prefect's temporary server
   was started by a warm-up flow (so its start-up is not counted): each flow step's time (Prefect's task durations) and
   the whole flow, each as a multiple of the floor; `parts_s` in the JSON times the parts inside the steps
   (each model built, each mart written; bench_incremental's instrumentation).

Prints a table and the JSON (also written to benchmarks/out/floor-<events>-<seed>.json). The machine is shared:
run it alone, and compare ratios taken in the same window.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONFIG = REPO / "journeys.yaml"

_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"))


def peak_rss_mb() -> float:
    """Peak resident memory of this process (DuckDB runs in it), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compression(path: Path) -> str:
    """A landing file's codec from its first bytes, as ingest recognises it."""
    with path.open("rb") as fh:
        head = fh.read(4)
    return next((name for magic, name in _MAGIC if head.startswith(magic)), "none")


def read_sql(fmt: str) -> str:
    """SQL that reads a list of landing files ($files) of one format and codec, every column."""
    if fmt == "csv":
        return (
            "select * from read_csv($files::varchar[], delim = $delim, quote = $quote, escape = $quote,"
            " header = true, all_varchar = true, ignore_errors = true, null_padding = true, union_by_name = true,"
            " encoding = $encoding, compression = $compression)"
        )
    if fmt == "jsonl":
        return (
            "select json from read_json_objects($files::varchar[], format = 'newline_delimited',"
            " ignore_errors = true, compression = $compression)"
        )
    return "select * from read_parquet($files::varchar[], union_by_name = true)"


def column_sql(fmt: str, column: str, params: dict[str, Any]) -> str:
    """One source column as text: a JSON key of the object (path bound as a parameter) or a cast column."""
    from journeys import db

    if fmt != "jsonl":
        return f"cast({db.quote_ident(column)} as varchar)"
    key = f"k{len(params)}"
    params[key] = "$." + json.dumps(column)
    return f"json_extract_string(json, ${key})"


def floor(settings: Any, landing: Path, out: Path) -> dict[str, Any]:
    """Time (a) reading every landing file and (b) one sort of all events by (identifier, time) into Parquet."""
    from journeys import db

    con = db.connect(memory_limit=settings.memory_limit, threads=settings.threads, temp_directory=settings.tmp_dir)
    try:
        t0 = time.perf_counter()
        parts: list[str] = []
        params: dict[str, Any] = {}
        files_read = 0
        for i, src in enumerate(settings.sources):
            paths = sorted(p for p in landing.glob(src.path) if p.is_file() and p.stat().st_size > 0)
            by_codec: dict[str, list[str]] = {}
            for p in paths:
                by_codec.setdefault("none" if src.format == "parquet" else compression(p), []).append(str(p))
            for k, (codec, files) in enumerate(sorted(by_codec.items())):
                table = f"floor_{i}_{k}"
                db.execute(
                    con,
                    f"create temp table {db.quote_ident(table)} as {read_sql(src.format)}",
                    {
                        "files": files,
                        "delim": src.delimiter,
                        "quote": src.quote,
                        "encoding": src.encoding,
                        "compression": codec,
                    },
                )
                files_read += len(files)
                if src.kind == "links":
                    continue
                time_col = src.occurred_at or (src.events[0].occurred_at if src.events else None)
                id_cols = list(src.identifiers)
                params[f"s{i}"] = src.name
                fmt = src.format
                ids = ", ".join(column_sql(fmt, c, params) for c in id_cols)
                identifier = f"coalesce({ids})" if id_cols else "null::varchar"
                event_id = column_sql(fmt, src.event_id_columns[0], params) if src.event_id_columns else "null::varchar"
                occurred = column_sql(fmt, time_col, params) if time_col else "null::varchar"
                parts.append(
                    f"select ${f's{i}'} as source, {event_id} as event_id, {identifier} as identifier,"
                    f" {occurred} as occurred_at from {db.quote_ident(table)}"
                )
        rows_read = sum(
            db.fetch(con, f"select count(*) from {db.quote_ident(t)}")[0][0]
            for (t,) in db.fetch(con, "select table_name from duckdb_tables() where table_name like 'floor_%'")
        )
        read_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        out.parent.mkdir(parents=True, exist_ok=True)
        db.execute(
            con,
            f"copy (select * from ({' union all '.join(parts)}) order by identifier, occurred_at) to $out"
            " (format parquet)",
            {**params, "out": str(out)},
        )
        sort_s = time.perf_counter() - t0
        sorted_rows = db.fetch(con, "select count(*) from read_parquet($out)", {"out": str(out)})[0][0]
    finally:
        con.close()
    return {
        "files": files_read,
        "rows_read": rows_read,
        "rows_sorted": sorted_rows,
        "read_s": round(read_s, 2),
        "sort_s": round(sort_s, 2),
        "floor_s": round(read_s + sort_s, 2),
    }


def flow_run_times() -> dict[str, Any]:
    """Prefect's own durations of the last journeys-nightly flow run: the whole run and each task."""
    import anyio
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    async def fetch() -> dict[str, Any]:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["journeys-nightly"])),
                sort=FlowRunSort.START_TIME_DESC,
                limit=1,
            )
            run = runs[0]
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            steps: dict[str, float] = {}
            starts: dict[str, float] = {}
            for t in tasks:
                name = t.name.rsplit("-", 1)[0]  # Prefect adds "-<n>" to each task run's name
                seconds = t.total_run_time.total_seconds() if t.total_run_time else 0.0
                steps[name] = steps.get(name, 0.0) + seconds
                start = t.start_time.timestamp() if t.start_time else float("inf")
                starts[name] = min(starts.get(name, float("inf")), start)
            ordered = dict(sorted(steps.items(), key=lambda kv: starts[kv[0]]))
            return {"flow_run_s": run.total_run_time.total_seconds(), "steps_s": ordered}

    return anyio.run(fetch)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--memory-limit", default="4GB")
    args = ap.parse_args(argv)
    os.environ["JOURNEYS_MEMORY_LIMIT"] = args.memory_limit

    from sample import cached_sample

    from journeys.config import load_settings

    spec, cache = cached_sample(args.events, args.seed)

    root = HERE / "out" / "floor-run"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    settings = load_settings(CONFIG, data_root=root)
    # The floor reads the cached sample; the flow gets a fresh landing folder of hard links (the same bytes, a cold
    # lake): ingest only reads landing files, and a copy would cost the disk a 50M-event run needs for its build.
    measured = floor(settings, cache / "landing", root / "floor" / "sorted.parquet")
    shutil.rmtree(root / "floor")
    shutil.copytree(cache / "landing", root / "landing", copy_function=os.link)

    from prefect import flow

    from pipelines.nightly import nightly

    @flow(name="floor-warm-up")
    def warm_up() -> None:
        """Starts Prefect's temporary server, so the timed flow below does not pay for it."""

    warm_up()
    # Finer times inside the steps (each model built, each mart written, the quality and publication parts), as
    # bench_incremental reports them: where a step's multiple of the floor comes from.
    from bench_incremental import _parts, instrument

    instrument()
    t0 = time.perf_counter()
    result = nightly(config_path=str(CONFIG), as_of=spec.as_of, data_root=str(root))
    flow_s = time.perf_counter() - t0
    prefect = flow_run_times()
    fl = measured["floor_s"]
    steps = {name: {"s": round(s, 2), "x_floor": round(s / fl, 2)} for name, s in prefect["steps_s"].items()}
    lake_files = sum(1 for _ in (root / "lake" / "events").glob("event_date=*/*.parquet"))
    report = {
        "events_generated": args.events,
        "memory_limit": args.memory_limit,
        "floor": measured,
        "flow_s": round(flow_s, 2),
        "flow_x_floor": round(flow_s / fl, 2),
        "flow_run_s_prefect": round(prefect["flow_run_s"], 2),
        "ingest_x_floor_read": round(prefect["steps_s"].get("ingest", 0.0) / measured["read_s"], 2),
        "steps": steps,
        "rows_read": result["ingest"]["read"],
        "lake_event_files": lake_files,
        "peak_rss_mb": round(peak_rss_mb()),
        "parts_s": {k: round(v, 2) for k, v in sorted(_parts.items(), key=lambda kv: -kv[1]) if v >= 0.05},
    }
    print(f"floor: read {measured['read_s']:.2f} s + sort {measured['sort_s']:.2f} s = {fl:.2f} s")
    print(f"{'step':<20}{'seconds':>10}{'x floor':>10}")
    for name, v in steps.items():
        print(f"{name:<20}{v['s']:>10.2f}{v['x_floor']:>10.2f}")
    print(f"{'whole flow':<20}{flow_s:>10.2f}{flow_s / fl:>10.2f}")
    text = json.dumps(report, indent=2)
    print(text)
    (HERE / "out" / f"floor-{args.events}-{args.seed}.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
