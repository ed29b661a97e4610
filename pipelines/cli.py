"""The `journeys` command: demo, run, generate, query."""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = "journeys.yaml"


def _as_of(text: str | None) -> datetime | None:
    if text is None:
        return None
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _table(rows: list[tuple], headers: list[str]) -> str:
    cells = [
        [
            ("" if v is None else f"{v:.1%}" if isinstance(v, float) and h.endswith("%") else str(v))
            for v, h in zip(r, headers, strict=True)
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


def print_summary(result: dict[str, Any], warehouse: str) -> None:
    """Print row accounting, the primary funnel, the top dropout points and where every output is."""
    from journeys import db

    ing = result["ingest"]
    print(f"\nrun {result['batch_id']} as of {result['as_of']}")
    print(
        f"rows: read={ing['read']} = loaded {ing['loaded']} + quarantined {ing['quarantined']}"
        f" + duplicates {ing['duplicates']}  ({ing['files']} files, {ing['files_skipped']} unchanged)"
    )
    idn = result["identity"]
    print(
        f"identity: {idn.get('n_customers')} customers from {idn.get('n_identifiers')} identifiers "
        f"in {idn.get('passes')} passes; {idn.get('n_shared_identifiers')} shared identifiers held back"
    )
    with db.connect(warehouse, read_only=True) as con:
        model, mode = db.fetch(con, "select stage_model, mode from journeys limit 1")[0] or (None, None)
        rows = db.fetch(
            con,
            "select stage_index, stage_name, journeys_entered, journeys_converted, conversion_rate,"
            " conversion_from_start, journeys_dropped, journeys_in_progress,"
            " round(median_time_to_next_s / 86400, 1)"
            " from stage_conversion where stage_model = $m and mode = $mode and cohort = 'all'"
            " and breakdown = 'none' order by stage_index",
            {"m": model, "mode": mode},
        )
        print(f"\nstage funnel: {model} ({mode}), all cohorts")
        print(
            _table(
                rows,
                [
                    "#",
                    "stage",
                    "entered",
                    "converted",
                    "conv %",
                    "from start %",
                    "dropped",
                    "in progress",
                    "median days to next",
                ],
            )
        )
        red = db.fetch(
            con,
            "select stage_name, last_touchpoint, last_channel, journeys_dropped, share_of_stage_dropouts, owner,"
            " round(mean_last_known_sentiment, 2) from stage_dropout where stage_model = $m and mode = $mode"
            " order by journeys_dropped desc, stage_index, last_touchpoint limit 8",
            {"m": model, "mode": mode},
        )
        print("\nwhere customers are lost (closed journeys, top dropout points)")
        print(
            _table(
                red, ["stage", "last touchpoint", "channel", "journeys", "share of stage %", "owner", "last sentiment"]
            )
        )
        print_journey_map(con, model)
    print("\noutputs")
    for name, path in sorted(result["outputs"].items()):
        print(f"  {name:22s} {path}")
    print(f"  {'quality report':22s} {result['quality']['report']}")
    print(f'\nquery it: journeys query "select * from stage_conversion limit 5" --warehouse {warehouse}')


def print_journey_map(con: Any, model: str) -> None:
    """Print the CxC matrix of `model` (channels x stages: customers and flow to the next stage) and its red points."""
    from journeys import db

    stages = db.fetch(
        con,
        "select stage_index, stage_name from stage_definitions where stage_model = $m order by stage_index",
        {"m": model},
    )
    cells = db.fetch(
        con,
        "select channel, stage_index, customers_in_cell, flow_rate from stage_channel_matrix"
        " where stage_model = $m order by channel, stage_index",
        {"m": model},
    )
    by_channel: dict[str, dict[int, str]] = {}
    for channel, stage_index, customers, flow in cells:
        by_channel.setdefault(channel, {})[stage_index] = str(customers) + ("" if flow is None else f" ({flow:.0%})")
    print(f"\nCxC matrix: {model}, customers per channel and stage (flow % to the next stage)")
    print(
        _table(
            [(channel, *(row.get(i, "") for i, _ in stages)) for channel, row in sorted(by_channel.items())],
            ["channel", *(name for _, name in stages)],
        )
    )
    red = db.fetch(
        con,
        "select red_rank, stage_name, unit_type, unit, owner, metric, n, share, stage_share, round(lift, 2),"
        " round(excess_over_norm, 1) from red_points where stage_model = $m order by red_rank limit 5",
        {"m": model},
    )
    print("\nred points (significantly above their stage's dropout or negative-sentiment share)")
    if red:
        print(
            _table(
                red,
                [
                    "#",
                    "stage",
                    "unit",
                    "touchpoint / channel",
                    "owner",
                    "metric",
                    "n",
                    "share %",
                    "stage %",
                    "lift",
                    "above norm",
                ],
            )
        )
    else:
        print("  none")


def cmd_generate(args: argparse.Namespace) -> int:
    from journeys.generate import GenerateSpec, generate_sample

    spec = GenerateSpec(events=args.events, seed=args.seed, plant_fault=args.plant_fault)
    res = generate_sample(spec, Path(args.data_root))
    print(
        f"generated {res.n_true_events} events of {res.n_persons} persons (+{res.n_duplicates} duplicates, "
        f"+{res.n_malformed} malformed rows) in {len(res.files)} files under {res.landing_dir}"
    )
    print(f"ground truth: {res.truth_dir}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from journeys.config import load_settings
    from pipelines.nightly import nightly

    result = nightly(config_path=args.config, as_of=_as_of(args.as_of), data_root=args.data_root)
    settings = load_settings(args.config, data_root=args.data_root)
    print_summary(result, str(settings.warehouse_path))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from journeys.config import load_settings
    from journeys.generate import GenerateSpec, generate_sample
    from pipelines.nightly import nightly

    settings = load_settings(args.config)
    root = settings.root
    if root.exists():
        shutil.rmtree(root)
    spec = GenerateSpec(events=args.events, seed=args.seed, plant_fault=args.plant_fault)
    res = generate_sample(spec, root)
    print(
        f"generated {res.n_true_events} events of {res.n_persons} persons across "
        f"{len({p.parent.name for p in res.files})} sources under {res.landing_dir}"
    )
    result = nightly(config_path=args.config, as_of=spec.as_of)
    print_summary(result, str(settings.warehouse_path))
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from journeys import db
    from journeys.config import load_settings

    path = args.warehouse or str(load_settings(args.config).warehouse_path)
    with db.connect(path, read_only=True) as con:
        rel = con.sql(args.sql)
        if rel is not None:
            rel.show(max_rows=args.max_rows)
    return 0


def cmd_evaluate_identity(args: argparse.Namespace) -> int:
    from journeys.config import load_settings
    from journeys.evaluate import evaluate_identity

    settings = load_settings(args.config, data_root=args.data_root)
    truth = Path(args.truth) if args.truth else settings.root / "truth"
    scores = evaluate_identity(settings, truth)
    keys = ["precision", "recall", "f1", "persons_fused", "persons_split", "n_customers", "n_persons", "passes"]
    rows = [
        (label, *(round(v, 5) if isinstance(v, float) else v for v in (s.get(k) for k in keys)))
        for label, s in scores.items()
    ]
    print(_table(rows, ["resolution", *keys]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = argparse.ArgumentParser(prog="journeys", description=__doc__)
    p.add_argument("--config", default=DEFAULT_CONFIG, help="project config file (default: journeys.yaml)")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="generate a realistic sample, run the nightly flow, print the funnel")
    d.add_argument("--events", type=int, default=50_000)
    d.add_argument("--seed", type=int, default=42)
    d.add_argument("--plant-fault", action="store_true", help="generate the sample with a planted red point")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("run", help="run the nightly flow on the configured data root")
    r.add_argument("--as-of", help="ISO time the run is as of (default: now, UTC)")
    r.add_argument("--data-root", help="override the config's data root")
    r.set_defaults(func=cmd_run)

    g = sub.add_parser("generate", help="write synthetic landing files with ground truth")
    g.add_argument("--events", type=int, default=100_000)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--data-root", required=True)
    g.add_argument(
        "--plant-fault",
        action="store_true",
        help="plant a red point: product-question calls at consideration lose most journeys, with low CSAT",
    )
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("evaluate-identity", help="score identity resolution on the lake against ground truth")
    e.add_argument("--data-root", help="override the config's data root")
    e.add_argument("--truth", help="folder with the generator's events.parquet (default: <data root>/truth)")
    e.set_defaults(func=cmd_evaluate_identity)

    q = sub.add_parser("query", help="run SQL against the warehouse (read-only)")
    q.add_argument("sql")
    q.add_argument("--warehouse", help="path of journeys.duckdb (default: from the config)")
    q.add_argument("--max-rows", type=int, default=40)
    q.set_defaults(func=cmd_query)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `journeys` command."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
