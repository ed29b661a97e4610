"""The `journeys` command: demo, run, reset, generate, query, report, docs, analyst-db, serve, backfill."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO

DEFAULT_CONFIG = "journeys.yaml"
DEMO_FOLDER = "data/demo"
DEMO_MARKER = ".journeys-demo"
"""File that marks a folder as the demo's own: the only kind of folder `journeys demo` ever deletes."""

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "journeys.yaml"
"""The demo's config (its sources match what `journeys generate` writes), beside the `pipelines` package."""


EXAMPLES: dict[str, list[str]] = {
    "demo": ["journeys demo", "journeys demo --events 200000 --plant-fault"],
    "run": [
        "journeys run",
        "journeys run --as-of 2026-11-01T02:00:00+00:00 --config prod.yaml",
        "journeys run --full-refresh --data-root /data/journeys",
        "journeys run --executor dask --dask-address tcp://scheduler:8786",
    ],
    "reset": ["journeys reset --config journeys.yaml && journeys run"],
    "generate": ["journeys generate --events 1000000 --data-root data/sample"],
    "evaluate-identity": ["journeys evaluate-identity --data-root data/sample"],
    "report": ["journeys report --data-root data/demo"],
    "docs": ["journeys docs --warehouse data/demo/warehouse/journeys.duckdb --out docs/tables.md"],
    "query": [
        'journeys query "select * from stage_funnel order by all"',
        'journeys query "select * from journeys" --format parquet --out journeys.parquet',
    ],
    "analyst-db": [
        "journeys analyst-db",
        'journeys analyst-db --sql "create view busy as select * from warehouse.customers where n_events > 50"',
    ],
    "serve": ["prefect server start  # in another terminal", "journeys serve --config journeys.yaml"],
    "backfill": ["journeys backfill --from 2026-11-01 --to 2026-11-07 --dry-run"],
}
"""Example command lines shown under each subcommand's --help."""


class UsageError(Exception):
    """A command line that cannot be carried out as given (exit status 2, one line, no traceback)."""


def _executor_options(args: argparse.Namespace) -> dict[str, Any]:
    """`run`'s --executor, --dask-address and --dask-workers that were given (they override the config)."""
    names = ("executor", "dask_address", "dask_workers")
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def _settings(args: argparse.Namespace, *, must_exist: bool = True) -> Any:
    """The config of a command (file, env, --data-root), with a data root that exists."""
    from journeys.config import load_settings

    data_root = getattr(args, "data_root", None)
    if data_root is not None and not Path(data_root).is_dir():
        raise UsageError(f"--data-root {data_root}: no such folder")
    settings = load_settings(args.config, data_root=data_root, **_executor_options(args))
    if must_exist and not settings.root.is_dir():
        raise UsageError(
            f"{args.config}: data_root: {settings.root} does not exist; put the landing files under"
            f" {settings.landing_dir}/ or point data_root (or --data-root) at the folder that holds them"
        )
    return settings


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


SOURCE_REFUSED = 3
"""Exit status of a run that published but refused every new file of a source: a scheduler's alarm."""


def run_status(result: dict[str, Any]) -> int:
    """Exit status of a finished run: SOURCE_REFUSED when a source had every new file refused, else 0."""
    # The rest of the batch is published (a bad file blocks only itself), but a source that delivered nothing
    # usable is most likely a wrong mapping: a zero status would let a cron job or CI step pass over it.
    return SOURCE_REFUSED if result["ingest"].get("sources_refused") else 0


def print_summary(result: dict[str, Any], warehouse: str) -> None:
    """Print row accounting, the primary funnel, the top dropout points, the journey map, alerts and outputs."""
    from journeys import db

    ing = result["ingest"]
    print(f"\nrun {result['batch_id']} as of {result['as_of']}")
    print(
        f"rows: read={ing['read']} = loaded {ing['loaded']} + quarantined {ing['quarantined']}"
        f" + duplicates {ing['duplicates']} + held back {ing.get('held', 0)}"
        f"  ({ing['files']} files, {ing['files_skipped']} unchanged)"
        + (
            f"; {ing['events']} events from the loaded rows"
            if ing.get("events", ing["loaded"]) != ing["loaded"]
            else ""
        )
        + (f"; {ing['blank']} blank rows skipped" if ing.get("blank") else "")
        + (f"; {ing['filtered']} rows left out by keep_rows" if ing.get("filtered") else "")
        + (f"; {ing['replaced']} rows of earlier versions of changed files replaced" if ing.get("replaced") else "")
    )
    print_held(ing.get("released", 0), ing.get("still_held", 0))
    # A refused file blocks only itself, so the run is green: this line is where its owner learns of it.
    for file, why in ing.get("files_refused", {}).items():
        print(f"refused landing file {file}: {why}; nothing of it loaded until it is replaced or removed")
    for name in ing.get("sources_refused", []):
        print(
            f"source {name!r}: EVERY new landing file was refused, nothing of {name!r} loaded in this run;"
            f" its mapping probably does not fit its files (exit status {SOURCE_REFUSED})"
        )
    plan = result.get("build") or {}
    if plan:
        affected = result.get("steps", {}).get("build-marts", {}).get("incremental", {}).get("affected_customers")
        extra = f", {affected} customers rebuilt" if affected is not None else ""
        print(f"build: {plan['mode']} ({plan['reason']}{extra})")
    fanned = result.get("steps", {}).get("build-buckets")
    if fanned:
        print(f"dask: per-customer models built as {fanned['groups']} tasks of the {fanned['buckets']} buckets")
    idn = result["identity"]
    print(
        f"identity: {idn.get('n_customers')} customers from {idn.get('n_identifiers')} identifiers "
        f"in {idn.get('passes')} passes; {idn.get('n_shared_identifiers')} shared identifiers held back"
        # An incremental run's identity is incremental too, or says why it resolved the whole lake.
        + (f" ({idn['resolution']}: {idn['resolution_reason']})" if idn.get("resolution_reason") else "")
    )
    with db.connect(warehouse, read_only=True) as con:
        model, mode = db.fetch(con, "select stage_model, mode from journeys limit 1")[0] or (None, None)
        rows = db.fetch(
            con,
            "select stage_index, stage_name, journeys_entered, journeys_converted, conversion_rate,"
            " conversion_from_start, journeys_dropped, journeys_in_progress, journeys_overdue,"
            " round(median_time_to_next_s / 86400, 1)"
            " from stage_funnel where stage_model = $m and mode = $mode order by stage_index",
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
                    "overdue",
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
        print_alerts(con)
    print("\noutputs")
    for name, path in sorted(result["outputs"].items()):
        print(f"  {name:22s} {path}")
    print(f"  {'quality report':22s} {result['quality']['report']}")
    if result["quality"].get("data_docs"):
        print(f"  {'Data Docs':22s} {Path(result['quality']['report']).parent / result['quality']['data_docs']}")
    if result.get("report"):
        print(f"  {'HTML report':22s} {result['report']['latest']}")
    print(f'\nquery it: journeys query "select * from stage_funnel order by all" --warehouse {warehouse}')


def print_held(released: int, still_held: int) -> None:
    """Print what happened to rows held back for being later than a run's as_of (nothing when there are none)."""
    if released or still_held:
        print(
            f"held back: {released} earlier held rows loaded now; {still_held} rows later than as_of + max_future"
            " wait in state/held/ for a run whose as_of passes them"
        )


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


def print_alerts(con: Any) -> None:
    """Print the goals the run missed (`alerts`) with the previous run's value, or that none was missed."""
    from journeys import db

    rows = db.fetch(
        con,
        "select goal_name, stage_model, stage_name, coalesce(channel, touchpoint, mode), metric,"
        " direction || ' ' || round(threshold, 3), status, round(metric_value, 3), round(previous_value, 3), owner"
        " from alerts order by stage_model, stage_index, goal_name",
    )
    print("\nalerts: goals missed (`goals` in the config; previous = the last published run)")
    if rows:
        print(
            _table(
                rows, ["goal", "stage model", "stage", "unit", "metric", "target", "status", "now", "previous", "owner"]
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
    # Config and data root are checked here, before Prefect (and its server) starts.
    settings = _settings(args)
    as_of = _as_of(args.as_of)
    from journeys import progress
    from journeys.quality import load_suites
    from pipelines.nightly import nightly

    load_suites(settings)  # a suite file GX cannot read: exit status 2, naming the file and the expectation

    with progress.shown():
        result = nightly(
            config_path=args.config,
            as_of=as_of,
            data_root=args.data_root,
            full_refresh=args.full_refresh,
            **_executor_options(args),
        )
    print_summary(result, str(settings.warehouse_path))
    return run_status(result)


def cmd_reset(args: argparse.Namespace) -> int:
    import uuid

    from journeys import progress, reset

    settings = _settings(args)
    as_of = _as_of(args.as_of) or datetime.now(UTC)
    batch_id = f"{as_of.astimezone(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    print(f"re-ingesting every landing file under {settings.landing_dir} as of {as_of.isoformat()} (batch {batch_id})")
    with progress.shown():
        report = reset.reset_lake(settings, as_of=as_of, batch_id=batch_id)
    print(
        f"rows: read={report.read} = loaded {report.loaded} + quarantined {report.quarantined}"
        f" + duplicates {report.duplicates} + held back {report.held}  ({len(report.files)} files)"
        + (f"; {report.blank} blank rows skipped" if report.blank else "")
    )
    print_held(0, report.still_held)
    print(
        f"the lake of {settings.root} is rebuilt; the published marts and warehouse are unchanged until the next"
        " `journeys run`"
    )
    return 0


def _configured_root(config: str) -> Path | None:
    """The data root of the user's config (file and env) if it loads; None for none or the demo's own."""
    from journeys.config import ConfigError, load_settings

    if not Path(config).is_file() or Path(config).resolve() == DEMO_CONFIG:
        return None
    try:
        return load_settings(config).root
    except ConfigError:
        return None


def demo_folder(path: str | Path, configured_root: Path | None = None) -> Path:
    """The demo's folder, emptied for a new demo: created here, or one an earlier demo marked as its own."""
    folder = Path(path).resolve()
    if configured_root is not None:
        root = configured_root.resolve()
        overlaps = folder == root or root in folder.parents or folder in root.parents
        if overlaps and not (folder == root and (folder / DEMO_MARKER).is_file()):
            raise UsageError(
                f"--folder {path}: {folder} overlaps the data root {root} of the config; the demo never writes"
                " into a configured data root: pass another --folder"
            )
    if folder.exists():
        if not (folder / DEMO_MARKER).is_file():
            if not folder.is_dir() or any(folder.iterdir()):
                raise UsageError(
                    f"--folder {path}: {folder} exists and was not made by `journeys demo` (no {DEMO_MARKER});"
                    " the demo never deletes or writes into it: pass another --folder (or delete it yourself if"
                    " it is the output of an older demo)"
                )
        else:
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DEMO_MARKER).write_text(
        "Made by `journeys demo`: the next demo deletes and rebuilds this folder. Remove this file to keep it.\n",
        encoding="utf-8",
    )
    return folder


def cmd_demo(args: argparse.Namespace) -> int:
    from journeys.config import load_settings
    from journeys.generate import GenerateSpec, generate_sample

    # The demo runs the shipped demo config on its own folder: never a config or data root of the user's.
    if not DEMO_CONFIG.is_file():
        raise UsageError(f"the demo config {DEMO_CONFIG} is missing: run the demo from a checkout of journeys")
    config = str(DEMO_CONFIG)
    load_settings(config)
    root = demo_folder(args.folder, _configured_root(args.config))
    settings = load_settings(config, data_root=root)
    spec = GenerateSpec(events=args.events, seed=args.seed, plant_fault=args.plant_fault)
    res = generate_sample(spec, root)
    print(
        f"generated {res.n_true_events} events of {res.n_persons} persons across "
        f"{len({p.parent.name for p in res.files})} sources under {res.landing_dir}"
    )
    from journeys import progress
    from pipelines.nightly import nightly

    with progress.shown():
        result = nightly(config_path=config, as_of=spec.as_of, data_root=str(root))
    print_summary(result, str(settings.warehouse_path))
    return run_status(result)


def cmd_query(args: argparse.Namespace) -> int:
    from journeys import db

    if args.format == "parquet" and not args.out:
        print("--format parquet needs --out FILE", file=sys.stderr)
        return 2
    path = args.warehouse or str(_settings(args).warehouse_path)
    with db.connect(path, read_only=True) as con:
        rel = con.sql(args.sql)
        if rel is None:
            return 0
        if args.format == "table":
            rel.show(max_rows=args.max_rows)
        elif args.format == "parquet":
            rel.write_parquet(args.out)
        elif args.format == "csv" and args.out:
            rel.write_csv(args.out, header=True)
        else:
            with open(args.out, "w", encoding="utf-8", newline="") if args.out else _stdout() as out:
                _write_rows(rel, args.format, out)
    return 0


@contextlib.contextmanager
def _stdout() -> Iterator[TextIO]:
    yield sys.stdout


def _write_rows(rel: Any, fmt: str, out: TextIO, batch: int = 10_000) -> None:
    """Stream a result as CSV (header first) or JSON lines (one object per row), batch by batch."""
    columns = list(rel.columns)
    writer = csv.writer(out) if fmt == "csv" else None
    if writer is not None:
        writer.writerow(columns)
    for record_batch in rel.to_arrow_reader(batch):
        for row in record_batch.to_pylist():
            if writer is not None:
                writer.writerow(["" if row[c] is None else row[c] for c in columns])
            else:
                # Dates, decimals and the like as their text; counts stay numbers (BIGINT fits JSON).
                out.write(json.dumps(row, default=str) + "\n")


def cmd_report(args: argparse.Namespace) -> int:
    from journeys.report import write_report

    settings = _settings(args)
    if not settings.warehouse_path.exists():
        print(f"no published warehouse at {settings.warehouse_path}: run `journeys run` first", file=sys.stderr)
        return 1
    result = write_report(settings)
    print(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, {result.charts} charts, {result.seconds:.1f} s)")
    print(f"latest: {result.latest}")
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from journeys import db, dictionary, models

    settings = _settings(args, must_exist=args.warehouse is None)
    path = args.warehouse or str(settings.warehouse_path)
    with db.connect(path, read_only=True) as con:
        text = dictionary.tables_markdown(con, models.load_catalog(settings.models_path))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} from the catalog and {path}")
    return 0


def cmd_analyst_db(args: argparse.Namespace) -> int:
    from journeys import db, publish

    settings = _settings(args)
    warehouse = settings.warehouse_path
    if not warehouse.is_file():
        raise UsageError(f"no published warehouse at {warehouse} yet: run the nightly flow first")
    path = Path(args.path).resolve() if args.path else publish.analyst_db_path(settings)
    if path == warehouse.resolve() or path.parent == warehouse.parent:
        raise UsageError(f"--path {args.path}: keep the analysts' database out of {warehouse.parent}")
    with publish.open_analyst_db(
        path, warehouse, memory_limit=settings.memory_limit, threads=settings.threads, temp_directory=settings.tmp_dir
    ) as con:
        for sql in args.sql or []:
            rel = con.sql(sql)
            if rel is not None:
                rel.show(max_rows=args.max_rows)
    if not args.sql:
        attach = f"ATTACH {db.quote_literal(str(warehouse))} AS {publish.WAREHOUSE_ALIAS} (READ_ONLY);"
        print(f"analysts' database: {path} (your views and tables; no run writes to it)")
        print(f"published warehouse, attached read-only as `{publish.WAREHOUSE_ALIAS}`: {warehouse}")
        print(f"in any DuckDB client, open {path} and run first: {attach}")
    return 0


def cmd_evaluate_identity(args: argparse.Namespace) -> int:
    from journeys.evaluate import evaluate_identity

    settings = _settings(args)
    truth = Path(args.truth) if args.truth else settings.root / "truth"
    scores = evaluate_identity(settings, truth)
    keys = ["precision", "recall", "f1", "persons_fused", "persons_split", "n_customers", "n_persons", "passes"]
    rows = [
        (label, *(round(v, 5) if isinstance(v, float) else v for v in (s.get(k) for k in keys)))
        for label, s in scores.items()
    ]
    print(_table(rows, ["resolution", *keys]))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pipelines.schedule import serve

    serve(args.config, data_root=args.data_root)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from journeys import progress
    from journeys.config import load_settings
    from pipelines.schedule import scheduled_nights, timed_nightly

    settings = load_settings(args.config, data_root=args.data_root)
    nights = scheduled_nights(settings, date.fromisoformat(args.first), date.fromisoformat(args.last))
    sched = settings.schedule
    print(f"{len(nights)} scheduled night(s) of '{sched.cron}' ({sched.timezone}), oldest first")
    flow = timed_nightly(settings)
    for i, as_of in enumerate(nights, 1):
        print(f"[{i}/{len(nights)}] as of {as_of.isoformat()}")
        if args.dry_run:
            continue
        # A failed night stops the backfill: later nights must not be built on top of a gap.
        with progress.shown():
            result = flow(config_path=args.config, as_of=as_of, data_root=args.data_root)
        ing = result["ingest"]
        print(f"  loaded {ing['loaded']}, quarantined {ing['quarantined']}, duplicates {ing['duplicates']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = argparse.ArgumentParser(prog="journeys", description=__doc__)
    p.add_argument("--config", default=DEFAULT_CONFIG, help="project config file (default: journeys.yaml)")
    # --config is accepted after the subcommand too (`journeys run --config x.yaml`, as the README writes
    # it); SUPPRESS keeps a value given before the subcommand when it is not repeated after it.
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", default=argparse.SUPPRESS, help="project config file (default: journeys.yaml)")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="generate a realistic sample in its own folder, run the nightly flow")
    d.add_argument(
        "--events", type=int, default=50_000, help="events to generate (default: 50000), e.g. --events 200000"
    )
    d.add_argument("--seed", type=int, default=42, help="random seed of the sample (default: 42): same seed, same data")
    d.add_argument(
        "--folder",
        default=DEMO_FOLDER,
        help=f"the demo's own folder (default: {DEMO_FOLDER}); deleted and rebuilt only if it holds {DEMO_MARKER}",
    )
    d.add_argument("--plant-fault", action="store_true", help="generate the sample with a planted red point")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser(
        "run",
        parents=[config],
        help="run the nightly flow on the configured data root",
        description="Run the nightly flow on the configured data root.\n\nexit status: 0 published; 1 the run"
        " stopped (nothing to publish,\na failed quality check, the run lock); 2 the config or command line;"
        f" {SOURCE_REFUSED} published,\nbut every new landing file of some source was refused (its mapping?)",
    )
    r.add_argument("--as-of", help="ISO time the run is as of (default: now, UTC)")
    r.add_argument("--data-root", help="override the config's data root")
    r.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild every table from the lake instead of only the customers with new or changed events",
    )
    r.add_argument(
        "--executor",
        choices=("local", "dask"),
        help="where the per-customer models are built (default: the config's executor, local)",
    )
    r.add_argument("--dask-address", help="scheduler of an existing Dask cluster, e.g. tcp://host:8786 (executor dask)")
    r.add_argument(
        "--dask-workers", type=int, help="worker processes of the local Dask cluster (executor dask; default 2)"
    )
    r.set_defaults(func=cmd_run)

    rs = sub.add_parser(
        "reset",
        parents=[config],
        help="re-ingest every landing file from scratch (after a mapping fix): a new lake, quarantine and manifest"
        " are built beside the old ones under the run lock and swapped in; landing files, marts, warehouse and"
        " identity state are kept; then `journeys run`",
    )
    rs.add_argument(
        "--as-of",
        help="ISO time: rows later than it plus quality.max_future are held back (default: now); give the as-of"
        " of the next run, whose checks reject lake events later than its own as-of plus max_future",
    )
    rs.add_argument("--data-root", help="override the config's data root")
    rs.set_defaults(func=cmd_reset)

    g = sub.add_parser("generate", help="write synthetic landing files with ground truth")
    g.add_argument(
        "--events", type=int, default=100_000, help="events to generate (default: 100000), e.g. --events 1000000"
    )
    g.add_argument("--seed", type=int, default=42, help="random seed (default: 42): same seed, same files")
    g.add_argument(
        "--data-root", required=True, help="folder to write landing/ and truth/ under, e.g. --data-root data/sample"
    )
    g.add_argument(
        "--plant-fault",
        action="store_true",
        help="plant a red point: product-question calls at consideration lose most journeys, with low CSAT",
    )
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser(
        "evaluate-identity", parents=[config], help="score identity resolution on the lake against ground truth"
    )
    e.add_argument("--data-root", help="override the config's data root")
    e.add_argument("--truth", help="folder with the generator's events.parquet (default: <data root>/truth)")
    e.set_defaults(func=cmd_evaluate_identity)

    rp = sub.add_parser(
        "report",
        parents=[config],
        help="write the HTML report of the last published run to reports/journeys-<batch>.html and"
        " reports/journeys.html (e.g. `journeys report --data-root data/demo`)",
    )
    rp.add_argument("--data-root", help="override the config's data root")
    rp.set_defaults(func=cmd_report)

    dc = sub.add_parser(
        "docs",
        parents=[config],
        help="write the data dictionary (every kept table: grain, column, type, meaning) from the catalog and a"
        " published warehouse's types (e.g. `make demo` then `journeys docs`)",
    )
    dc.add_argument("--warehouse", help="path of journeys.duckdb to read the types from (default: from the config)")
    dc.add_argument("--out", default="docs/tables.md", help="where to write it (default: docs/tables.md)")
    dc.set_defaults(func=cmd_docs)

    q = sub.add_parser(
        "query",
        parents=[config],
        help="run SQL against the warehouse (read-only), e.g. "
        '`journeys query "select * from stage_funnel order by all" --format csv --out funnel.csv`',
    )
    q.add_argument("sql", help='one SQL statement, e.g. "select * from stage_funnel order by all"')
    q.add_argument("--warehouse", help="path of journeys.duckdb (default: from the config)")
    q.add_argument("--max-rows", type=int, default=40, help="rows shown by --format table (default: 40)")
    q.add_argument(
        "--format",
        choices=["table", "csv", "json", "parquet"],
        default="table",
        help="table (default, shortened to --max-rows), csv (with a header), json (JSON lines, one object per"
        " row) or parquet (needs --out); csv and json print every row to stdout unless --out is given",
    )
    q.add_argument("--out", help="file to write the result to, e.g. --out funnel.parquet")
    q.set_defaults(func=cmd_query)

    a = sub.add_parser(
        "analyst-db",
        parents=[config],
        help="create or open the analysts' DuckDB file (their own views and tables) with the warehouse attached",
    )
    a.add_argument("--path", help="the analysts' database (default: <data root>/analysts/analysts.duckdb)")
    a.add_argument("--data-root", help="override the config's data root")
    a.add_argument("--sql", action="append", help="a statement to run in it (repeatable); without: how to open it")
    a.add_argument("--max-rows", type=int, default=40, help="rows shown per statement (default: 40)")
    a.set_defaults(func=cmd_analyst_db)

    s = sub.add_parser(
        "serve", parents=[config], help="register the scheduled deployment (config `schedule`) and run its flow runs"
    )
    s.add_argument("--data-root", help="override the config's data root")
    s.set_defaults(func=cmd_serve)

    b = sub.add_parser(
        "backfill", parents=[config], help="run the flow once per scheduled night in a date range, oldest first"
    )
    b.add_argument("--from", dest="first", required=True, help="first day (YYYY-MM-DD, in the schedule's zone)")
    b.add_argument("--to", dest="last", required=True, help="last day, inclusive")
    b.add_argument("--data-root", help="override the config's data root")
    b.add_argument("--dry-run", action="store_true", help="only list the nights")
    b.set_defaults(func=cmd_backfill)
    for name, parser in sub.choices.items():
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `journeys` command."""
    from journeys.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, UsageError) as exc:
        print(exc, file=sys.stderr)
        return 2
    except Exception as exc:
        from journeys.ingest import NothingToPublishError, SourceError
        from journeys.publish import RunLockedError
        from journeys.quality import QualityError
        from journeys.reset import ResetRefusedError

        # Known ways a run stops: the message says what and where; a traceback would only bury it.
        if isinstance(exc, SourceError | NothingToPublishError | QualityError | ResetRefusedError | RunLockedError):
            print(f"journeys {args.command}: {exc}", file=sys.stderr)
            return 1
        raise


def entry() -> None:
    """The installed `journeys` script: `main`, then an exit that skips the interpreter's module teardown."""
    code = main()
    # DuckDB 2.0's bindings (nanobind) report their module-level type objects as "leaked" when the
    # interpreter tears modules down after a flow run: 40 lines of false alarm after every run. Exit
    # handlers (Prefect's temporary server, logging) still run; then the process ends without teardown.
    import atexit
    import os

    sys.stdout.flush()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
