"""The nightly journey flow: compact the lake -> ingest -> the model catalog's steps -> checks -> publish -> report.

Tasks are thin: each opens the run's working DuckDB file by path, calls one function of `journeys`, and
returns a small dict of counts. Flow parameters are the only way settings enter a run; the flow resolves
them once into a frozen run context that every task receives. The build tasks between ingest and the
checks are the catalog's steps (resolve-identity, stitch-journeys, stage-funnels, build-marts): a new SQL
model joins its layer's step without any change here. With `executor: dask` the customer-partitioned nodes
of those steps run instead as one task per bucket group in the `build-buckets` subflow on a DaskTaskRunner
(`build_on_dask`, journeys.partitions); the other nodes run in their steps as before.
"""

# No `from __future__ import annotations`: a served run unpickles the flow function by value with only the
# globals its body uses, so string annotations such as "datetime | None" could not be resolved to validate
# the run's parameters.
import dataclasses
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
from prefect.cache_policies import NO_CACHE

from journeys import build, db, dictionary, incremental, lake, partitions, publish, quality
from journeys import report as html_report
from journeys.build import RunContext
from journeys.config import Settings, load_settings
from journeys.models import Step
from pipelines import artifacts

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


def _io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: only an I/O error (a flaky share) is worth another try; a bad mapping is not."""
    return isinstance(state.data, OSError | duckdb.IOException)


def scheduled_as_of() -> datetime:
    """The flow run's scheduled start (a late run keeps its night), or now outside a flow run."""
    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time
    return datetime.fromtimestamp(scheduled.timestamp(), UTC) if scheduled else datetime.now(UTC)


# A retry reuses the batch id: files finished before the failure are in the manifest and are skipped.
@task(name="ingest", retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=_io_error, cache_policy=NO_CACHE)
def ingest_task(context: RunContext) -> dict[str, Any]:
    """Landing files -> canonical event Parquet + quarantine, with row accounting."""
    from journeys.ingest import ingest_sources, require_events

    report = ingest_sources(context.settings, as_of=context.as_of, batch_id=context.batch_id)
    require_events(context.settings, report)
    log = get_run_logger()
    log.info(
        "ingest: read=%d loaded=%d quarantined=%d duplicates=%d held=%d files=%d; released %d held rows, %d still held;"
        " %d rows of earlier file versions replaced",
        report.read,
        report.loaded,
        report.quarantined,
        report.duplicates,
        report.held,
        len(report.files),
        report.released,
        report.still_held,
        report.replaced,
    )
    if not report.accounting_ok():
        raise RuntimeError("row accounting broken: read != loaded + quarantined + duplicates + held")
    for name in report.sources_refused():
        log.error("ingest: every new landing file of source %r was refused; check its mapping", name)
    return {
        "read": report.read,
        "loaded": report.loaded,
        "quarantined": report.quarantined,
        "duplicates": report.duplicates,
        "held": report.held,
        "released": report.released,
        "replaced": report.replaced,
        "still_held": report.still_held,
        "blank": report.blank,
        "filtered": report.filtered,
        "events": report.events,
        "files": len(report.files),
        "files_skipped": sum(1 for f in report.files if f.skipped and not f.not_ready and not f.refused),
        "files_not_ready": {f.file: f.not_ready for f in report.files if f.not_ready},
        "files_refused": {f.file: f.refused for f in report.files if f.refused},
        "sources_refused": report.sources_refused(),
        "affected_dates": [str(d) for d in report.affected_dates],
    }


@task(name="compact-lake", cache_policy=NO_CACHE)
def compact_task(context: RunContext) -> dict[str, Any]:
    """Merge each date partition's small event files (of checked batches) into files near the target size."""
    settings = context.settings
    report = lake.compact_events(settings, lake.checked_batches(settings))
    get_run_logger().info(
        "compact-lake: %d -> %d event files; %d partition(s) rewritten, %d rows",
        report.files_before,
        report.files_after,
        len(report.partitions_compacted),
        report.rows_rewritten,
    )
    return {
        "files_before": report.files_before,
        "files_after": report.files_after,
        "partitions": report.partitions_compacted,
        "rows": report.rows_rewritten,
    }


@task(name="plan-build", cache_policy=NO_CACHE)
def plan_task(context: RunContext, working: str, full_refresh: bool) -> dict[str, str]:
    """Full rebuild or incremental run; an incremental run's working file starts as a copy of the kept build."""
    settings = context.settings
    plan = incremental.plan_build(
        settings.state_dir,
        Path(working),
        context.fingerprint,
        full_refresh=full_refresh,
        incremental_executor=settings.executor if settings.executor != "local" else None,
    )
    get_run_logger().info("build: %s (%s)", plan.mode, plan.reason)
    return {"mode": plan.mode, "reason": plan.reason}


@task(name="build-step", cache_policy=NO_CACHE)
def build_step_task(context: RunContext, working: str, step: Step) -> dict[str, Any]:
    """Build the catalog nodes of one step (identity, journeys, funnels or marts) in the working file."""
    return _on_working(context.settings, working, lambda con: build.build_step(con, context, step))


@task(name="export-partition-inputs", cache_policy=NO_CACHE)
def export_inputs_task(context: RunContext, working: str, step: Step) -> dict[str, Any]:
    """Build what the partitioned models read besides identity (config tables), then write it all as Parquet."""

    def export(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        counts = build.build_models(con, context, list(step.nodes)) if step.nodes else {}
        area = partitions.area_path(Path(working))
        partitions.remove_area(Path(working))
        return {"counts": counts, "inputs": partitions.export_inputs(con, context.catalog, area)}

    return _on_working(context.settings, working, export)


@task(name="build-bucket-group", cache_policy=NO_CACHE)
def bucket_group_task(
    context: RunContext, area: str, inputs: dict[str, Any], group: int, buckets: list[int]
) -> dict[str, Any]:
    """The customer-partitioned models of some buckets, in a DuckDB file of this worker's own; Parquet out."""
    return partitions.build_group(context, area, inputs, group, buckets)


def _dask_runner(settings: Settings) -> Any:
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    from prefect.client.orchestration import get_client

    # Without it each worker process would start a temporary Prefect server of its own (about 10 s and a
    # few hundred MB each) when the flow runs on one; the workers report to the flow's server instead.
    api_url = str(get_client(sync_client=True).api_url).rstrip("/")
    # One thread per worker process: each task's DuckDB has `threads` of its own. No dashboard: nobody
    # watches a nightly run's cluster, and its fixed port would clash between runs on one machine.
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": settings.dask_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
            "env": {"PREFECT_API_URL": api_url},
        }
    )


@flow(name="build-buckets")
def bucket_groups_flow(
    context: RunContext, area: str, inputs: dict[str, Any], groups: list[list[int]]
) -> list[dict[str, Any]]:
    """One task per bucket group on the flow's task runner (Dask); the groups' results, in group order."""
    futures = [
        bucket_group_task.with_options(name=f"build-bucket-group-{i}").submit(context, area, inputs, i, buckets)
        for i, buckets in enumerate(groups)
    ]
    from distributed import KilledWorker
    from prefect.futures import PrefectWrappedFuture

    results = []
    for i, future in enumerate(futures):
        try:
            results.append(future.result())
        except BaseException as exc:
            # The groups not started yet never start. Dask cannot stop one already running on an existing
            # cluster: it finishes unseen, writing only in this run's folder, which the next run removes.
            for other in futures[i + 1 :]:
                if isinstance(other, PrefectWrappedFuture):
                    other.wrapped_future.cancel()
            if isinstance(exc, KilledWorker):
                # Dask's own message names only its task key; the run's log should say which buckets were lost.
                raise RuntimeError(
                    f"bucket group {i} (buckets {groups[i]}): its Dask worker died while building it ({exc});"
                    " the run stops and the previous marts stay published"
                ) from exc
            raise
    return results


@task(name="load-partitions", cache_policy=NO_CACHE)
def load_partitions_task(context: RunContext, working: str, results: list[dict[str, Any]]) -> dict[str, int]:
    """The groups' Parquet tables into the working file, then their files go."""
    counts = _on_working(context.settings, working, lambda con: partitions.load_outputs(con, results))
    partitions.remove_area(Path(working))
    return counts


def build_on_dask(context: RunContext, working: str) -> dict[str, dict[str, Any]]:
    """The catalog's steps with the customer-partitioned nodes fanned out to Dask by bucket group."""
    catalog = context.catalog
    shape = partitions.layout(catalog)
    fanned = set(shape.nodes)
    steps = catalog.steps()
    first = next(i for i, s in enumerate(steps) if fanned & set(s.nodes))
    built: dict[str, dict[str, Any]] = {}
    for step in steps[:first]:
        built.setdefault(step.name, {}).update(build_step_task.with_options(name=step.name)(context, working, step))
    rest = [Step(s.name, tuple(n for n in s.nodes if n not in fanned)) for s in steps[first:]]
    # The partition's other inputs (the config tables) are built first; their steps then skip them.
    early = {catalog.producer(t) for t in shape.inputs} - {n for s in steps[:first] for n in s.nodes}
    exported = export_inputs_task(context, working, Step("export-partition-inputs", tuple(catalog.order(early))))
    for node, count in exported["counts"].items():
        built.setdefault(catalog.task_of(node), {})[node] = count
    settings = context.settings
    groups = partitions.bucket_groups(settings.buckets, None if settings.dask_address else settings.dask_workers)
    area = str(partitions.area_path(Path(working)))
    results = bucket_groups_flow.with_options(task_runner=_dask_runner(settings))(
        context, area, exported["inputs"], groups
    )
    loaded = load_partitions_task(context, working, results)
    for node in shape.nodes:
        tables = [m.name for m in catalog.models.values() if m.procedure == node and m.name in loaded]
        built.setdefault(catalog.task_of(node), {})[node] = {t: loaded[t] for t in tables} if tables else loaded[node]
    built["build-buckets"] = {"groups": len(groups), "buckets": settings.buckets}
    for step in rest:
        nodes = tuple(n for n in step.nodes if n not in early)
        if nodes:
            counts = build_step_task.with_options(name=step.name)(context, working, Step(step.name, nodes))
            built.setdefault(step.name, {}).update(counts)
    return built


@task(name="check-quality", retries=0, cache_policy=NO_CACHE)
def quality_task(context: RunContext, working: str, suites: dict[str, quality.Suite]) -> dict[str, Any]:
    """Great Expectations suites on every layer; a failure stops publication and keeps the last good marts."""
    settings = context.settings

    def check(con: duckdb.DuckDBPyConnection) -> quality.QualityReport:
        # Lake events are checked once, by the run that publishes them: the rows of batches no published run
        # has recorded (this run's, and a failed run's). ingest's affected dates alone would miss the files of
        # an earlier ingest attempt of this run and the rows of a run that failed its checks.
        published = quality.published_batches(con)
        files = [str(p) for p in quality.unchecked_event_files(settings, published)]
        checked = quality.validate_warehouse(
            con,
            settings,
            as_of=context.as_of,
            event_files=files,
            published_batches=published,
            catalog=context.catalog,
            suites=suites,
            run_name=context.batch_id,
            # The kept build is the last published run's working file, as its checks passed it: its table
            # suites need checking again only on the rows it does not hold.
            checked_build=incremental.build_state_path(settings.state_dir),
        )
        # ... and this file, once published, is what the next run narrows against.
        quality.record_checked_suites(con, checked)
        ops = quality.check_freshness_and_volume(con, settings, as_of=context.as_of)
        return checked.merged(ops)

    report = _on_working(settings, working, check)
    # Raw landing rows of this batch and the per-file quarantine-share limit gate publication too.
    report = quality.validate_landing(settings, batch_id=context.batch_id, suites=suites).merged(report)
    reports = html_report.reports_dir(settings)
    # A failed run's Data Docs too: they show what failed. The published run's site is kept for its report.
    docs = quality.write_data_docs(
        report, reports, context.batch_id, keep=[str(html_report.read_run_record(settings).get("batch_id"))]
    )
    path = quality.write_quality_report(report, reports / f"quality-{context.batch_id}.md")
    if not report.success:
        publish.discard_working_warehouse(Path(working))
        raise quality.QualityError(
            f"{report.summary()}\nreport: {path}\nData Docs: {docs}\nthe previous marts stay published"
        )
    get_run_logger().info("quality: %s (report %s, Data Docs %s)", report.summary(), path, docs)
    return {
        "expectations": report.expectations_run,
        "report": str(path),
        "data_docs": docs.relative_to(reports).as_posix(),
        "suites": dict(report.suites),
        "warnings": list(report.warnings),
        "events_checked": report.events_checked,
        "event_dates": report.event_dates,
        # A batch whose landing files were checked counts as checked (with or without lake rows): a run that
        # died after ingesting only duplicates or quarantined rows is not checked again every night.
        "event_batches": sorted({*report.event_batches, *report.landing_batches}),
        "checks": report.checks,
        "outcome": report.outcome(),
    }


def flow_run_id() -> str | None:
    """The Prefect flow run's id, or None outside a flow run."""
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(context: RunContext, working: str, ingest: dict[str, Any], checks: dict[str, Any]) -> dict[str, str]:
    """Identity state, then the run's set (marts, warehouse, run history, kept build, record) switched in at once."""
    settings = context.settings
    published_at = datetime.now(UTC)
    staging = publish.start_set(settings, context.batch_id)

    def pending(final: Path) -> Path:
        # State that must describe the published set: written into it, moved into place once it is published.
        return publish.pending_path(settings, staging, final)

    # The whole working file, before its unpublished tables go, is what the next incremental run starts from.
    _on_working(settings, working, lambda con: incremental.seal_build(con, context.fingerprint, context.batch_id))
    incremental.keep_build(Path(working), pending(incremental.build_state_path(settings.state_dir)))

    def publish_all(con: duckdb.DuckDBPyConnection) -> None:
        # State first: a run killed after it still counts as resolved (its keys and audit rows are kept).
        publish.write_identity_state(con, build.identity_state_path(settings), context.audit_history)
        # After the kept build and the state (naive UTC, what the models compute with): what readers get.
        build.publish_warehouse(con, context)
        metadata = publish.run_metadata(context.batch_id, context.as_of, published_at)
        publish.write_marts(con, context.catalog.published(), staging, metadata)
        run = {
            "batch_id": context.batch_id,
            "flow_run_id": flow_run_id(),
            "as_of": context.as_of,
            "published_at": published_at,
            "landing_files": ingest["files"],
            "files_ingested": ingest["files"] - ingest["files_skipped"],
            "rows_read": ingest["read"],
            "rows_loaded": ingest["loaded"],
            "rows_quarantined": ingest["quarantined"],
            "rows_duplicate": ingest["duplicates"],
            "rows_held": ingest["held"],
            "rows_released": ingest["released"],
            "rows_replaced": ingest.get("replaced", 0),
            "rows_blank": ingest["blank"],
            "events_in_lake": db.fetch(con, "select count(*) from events")[0][0],
            "expectations": checks["expectations"],
            "events_checked": checks["events_checked"],
            "event_batches": checks["event_batches"],
            "quality": "warned" if checks["warnings"] else "passed",
            "quality_warnings": checks["warnings"],
            "quality_report": checks["report"],
        }
        # The next run's `runs` (and its quality scope) counts this run exactly when its set is published.
        publish.record_run(con, pending(build.runs_state_path(settings)), run)
        build.drop_intermediates(con, context)
        # The catalog's descriptions travel with the warehouse: SQL clients and BI tools show them.
        dictionary.comment_warehouse(con, context.catalog)
        db.execute(con, "checkpoint")

    _on_working(settings, working, publish_all)
    # What `journeys report` needs about the run that the published warehouse holds.
    html_report.write_run_record(
        settings,
        {
            "batch_id": context.batch_id,
            "as_of": context.as_of.isoformat(),
            # The report tells "no goal missed" from "no goal configured" by the run's own goals.
            "goals": len(settings.goals),
            "quality": {**checks["outcome"], "report": checks["report"]},
            "data_docs": checks["data_docs"],
        },
        pending(html_report.run_record_path(settings)),
    )
    tables = [m.name for m in context.catalog.published()]
    paths = publish.switch_set(settings, context.batch_id, tables, warehouse=Path(working))
    paths["build_state"] = str(incremental.build_state_path(settings.state_dir))
    return paths


@task(name="report", cache_policy=NO_CACHE)
def report_task(context: RunContext) -> dict[str, Any]:
    """The run's self-contained HTML report, from the warehouse just published."""
    result = html_report.write_report(context.settings)
    get_run_logger().info(
        "report: %s (%.1f MB, %d charts, %.1f s)", result.path, result.size_bytes / 1e6, result.charts, result.seconds
    )
    return {
        "path": str(result.path),
        "latest": str(result.latest),
        "bytes": result.size_bytes,
        "seconds": round(result.seconds, 2),
    }


@flow(name="journeys-nightly", log_prints=True, on_failure=[artifacts.record_failed_run])
def nightly(
    config_path: str | None = "journeys.yaml",
    as_of: datetime | None = None,
    data_root: str | None = None,
    full_refresh: bool = False,
    executor: str | None = None,
    dask_address: str | None = None,
    dask_workers: int | None = None,
) -> dict[str, Any]:
    """Run the whole nightly pipeline on one data root; returns accounting, counts and output paths.

    By default the run is incremental when the last published run kept its build (see journeys.incremental);
    `full_refresh` rebuilds every table from the lake. `executor`, `dask_address` and `dask_workers` override
    the config's (None keeps it).
    """
    as_of = (as_of or scheduled_as_of()).astimezone(UTC)
    given = {"executor": executor, "dask_address": dask_address, "dask_workers": dask_workers}
    settings = load_settings(config_path, data_root=data_root, **{k: v for k, v in given.items() if v is not None})
    batch_id = f"{as_of:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    # The config, stage models and SQL models are read here, once: an edit during the run changes nothing.
    context = build.run_context(settings, as_of, batch_id)
    context = dataclasses.replace(context, fingerprint=incremental.state_fingerprint(context))
    working = str(publish.working_warehouse_path(settings, batch_id))
    built: dict[str, Any] = {}
    with publish.run_lock(settings):
        # Also completes a publication killed right after its switch (its run history, kept build, record).
        publish.clear_stale_run_files(settings)
        try:
            # Suite files are read once, like the config, and a bad one stops the run before it ingests.
            for note in quality.sync_suites(settings):
                get_run_logger().info("quality: %s", note)
            suites = quality.load_suites(settings, context.catalog)
            # Before ingest: the previous runs' files are checked by then, and this run reads the compacted lake.
            compaction = compact_task(context)
            ingest = ingest_task(context)
            plan = plan_task(context, working, full_refresh)
            context = dataclasses.replace(context, mode=plan["mode"])
            if settings.executor == "dask":
                built = build_on_dask(context, working)
            else:
                for step in context.catalog.steps():
                    counts = build_step_task.with_options(name=step.name)(context, working, step)
                    built.setdefault(step.name, {}).update(counts)
            checks = quality_task(context, working, suites)
            outputs = publish_task(context, working, ingest, checks)
            # Under the lock, so the report and the run record describe the warehouse it read.
            written = report_task(context)
        except BaseException:
            publish.discard_working_warehouse(Path(working))
            partitions.remove_area(Path(working))
            raise
    identity = built.get("resolve-identity", {}).get("identity", {})
    marts = {k: v for k, v in built.get("build-marts", {}).items()}
    artifacts.record_run(settings, batch_id=batch_id, as_of=as_of, ingest=ingest, identity=identity, quality=checks)
    artifacts.record_alerts(settings, batch_id=batch_id, as_of=as_of)
    return {
        "batch_id": batch_id,
        "as_of": as_of.isoformat(),
        "build": plan,
        "compaction": compaction,
        "ingest": ingest,
        "identity": identity,
        "journeys": built.get("stitch-journeys", {}),
        "stage_levels": built.get("stage-funnels", {}).get("funnel", {}).get("int_journey_stage_reached"),
        "marts": marts,
        "steps": built,
        "quality": checks,
        "outputs": outputs,
        "report": written,
    }
