"""The journey map's share of the marts step: `python benchmarks/bench_map.py --events 1000000`.

Generates a sample (cached under benchmarks/out/ like run.py), ingests it and builds everything up to the
marts, then times the build-marts step's nodes twice: the journey-map nodes (int_map_events and the map
marts) and the rest. The extended stage_channel_matrix and journey_stages' conformance score count as
"rest" (they existed before), so the map's share is if anything understated by their extra columns.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MAP_NODES = (
    "int_map_events",
    "channel_transitions",
    "touchpoint_performance",
    "handoffs",
    "red_points",
    "journey_paths",
    "stage_neighbours",
    "journey_gaps",
    "alerts",
)
"""The nodes of the journey map (issue 10): its intermediate, its marts, and the goals' alerts built on them."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--memory-limit", default="4GB")
    ap.add_argument("--database", help="keep the built tables in this DuckDB file (default: in memory)")
    args = ap.parse_args(argv)

    from sample import cached_sample

    from journeys import build, db
    from journeys.config import load_settings
    from journeys.ingest import ingest_sources

    spec, cache = cached_sample(args.events, args.seed)
    root = HERE / "out" / "map-run"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    shutil.copytree(cache / "landing", root / "landing")

    settings = load_settings(REPO / "journeys.yaml", data_root=root, memory_limit=args.memory_limit)
    context = build.run_context(settings, spec.as_of, "bench-map")
    ingest_sources(settings, as_of=spec.as_of, batch_id="bench-map")
    marts = [n for s in context.catalog.steps() if s.name == "build-marts" for n in s.nodes]
    with db.connect(args.database) if args.database else db.connect() as con:
        for step in context.catalog.steps():
            if step.name != "build-marts":
                build.build_step(con, context, step)
        # int_map_events is built in stitch-journeys; rebuild it here so its time counts for the map
        rest = [n for n in marts if n not in MAP_NODES]
        t0 = time.perf_counter()
        build.build_models(con, context, rest)
        rest_s = time.perf_counter() - t0
        node_s = {}
        for node in context.catalog.order(MAP_NODES):
            t0 = time.perf_counter()
            build.build_models(con, context, [node])
            node_s[node] = round(time.perf_counter() - t0, 2)
        map_s = sum(node_s.values())
    print(
        json.dumps(
            {
                "events": args.events,
                "marts_without_map_s": round(rest_s, 2),
                "map_s": round(map_s, 2),
                "map_share_of_marts_without_map": round(map_s / rest_s, 3),
                "map_nodes_s": node_s,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
