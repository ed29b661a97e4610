"""Time `build_stage_reached` (ordered, k=5) against chdb `windowFunnel` on the same Parquet file.

Usage: `python benchmarks/bench_funnel.py [--events N] [--journeys J] [--threads T] [--repeat R]
[--option strict_increase|strict_deduplication]`. The events are generated deterministically by DuckDB SQL
into benchmarks/out/ (reused when present), with the integer journey_key that int_journey_events emits
beside journey_id; both engines run in this process with the same thread count, and the furthest-stage
histograms must agree. chdb is timed grouping by journey_key (the key our passes use) and by journey_id.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import chdb

from journeys.db import connect, execute, fetch
from journeys.funnel import FunnelSpec, build_stage_reached

HERE = Path(__file__).resolve().parent
K = 5
WINDOW_US = 7 * 24 * 3600 * 1_000_000  # one week, over a 30-day span: many chains fall out of it

GENERATE_SQL = """
with
numbered as (
    select range as i from range($n_events)
),
final as (
    select
        'm' as stage_model,
        'j' || lpad(cast(hash(numbered.i, 1) % $n_journeys as varchar), 8, '0') as journey_id,
        cast(hash(numbered.i, 1) % $n_journeys as bigint) as journey_key,
        timestamp '2024-01-01' + to_microseconds(cast(hash(numbered.i, 2) % $span_us as bigint))
            as occurred_at,
        'e' || cast(numbered.i as varchar) as event_id,
        -- funnel-shaped: early stages are the most frequent
        case
            when hash(numbered.i, 3) % 100 < 35 then 1
            when hash(numbered.i, 3) % 100 < 60 then 2
            when hash(numbered.i, 3) % 100 < 78 then 3
            when hash(numbered.i, 3) % 100 < 90 then 4
            else 5
        end as stage_index
    from numbered
)
select * from final
"""


def generate(path: Path, n_events: int, n_journeys: int) -> None:
    """Write the deterministic sample to `path` (aside, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    con = connect(threads=2, temp_directory=HERE / "out" / "tmp")
    # COPY cannot take its target as a bound parameter; the path is ours, not config text.
    target = str(tmp).replace("'", "''")
    execute(
        con,
        f"copy ({GENERATE_SQL}) to '{target}' (format parquet, row_group_size 1000000)",
        {"n_events": n_events, "n_journeys": n_journeys, "span_us": 30 * 24 * 3600 * 1_000_000},
    )
    con.close()
    tmp.rename(path)


def run_ours(path: Path, threads: int, options: tuple[str, ...]) -> tuple[float, float, dict[int, int]]:
    """(load seconds, build seconds, journeys per furthest stage)."""
    con = connect(threads=threads, temp_directory=HERE / "out" / "tmp")
    t0 = time.perf_counter()
    execute(
        con,
        "create table int_stage_events as select stage_model, journey_id, journey_key, occurred_at, event_id,"
        " cast(stage_index as integer) as stage_index, cast(null as varchar) as hold_value"
        " from read_parquet($path)",
        {"path": str(path)},
    )
    t1 = time.perf_counter()
    spec = FunnelSpec(
        "m",
        K,
        ("ordered",),
        WINDOW_US,
        strict_increase="strict_increase" in options,
        strict_deduplication="strict_deduplication" in options,
    )
    build_stage_reached(con, [spec])
    t2 = time.perf_counter()
    hist = dict(
        fetch(
            con,
            "select furthest, count(*) from (select journey_id, max(stage_index) as furthest"
            " from int_journey_stage_reached group by journey_id) group by furthest",
        )
    )
    con.close()
    return t1 - t0, t2 - t1, hist


def run_chdb(path: Path, threads: int, options: tuple[str, ...], key: str) -> tuple[float, dict[int, int]]:
    """(seconds, journeys per furthest stage) for windowFunnel straight from the Parquet file."""
    conds = ", ".join(f"stage_index = {i}" for i in range(1, K + 1))
    params = "".join(f", '{o}'" for o in options)
    sql = (
        "select furthest, count() as n from ("
        f" select {key}, windowFunnel({WINDOW_US}{params})(toUInt64(toUnixTimestamp64Micro(occurred_at)),"
        f" {conds}) as furthest"
        f" from file('{path}', Parquet) group by {key}"
        f") where furthest > 0 group by furthest settings max_threads = {threads}"
    )
    t0 = time.perf_counter()
    result = chdb.query(sql, "ArrowTable")
    elapsed = time.perf_counter() - t0
    return elapsed, dict(zip(result.column("furthest").to_pylist(), result.column("n").to_pylist(), strict=True))


def main(argv: list[str] | None = None) -> int:
    """Generate (once), run both engines, print times and their ratio."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--journeys", type=int, default=None, help="default: events / 10")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="runs per engine; the fastest counts")
    ap.add_argument("--option", action="append", default=[], choices=["strict_increase", "strict_deduplication"])
    args = ap.parse_args(argv)
    options = tuple(args.option)
    n_journeys = args.journeys or max(1, args.events // 10)

    path = HERE / "out" / f"funnel_events_keyed_{args.events}_{n_journeys}.parquet"
    if not path.exists():
        t0 = time.perf_counter()
        generate(path, args.events, n_journeys)
        print(f"generated {args.events:,} events / {n_journeys:,} journeys in {time.perf_counter() - t0:.1f}s")

    # Alternate the engines so that a busy machine slows both alike; keep each one's best run.
    load_s = ours_s = chdb_s = chdb_str_s = float("inf")
    for _ in range(max(1, args.repeat)):
        load, ours, ours_hist = run_ours(path, args.threads, options)
        load_s, ours_s = min(load_s, load), min(ours_s, ours)
        theirs, chdb_hist = run_chdb(path, args.threads, options, "journey_key")
        chdb_s = min(chdb_s, theirs)
        theirs, chdb_str_hist = run_chdb(path, args.threads, options, "journey_id")
        chdb_str_s = min(chdb_str_s, theirs)
    print(
        f"events={args.events:,} journeys={n_journeys:,} k={K} window_us={WINDOW_US} threads={args.threads}"
        f" options={list(options)}"
    )
    print(f"ours  build_stage_reached:         {ours_s:.2f}s (plus {load_s:.2f}s loading Parquet into DuckDB)")
    print(f"chdb  windowFunnel by journey_key: {chdb_s:.2f}s (reading Parquet included)")
    print(f"chdb  windowFunnel by journey_id:  {chdb_str_s:.2f}s (reading Parquet included)")
    print(
        f"ratio ours/chdb(journey_key): {ours_s / chdb_s:.2f}x (load+build: {(load_s + ours_s) / chdb_s:.2f}x);"
        f" ours/chdb(journey_id): {ours_s / chdb_str_s:.2f}x"
    )
    print(f"journeys by furthest stage: {dict(sorted(ours_hist.items()))}")
    if chdb_str_hist != chdb_hist:
        print(f"MISMATCH between chdb keys: {dict(sorted(chdb_str_hist.items()))}", file=sys.stderr)
        return 1
    if ours_hist != chdb_hist:
        print(f"MISMATCH with chdb: {dict(sorted(chdb_hist.items()))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
