"""The quality step's parts on a data root a run built: `python benchmarks/bench_quality.py [--root ...]`.

Replays, in one process, what the last run's `check-quality` task did (default root: `benchmarks/out/run`,
which `benchmarks/run.py` leaves): its working warehouse is the kept build (`state/build.duckdb`, sealed right
after that task passed), so a copy of it is validated with the same scope: the lake events of batches no
earlier published run checked, the grain and table suites, the identity and freshness checks, the raw suites
of the run's landing files, then the Data Docs. `--previous FILE` puts an earlier kept build where the checks
look for the last published one (for a next-day run: the base run's `state/build.duckdb`, copied aside before
the next day ran); without it none is there, as in a first run.

The raw suites read ingest's handoff of the run's batch (`state/raw-handoff/<batch>`), which the run's own
quality step removed: it is made once by ingesting the root's landing again into `<root>-handoff/` with the
same batch id (not timed), and each repeat gets a fresh copy of it. `--no-handoff` times the raw suites reading
the landing files instead (the code before the handoff, and the fallback for files it lacks).

The data root is only read: the copy, the state and the Data Docs go to a scratch folder. Prints seconds per
part for each repeat (and the GX suites' share per suite), JSON on stdout; `--profile FILE` writes cProfile
statistics of the first repeat.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

_parts: dict[str, float] = {}


def instrument() -> None:
    """Time the GX runs per suite and the SQL-only checks inside validate_warehouse (into `_parts`)."""
    from bench_incremental import timed_part

    from journeys import quality

    validate = quality._Validator.validate

    def per_suite(self: Any, suite: str, *a: Any, **kw: Any) -> Any:
        return timed_part(f"gx:{suite}", validate, _parts)(self, suite, *a, **kw)

    quality._Validator.validate = per_suite  # type: ignore[method-assign]
    for name in ("grain_summary", "check_identity"):
        if hasattr(quality, name):
            setattr(quality, name, timed_part(name, getattr(quality, name), _parts))


HANDOFF = Path("state") / "raw-handoff"


def prepare_handoff(root: Path, batch_id: str, as_of: datetime) -> Path:
    """Ingest's raw handoff of `batch_id` for `root`'s landing: made once under `<root>-handoff/`, then reused."""
    from journeys.config import load_settings
    from journeys.ingest import ingest_sources

    cache = root.parent / f"{root.name}-handoff"
    made = cache / HANDOFF / batch_id
    if made.exists():
        return made
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    (cache / "landing").symlink_to((root / "landing").resolve())
    t0 = time.perf_counter()
    ingest_sources(load_settings(REPO / "journeys.yaml", data_root=cache), as_of=as_of, batch_id=batch_id)
    print(f"handoff made by ingesting again in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    for p in cache.iterdir():
        if p.name not in ("landing", "state"):
            shutil.rmtree(p, ignore_errors=True)
    if not made.exists():
        raise SystemExit(f"ingest left no raw handoff in {made}: run with the code that writes one, or --no-handoff")
    return made


def scratch_root(root: Path, previous: Path | None, into: Path, handoff: Path | None = None) -> Path:
    """A data root reading `root`'s landing, lake and state (but its own kept build, reports and raw handoff)."""
    into.mkdir(parents=True)
    for name in ("landing", "lake", "gx"):
        if (root / name).exists():
            (into / name).symlink_to((root / name).resolve())
    state = into / "state"
    state.mkdir()
    for p in (root / "state").iterdir():
        if p.name not in ("build.duckdb", HANDOFF.name):
            (state / p.name).symlink_to(p.resolve())
    if previous is not None:
        shutil.copyfile(previous, state / "build.duckdb")
    if handoff is not None:
        # A copy: the quality step removes the handoff it read.
        shutil.copytree(handoff, into / HANDOFF / handoff.name)
    return into


def one_pass(root: Path, previous: Path | None, scratch: Path, handoff: bool = True) -> dict[str, Any]:
    """Every part of the quality task once, on a fresh copy of the working warehouse; seconds per part."""
    from journeys import db, models, quality
    from journeys import report as html_report
    from journeys.config import load_settings

    made = None
    if handoff:
        with db.connect(root / "state" / "build.duckdb", read_only=True) as con:
            batch = db.fetch(con, "select batch_id from _journeys_build_state")[0][0]
        root_settings = load_settings(REPO / "journeys.yaml", data_root=root)
        made = prepare_handoff(root, batch, datetime.fromisoformat(html_report.read_run_record(root_settings)["as_of"]))
    data = scratch_root(root, previous, scratch / "root", made)
    settings = load_settings(REPO / "journeys.yaml", data_root=data)
    working = scratch / "working.duckdb"
    shutil.copyfile(root / "state" / "build.duckdb", working)
    catalog = models.load_catalog(settings.models_path)
    suites = quality.load_suites(settings, catalog)
    _parts.clear()
    out: dict[str, Any] = {}
    con = db.connect(working, memory_limit=settings.memory_limit, threads=settings.threads)
    try:
        # The run this build is the working file of: its batch, and its as_of from the run record.
        batch_id = db.fetch(con, "select batch_id from _journeys_build_state")[0][0]
        as_of = datetime.fromisoformat(html_report.read_run_record(settings)["as_of"])
        t0 = time.perf_counter()
        # The code before narrowing has no checked_build: the same script times both.
        narrow = "checked_build" in inspect.signature(quality.validate_warehouse).parameters
        kw = {"checked_build": settings.state_dir / "build.duckdb"} if narrow else {}
        published = quality.published_batches(con)
        files = [str(p) for p in quality.unchecked_event_files(settings, published)]
        report = quality.validate_warehouse(
            con,
            settings,
            as_of=as_of,
            event_files=files,
            published_batches=published,
            catalog=catalog,
            suites=suites,
            run_name=batch_id,
            **kw,
        )
        out["validate_warehouse"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = report.merged(quality.check_freshness_and_volume(con, settings, as_of=as_of))
        out["freshness_volume"] = time.perf_counter() - t0
    finally:
        con.close()
    t0 = time.perf_counter()
    report = quality.validate_landing(settings, batch_id=batch_id, suites=suites).merged(report)
    out["validate_landing"] = time.perf_counter() - t0
    handoff_left = (data / HANDOFF).exists()  # False once the raw suites read (and removed) it
    t0 = time.perf_counter()
    quality.write_data_docs(report, html_report.reports_dir(settings), batch_id)
    out["data_docs"] = time.perf_counter() - t0
    out["total"] = sum(out.values())
    out = {k: round(v, 3) for k, v in out.items()}
    out["parts"] = {k: round(v, 3) for k, v in sorted(_parts.items(), key=lambda kv: -kv[1])}
    out["handoff"] = {"given": made is not None, "left_after": handoff_left}
    out["success"] = report.success
    out["summary"] = report.summary().splitlines()[:6]
    out["suites"] = dict(sorted(report.suites.items()))
    out["events_checked"] = report.events_checked
    out["expectations_run"] = report.expectations_run
    out["scopes"] = getattr(report, "scopes", [])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=HERE / "out" / "run")
    ap.add_argument("--previous", type=Path, default=None, help="an earlier run's kept build (state/build.duckdb)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--profile", type=Path, default=None)
    ap.add_argument("--no-handoff", action="store_true", help="no raw handoff: the raw suites read landing")
    args = ap.parse_args(argv)
    os.environ.setdefault("JOURNEYS_MEMORY_LIMIT", "4GB")
    instrument()
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
            if i == 0 and args.profile is not None:
                prof = cProfile.Profile()
                result = prof.runcall(one_pass, args.root.resolve(), args.previous, Path(tmp), not args.no_handoff)
                prof.dump_stats(str(args.profile))
            else:
                result = one_pass(args.root.resolve(), args.previous, Path(tmp), not args.no_handoff)
        print(json.dumps(result), file=sys.stderr, flush=True)
        runs.append(result)
    print(json.dumps({"root": str(args.root), "previous": str(args.previous), "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
