"""Prefect artifacts of a nightly run, so the run history in the Prefect UI tells what each night did.

A finished run gets a markdown summary (row accounting, identity, quality with the freshness and volume
checks and any warning, the primary stage funnel, the top dropout points) and a table of that funnel; a
failed run gets a markdown note of what failed (a failed freshness or volume check among them) and how to
rerun the night. A third markdown artifact lists the goals the run missed (`alerts`) and the top red points.
Keys are fixed, so the UI's Artifacts page shows each as one series across nights.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate

from journeys import db
from journeys.config import Settings

SUMMARY_KEY = "journeys-nightly-summary"
FUNNEL_KEY = "journeys-nightly-funnel"
FAILURE_KEY = "journeys-nightly-failure"
ALERTS_KEY = "journeys-nightly-alerts"

_FUNNEL_COLUMNS = (
    "stage_index",
    "stage_name",
    "journeys_entered",
    "journeys_converted",
    "conversion_rate",
    "conversion_from_start",
    "journeys_dropped",
    "journeys_in_progress",
    "journeys_overdue",
    "median_time_to_next_s",
)


def primary_funnel(warehouse: str) -> tuple[str | None, str | None, list[dict[str, Any]], list[dict[str, Any]]]:
    """The primary stage model and mode, its all-cohort funnel rows and its top dropout points."""
    with db.connect(warehouse, read_only=True) as con:
        first = db.fetch(con, "select stage_model, mode from journeys limit 1")
        model, mode = first[0] if first else (None, None)
        funnel = db.fetch(
            con,
            "select stage_index, stage_name, journeys_entered, journeys_converted, conversion_rate,"
            " conversion_from_start, journeys_dropped, journeys_in_progress, journeys_overdue, median_time_to_next_s"
            " from stage_conversion where stage_model = $m and mode = $mode and cohort = 'all'"
            " and breakdown = 'none' order by stage_index",
            {"m": model, "mode": mode},
        )
        dropout = db.fetch(
            con,
            "select stage_name, last_touchpoint, last_channel, journeys_dropped, share_of_stage_dropouts, owner"
            " from stage_dropout where stage_model = $m and mode = $mode"
            " order by journeys_dropped desc, stage_index, last_touchpoint limit 5",
            {"m": model, "mode": mode},
        )
    drop_cols = (
        "stage_name",
        "last_touchpoint",
        "last_channel",
        "journeys_dropped",
        "share_of_stage_dropouts",
        "owner",
    )
    return (
        model,
        mode,
        [dict(zip(_FUNNEL_COLUMNS, r, strict=True)) for r in funnel],
        [dict(zip(drop_cols, r, strict=True)) for r in dropout],
    )


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v).replace("|", "\\|")


def _markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_no rows_"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _refused_markdown(ingest: dict[str, Any]) -> list[str]:
    """Lines naming the refused landing files, and the sources of which every new file was refused."""
    refused = ingest.get("files_refused", {})
    if not refused:
        return []
    return [
        "## Refused landing files",
        "",
        *[
            f"**Every new landing file of source `{name}` was refused**: nothing of it loaded in this run;"
            " its mapping probably does not fit its files."
            for name in ingest.get("sources_refused", [])
        ],
        "",
        *[f"- `{file}`: {why}" for file, why in refused.items()],
        "",
    ]


def run_summary_markdown(
    *,
    batch_id: str,
    as_of: datetime,
    ingest: dict[str, Any],
    identity: dict[str, Any],
    quality: dict[str, Any],
    model: str | None,
    mode: str | None,
    funnel: list[dict[str, Any]],
    dropout: list[dict[str, Any]],
    warehouse: str,
) -> str:
    """The markdown summary of one finished run."""
    held = ingest.get("held", 0)
    accounted = ingest["read"] == ingest["loaded"] + ingest["quarantined"] + ingest["duplicates"] + held
    return "\n".join(
        [
            f"# journeys-nightly as of {as_of.isoformat()}",
            "",
            f"batch `{batch_id}`, published {datetime.now(UTC).isoformat(timespec='seconds')}",
            "",
            "## Rows",
            "",
            f"read {ingest['read']} = loaded {ingest['loaded']} + quarantined {ingest['quarantined']}"
            f" + duplicates {ingest['duplicates']} + held back {held} ({'balanced' if accounted else 'NOT balanced'});"
            f" {ingest.get('released', 0)} held rows released, {ingest.get('still_held', 0)} still held;"
            f" {ingest['files']} landing files, {ingest['files_skipped']} of them unchanged since an earlier run.",
            "",
            *_refused_markdown(ingest),
            f"identity: {identity.get('n_customers')} customers from {identity.get('n_identifiers')} identifiers,"
            f" {identity.get('n_merges')} merges, {identity.get('n_splits')} splits,"
            f" {identity.get('n_shared_identifiers')} shared identifiers held back"
            + (
                f" ({identity['resolution']}: {identity['resolution_reason']})."
                if identity.get("resolution_reason")
                else "."
            ),
            "",
            "## Quality",
            "",
            f"{'passed with warnings' if quality.get('warnings') else 'passed'}: {quality['expectations']}"
            f" expectations, {quality.get('events_checked', 0)} new lake events checked; report `{quality['report']}`",
            "",
            *[f"- {c}" for c in quality.get("checks", [])],
            *[f"- **warning**: {w}" for w in quality.get("warnings", [])],
            "",
            f"## Stage funnel: {model} ({mode}), all cohorts",
            "",
            _markdown_table(funnel),
            "",
            "## Top dropout points (closed journeys)",
            "",
            _markdown_table(dropout),
            "",
            f"warehouse: `{warehouse}`",
        ]
    )


def record_run(
    settings: Settings,
    *,
    batch_id: str,
    as_of: datetime,
    ingest: dict[str, Any],
    identity: dict[str, Any],
    quality: dict[str, Any],
) -> None:
    """Create the markdown summary and the funnel table artifacts of a finished run."""
    warehouse = str(settings.warehouse_path)
    model, mode, funnel, dropout = primary_funnel(warehouse)
    create_markdown_artifact(
        run_summary_markdown(
            batch_id=batch_id,
            as_of=as_of,
            ingest=ingest,
            identity=identity,
            quality=quality,
            model=model,
            mode=mode,
            funnel=funnel,
            dropout=dropout,
            warehouse=warehouse,
        ),
        key=SUMMARY_KEY,
        description=f"journeys-nightly as of {as_of.isoformat()}: rows, identity, quality, funnel"
        + (f" ({len(quality['warnings'])} quality warning(s))" if quality.get("warnings") else "")
        + (
            f"; every new file of {', '.join(ingest['sources_refused'])} refused"
            if ingest.get("sources_refused")
            else ""
        ),
    )
    create_table_artifact(
        funnel, key=FUNNEL_KEY, description=f"stage funnel {model} ({mode}), all cohorts, as of {as_of.isoformat()}"
    )


_ALERT_COLUMNS = (
    "goal_name",
    "stage_model",
    "stage_name",
    "metric",
    "channel",
    "touchpoint",
    "owner",
    "direction",
    "threshold",
    "status",
    "metric_value",
    "previous_value",
    "missed_in_previous",
)
_RED_POINT_COLUMNS = (
    "stage_model",
    "red_rank",
    "stage_name",
    "unit_type",
    "unit",
    "owner",
    "metric",
    "n",
    "share",
    "stage_share",
    "lift",
    "excess_over_norm",
)


def alerts_and_red_points(con: Any, top: int = 5) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every row of `alerts` (by stage model, stage, goal) and the `top` red points of each stage model."""
    alerts = db.fetch(
        con,
        f"select {', '.join(_ALERT_COLUMNS)} from alerts order by stage_model, stage_index, goal_name",
    )
    red = db.fetch(
        con,
        f"select {', '.join(_RED_POINT_COLUMNS)} from red_points where red_rank <= $top order by stage_model, red_rank",
        {"top": top},
    )
    return (
        [dict(zip(_ALERT_COLUMNS, r, strict=True)) for r in alerts],
        [dict(zip(_RED_POINT_COLUMNS, r, strict=True)) for r in red],
    )


def alerts_markdown(
    *, batch_id: str, as_of: datetime, alerts: list[dict[str, Any]], red_points: list[dict[str, Any]]
) -> str:
    """The markdown of one run's missed goals and top red points."""
    new = sum(1 for a in alerts if a["missed_in_previous"] is not True)
    return "\n".join(
        [
            f"# journeys-nightly alerts as of {as_of.isoformat()}",
            "",
            f"batch `{batch_id}`",
            "",
            f"## Goals missed: {len(alerts)}"
            + (f" ({new} not missed in the previous run or without a previous value)" if alerts else ""),
            "",
            _markdown_table(alerts) if alerts else "_every configured goal is met_",
            "",
            "## Top red points (significantly above their stage's dropout or negative-sentiment share)",
            "",
            _markdown_table(red_points) if red_points else "_none_",
        ]
    )


def record_alerts(settings: Settings, *, batch_id: str, as_of: datetime) -> None:
    """Create the markdown artifact of the run's alerts and top red points, from the published warehouse."""
    with db.connect(str(settings.warehouse_path), read_only=True) as con:
        alerts, red_points = alerts_and_red_points(con)
    create_markdown_artifact(
        alerts_markdown(batch_id=batch_id, as_of=as_of, alerts=alerts, red_points=red_points),
        key=ALERTS_KEY,
        description=f"journeys-nightly as of {as_of.isoformat()}: {len(alerts)} goal(s) missed,"
        f" {len(red_points)} top red point(s)",
    )


def failed_run_markdown(
    *, as_of: str, message: str, deployment: str | None, timeout_s: float | None, ran_s: float | None
) -> str:
    """The markdown note of one failed run: what failed, what is still published, how to rerun the night."""
    lines = [f"# journeys-nightly as of {as_of}: FAILED", "", "```", message, "```", ""]
    if timeout_s and ran_s is not None and ran_s >= timeout_s:
        # Prefect's timeout interrupts DuckDB mid-query, and DuckDB reports only "Query interrupted".
        lines += [
            f"The run was stopped by its timeout: it ran {ran_s:.0f} s, `schedule.run_timeout` allows"
            f" {timeout_s:.0f} s. Raise it, or find the slow step in the run's task timings.",
            "",
        ]
    lines += [
        "Nothing of this run was published unless it failed during `publish` itself: the warehouse is swapped"
        " in only after every quality suite passed, so BI tools still read the last good night.",
        "",
        "Fix the cause (replace or remove the landing file the quality report names, or fix the config),"
        " then rerun this night:",
        "",
    ]
    if deployment:
        lines += [f"    prefect deployment run '{deployment}' --param as_of={as_of}", "", "or", ""]
    lines += [f"    journeys run --as-of {as_of}"]
    return "\n".join(lines)


def record_failed_run(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow on_failure hook: a markdown note of what failed and how to rerun that night."""
    as_of = flow_run.parameters.get("as_of") or flow_run.expected_start_time
    as_of_text = as_of if isinstance(as_of, str) else as_of.astimezone(UTC).isoformat()
    # A hook runs after the run's context is gone: read the run's start from the API, name the run itself.
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run.id)
        ran_s = (datetime.now(UTC) - run.start_time).total_seconds() if run.start_time else None
        deployment = None
        if run.deployment_id is not None:
            deployment = f"{flow.name}/{client.read_deployment(run.deployment_id).name}"
        markdown = failed_run_markdown(
            as_of=as_of_text,
            message=str(state.message or state.name),
            deployment=deployment,
            timeout_s=flow.timeout_seconds,
            ran_s=ran_s,
        )
        client.create_artifact(
            ArtifactCreate(
                type="markdown",
                key=FAILURE_KEY,
                description=f"failed run as of {as_of_text}",
                flow_run_id=flow_run.id,
                data=markdown,
            )
        )
