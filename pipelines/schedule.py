"""The nightly flow on a schedule: `journeys serve` registers and serves the deployment, `journeys backfill`
replays scheduled nights oldest first.

`flow.serve` rather than a work pool: it needs nothing but a Prefect server and this one long-running
process, which is what a Prefect user without worker infrastructure expects. The served process keeps the
flow object, so the config's run timeout (set on it here) holds for every scheduled run.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType

from journeys.config import Settings, load_settings
from pipelines.nightly import nightly

FLOW_NAME = "journeys-nightly"


def timed_nightly(settings: Settings) -> Flow[..., dict[str, Any]]:
    """The nightly flow with the config's per-run timeout."""
    return nightly.with_options(timeout_seconds=settings.schedule.run_timeout_s)


def deployment_parameters(config_path: str | None, data_root: str | None) -> dict[str, Any]:
    """Flow parameters of every scheduled run; no `as_of`, so each run takes its scheduled time."""
    # Absolute paths: a run must not depend on where the serving process was started.
    params: dict[str, Any] = {"config_path": str(Path(config_path).resolve()) if config_path else None}
    if data_root is not None:
        params["data_root"] = str(Path(data_root).resolve())
    return params


def serve(config_path: str | None, data_root: str | None = None) -> None:
    """Register the `journeys-nightly/<deployment>` deployment with the config's cron and serve its runs."""
    settings = load_settings(config_path, data_root=data_root)
    sched = settings.schedule
    timed_nightly(settings).serve(
        name=sched.deployment,
        schedule=Cron(sched.cron, timezone=sched.timezone),
        parameters=deployment_parameters(config_path, data_root),
        description=f"journeys nightly run on {settings.root} at '{sched.cron}' ({sched.timezone})",
        tags=["journeys"],
        # One run at a time: runs on one data root are serialised by the run lock anyway, and two full
        # rebuilds side by side would only compete for the same cores and memory.
        limit=1,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def scheduled_nights(settings: Settings, first: date, last: date) -> list[datetime]:
    """Times the config's cron fires from day `first` through day `last` (in its zone), oldest first, in UTC."""
    from prefect.server.schemas.schedules import MAX_ITERATIONS, CronSchedule

    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    # The server's own schedule model, so a night here is exactly a night the scheduler would have created.
    cron = CronSchedule(cron=settings.schedule.cron, timezone=settings.schedule.timezone)
    start = datetime.combine(first, time())
    end = datetime.combine(last + timedelta(days=1), time()) - timedelta(microseconds=1)
    dates = asyncio.run(cron.get_dates(start=start, end=end))
    if len(dates) >= MAX_ITERATIONS:
        raise ValueError(f"more than {MAX_ITERATIONS - 1} scheduled runs between {first} and {last}")
    return [datetime.fromtimestamp(d.timestamp(), UTC) for d in dates]
