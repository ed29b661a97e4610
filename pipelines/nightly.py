"""The nightly journey flow: ingest -> identity -> journeys -> stages/funnels -> marts -> checks -> publish.

Tasks are thin: each opens the run's working DuckDB file by path, calls one function of `journeys`, and
returns a small dict of counts. Flow parameters are the only way settings enter a run.
"""

from __future__ import annotations

import os
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("DO_NOT_TRACK", "1")

import duckdb
from prefect import flow, get_run_logger, task

from journeys import build, db, publish, quality
from journeys.config import Settings, load_settings

T = TypeVar("T")


def _on_working(settings: Settings, working: str, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """Run `work` on the run's working DuckDB file and always close it."""
    con = db.connect(
        working, memory_limit=settings.memory_limit, threads=settings.threads, temp_directory=settings.tmp_dir
    )
    try:
        return work(con)
    except BaseException as exc:
        # Prefect keeps a failed task's exception until exit; its frames must not keep the connection.
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        con.close()
        del con


@task(name="ingest")
def ingest_task(config_path: str | None, data_root: str | None, as_of: datetime, batch_id: str) -> dict[str, Any]:
    """Landing files -> canonical event Parquet + quarantine, with row accounting."""
    from journeys.ingest import ingest_sources, require_events

    settings = load_settings(config_path, data_root=data_root)
    report = ingest_sources(settings, as_of=as_of, batch_id=batch_id)
    require_events(settings, report)
    log = get_run_logger()
    log.info(
        "ingest: read=%d loaded=%d quarantined=%d duplicates=%d files=%d",
        report.read,
        report.loaded,
        report.quarantined,
        report.duplicates,
        len(report.files),
    )
    if not report.accounting_ok():
        raise RuntimeError("row accounting broken: read != loaded + quarantined + duplicates")
    return {
        "read": report.read,
        "loaded": report.loaded,
        "quarantined": report.quarantined,
        "duplicates": report.duplicates,
        "blank": report.blank,
        "files": len(report.files),
        "files_skipped": sum(1 for f in report.files if f.skipped),
        "affected_dates": [str(d) for d in report.affected_dates],
    }


@task(name="resolve-identity")
def identity_task(config_path: str | None, data_root: str | None, working: str, as_of: datetime) -> dict[str, Any]:
    """Lake views + connected components over identifiers -> identity_map, customers, event_customers."""
    from journeys.identity import resolve_identities

    settings = load_settings(config_path, data_root=data_root)
    previous = publish.mart_path(settings, "identity_map")
    previous_map = str(previous) if previous.exists() else None

    def resolve(con: duckdb.DuckDBPyConnection) -> Any:
        build.create_lake_views(con, settings)
        return resolve_identities(con, settings, run_at=as_of, previous_identity_map=previous_map)

    return dict(vars(_on_working(settings, working, resolve)))


@task(name="stitch-journeys")
def journeys_task(config_path: str | None, data_root: str | None, working: str, as_of: datetime) -> dict[str, int]:
    """Ordered events, sessions, journeys and stage mapping."""
    settings = load_settings(config_path, data_root=data_root)
    return _on_working(settings, working, lambda con: build.build_journeys(con, settings, as_of))


@task(name="stage-funnels")
def funnels_task(config_path: str | None, data_root: str | None, working: str) -> int:
    """Stage levels per journey for every stage model and mode (windowFunnel semantics)."""
    settings = load_settings(config_path, data_root=data_root)
    return _on_working(settings, working, lambda con: build.build_funnels(con, settings))


@task(name="build-marts")
def marts_task(config_path: str | None, data_root: str | None, working: str, as_of: datetime) -> dict[str, int]:
    """journeys, journey_events, stage_conversion, stage_dropout, stage_channel_matrix."""
    settings = load_settings(config_path, data_root=data_root)
    return _on_working(settings, working, lambda con: build.build_marts(con, settings, as_of))


@task(name="check-quality")
def quality_task(
    config_path: str | None,
    data_root: str | None,
    working: str,
    as_of: datetime,
    batch_id: str,
    event_dates: list[str] | None,
) -> dict[str, Any]:
    """Great Expectations suites on every layer; a failure stops publication and keeps the last good marts."""
    settings = load_settings(config_path, data_root=data_root)
    report = _on_working(
        settings,
        working,
        lambda con: quality.validate_warehouse(con, settings, as_of=as_of, event_dates=event_dates),
    )
    # Raw landing rows of this batch and the per-file quarantine-share limit gate publication too.
    report = quality.validate_landing(settings, batch_id=batch_id).merged(report)
    path = quality.write_quality_report(report, settings.root / "reports" / f"quality-{batch_id}.md")
    if not report.success:
        publish.discard_working_warehouse(Path(working))
        raise quality.QualityError(f"{report.summary()}\nreport: {path}\nthe previous marts stay published")
    get_run_logger().info("quality: %s (report %s)", report.summary(), path)
    return {"expectations": report.expectations_run, "report": str(path)}


@task(name="publish")
def publish_task(config_path: str | None, data_root: str | None, working: str) -> dict[str, str]:
    """Marts to Parquet (atomic per table), then the working file becomes the warehouse (one rename)."""
    settings = load_settings(config_path, data_root=data_root)

    def publish_all(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
        paths = publish.publish_marts(con, settings, build.MART_TABLES)
        build.drop_intermediates(con)
        db.execute(con, "checkpoint")
        return paths

    paths = _on_working(settings, working, publish_all)
    paths["warehouse"] = str(publish.swap_in_warehouse(settings, Path(working)))
    return paths


@flow(name="journeys-nightly", log_prints=True)
def nightly(
    config_path: str | None = "journeys.yaml",
    as_of: datetime | None = None,
    data_root: str | None = None,
) -> dict[str, Any]:
    """Run the whole nightly pipeline on one data root; returns accounting, counts and output paths."""
    as_of = (as_of or datetime.now(UTC)).astimezone(UTC)
    settings = load_settings(config_path, data_root=data_root)
    batch_id = f"{as_of:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    working = str(publish.working_warehouse_path(settings, batch_id))
    with publish.run_lock(settings):
        publish.clear_stale_run_files(settings)
        try:
            ingest = ingest_task(config_path, data_root, as_of, batch_id)
            identity = identity_task(config_path, data_root, working, as_of)
            journeys = journeys_task(config_path, data_root, working, as_of)
            reached = funnels_task(config_path, data_root, working)
            marts = marts_task(config_path, data_root, working, as_of)
            checks = quality_task(config_path, data_root, working, as_of, batch_id, None)
            outputs = publish_task(config_path, data_root, working)
        except BaseException:
            publish.discard_working_warehouse(Path(working))
            raise
    return {
        "batch_id": batch_id,
        "as_of": as_of.isoformat(),
        "ingest": ingest,
        "identity": identity,
        "journeys": journeys,
        "stage_levels": reached,
        "marts": marts,
        "quality": checks,
        "outputs": outputs,
    }
