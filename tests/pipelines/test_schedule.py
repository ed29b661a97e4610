"""The nightly flow as a scheduled deployment on a real Prefect server (`prefect server start`, all services).

`journeys serve` registers the deployment with a per-minute cron; the server's scheduler must create a run
(the service that fails under SQLAlchemy 2.1) and the serving process must complete it, as of its scheduled
time, with its artifacts. The same server then sees the ingest retry policy and the run timeout at work.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from prefect import flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
)
from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

from journeys import build
from journeys.config import load_settings
from journeys.generate import GenerateSpec, generate_sample
from pipelines import artifacts
from pipelines.nightly import ingest_task
from pipelines.schedule import timed_nightly
from tests.pipelines.conftest import restart_event_workers

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "journeys.yaml")
SERVER_START_S = 90
SCHEDULED_RUN_S = 150  # the first cron minute (<= 60 s) plus one run of the small sample


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """End a subprocess started in its own session, and everything it started."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
    # The group may outlive its leader (a flow-run process of `serve`).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A real Prefect server with its scheduler, its own PREFECT_HOME, on a free loopback port."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "JOURNEYS_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        GX_ANALYTICS_ENABLED="False",
    )
    log = home / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"
    try:
        # A separate `prefect server start` process offers no readiness signal but its health endpoint: poll
        # it, bounded by SERVER_START_S.
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, f"prefect server did not answer /health within {SERVER_START_S} s"
            time.sleep(0.5)
        # No logs shipped from this process: a log batch still queued at exit would retry the stopped server.
        restart_event_workers()
        try:
            with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_LOGGING_TO_API_ENABLED: False}):
                yield {"url": url, "env": {**env, "PREFECT_API_URL": url}, "log": log}
        finally:
            restart_event_workers()
    finally:
        _stop(proc)


def _client() -> SyncPrefectClient:
    return get_client(sync_client=True)


def _sample(root: Path, seed: int) -> Any:
    # Events up to a day ago: none of them is "from the future" for a run scheduled now.
    spec = GenerateSpec(events=2_000, seed=seed, as_of=datetime.now(UTC) - timedelta(days=1))
    return generate_sample(spec, root)


def test_scheduler_creates_a_run_that_serve_completes_as_of_its_scheduled_time(server, tmp_path):
    root = tmp_path / "data"
    gen = _sample(root, seed=11)
    env = {
        **server["env"],
        "JOURNEYS_SCHEDULE__CRON": "* * * * *",
        "JOURNEYS_SCHEDULE__TIMEZONE": "Europe/Berlin",
        "JOURNEYS_SCHEDULE__DEPLOYMENT": "every-minute",
        # 2,000 events spread over 40 landing files of a few rows each: one malformed row can be more
        # than the default 5% of its file, which would (rightly) fail the night.
        "JOURNEYS_QUALITY__MAX_QUARANTINE_SHARE": "0.5",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "--config", CONFIG, "serve", "--data-root", str(root)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # Polling is the point here: the run is created by the server's own scheduler at the next cron minute,
        # which no hook of ours can signal; the API is all there is to watch, bounded by SCHEDULED_RUN_S.
        deadline = time.monotonic() + SCHEDULED_RUN_S
        run = None
        with _client() as client:
            while run is None or not run.state.is_final():
                assert serve.poll() is None, log.read_text(errors="replace")[-4000:]
                assert time.monotonic() < deadline, (
                    f"no completed scheduled run within {SCHEDULED_RUN_S} s; serve log:\n{log.read_text()[-4000:]}"
                )
                time.sleep(2)
                try:
                    deployment = client.read_deployment_by_name("journeys-nightly/every-minute")
                except Exception:  # not registered yet
                    continue
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
                )
                started = sorted((r for r in runs if r.start_time is not None), key=lambda r: r.expected_start_time)
                run = started[0] if started else None
            arts = {
                a.key: a
                for a in client.read_artifacts(
                    artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
                )
            }
    finally:
        _stop(serve)

    assert run.state.is_completed(), f"{run.state}\n{log.read_text(errors='replace')[-4000:]}"
    # Made by the server's scheduler from the config's cron, not by hand.
    assert run.auto_scheduled
    [schedule] = deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("* * * * *", "Europe/Berlin")
    assert "as_of" not in run.parameters and run.parameters["data_root"] == str(root.resolve())
    scheduled = run.expected_start_time.astimezone(UTC)
    assert scheduled.second == 0 and scheduled.microsecond == 0

    # The run's as_of is its scheduled time: the batch id, the quality report and the summary all say so.
    assert list((root / "reports").glob(f"quality-{scheduled:%Y%m%dT%H%M%S}-*.md"))
    summary = arts[artifacts.SUMMARY_KEY]
    assert summary.type == "markdown"
    assert f"as of {scheduled.isoformat()}" in summary.data
    assert f"loaded {gen.n_true_events} + quarantined {gen.n_malformed} + duplicates {gen.n_duplicates}" in summary.data
    assert "(balanced)" in summary.data and "passed:" in summary.data

    # The funnel table is the published primary funnel, row for row.
    funnel = arts[artifacts.FUNNEL_KEY]
    assert funnel.type == "table"
    settings = load_settings(CONFIG, data_root=root)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        want = con.sql(
            "select stage_index, journeys_entered, journeys_dropped from stage_conversion"
            " where stage_model = 'generic_lifecycle' and mode = 'ordered' and cohort = 'all'"
            " and breakdown = 'none' order by stage_index"
        ).fetchall()
    got = [(r["stage_index"], r["journeys_entered"], r["journeys_dropped"]) for r in _table(funnel.data)]
    assert got == want and want[0][1] > 50

    server_log = server["log"].read_text(errors="replace")
    assert "Can't evaluate bulk DML" not in server_log


def _table(data: Any) -> list[dict[str, Any]]:
    return json.loads(data) if isinstance(data, str) else data


def _ingest_attempts(root: Path, batch_id: str) -> tuple[str, int]:
    """Run the real ingest task (no retry delay) in a flow; the message of its failure and how often it ran."""

    @flow(name="ingest-retry-check")
    def ingest_only() -> tuple[bool, str, str]:
        context = build.run_context(load_settings(CONFIG, data_root=root), datetime.now(UTC), batch_id)
        state = ingest_task.with_options(retry_delay_seconds=0)(context, return_state=True)
        return state.is_failed(), str(state.message), str(state.state_details.task_run_id)

    failed, message, task_run_id = ingest_only()
    assert failed, message
    with _client() as client:
        return message, client.read_task_run(task_run_id).run_count


def test_ingest_retries_an_io_error_but_not_a_bad_file(server, tmp_path):
    flaky = tmp_path / "flaky"
    (flaky / "landing" / "web").mkdir(parents=True)
    # Reading /proc/self/mem from offset 0 fails with EIO, as a dropped network share does.
    (flaky / "landing" / "web" / "share.csv").symlink_to("/proc/self/mem")
    message, attempts = _ingest_attempts(flaky, "20260101T000000-flaky000")
    assert "Input/output error" in message
    assert attempts == 3  # the first try and both retries

    bad = tmp_path / "bad"
    (bad / "landing" / "web").mkdir(parents=True)
    (bad / "landing" / "web" / "export.csv").write_text("not,the,columns\n1,2,3\n")
    message, attempts = _ingest_attempts(bad, "20260101T000000-bad00000")
    # The bad file is refused alone; with nothing else to load, the run stops for want of events, not retried.
    assert "NothingToPublishError" in message and "1 file(s) refused: web/export.csv (column" in message
    assert attempts == 1


def test_a_run_over_its_timeout_fails_leaves_nothing_published_and_says_so(server, tmp_path, monkeypatch):
    root = tmp_path / "data"
    _sample(root, seed=12)
    monkeypatch.setenv("JOURNEYS_SCHEDULE__RUN_TIMEOUT", "1s")
    settings = load_settings(CONFIG, data_root=root)
    timed = timed_nightly(settings)
    assert timed.timeout_seconds == 1
    state = timed(config_path=CONFIG, data_root=str(root), return_state=True)
    # The timeout interrupts DuckDB mid-query, so the run's own message may only say "Query interrupted".
    assert state.is_failed(), state
    assert not settings.warehouse_path.exists() and not list(settings.marts_dir.glob("*/*.parquet"))
    assert not list(settings.warehouse_path.parent.glob(".build-*"))
    with _client() as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    [note] = [a for a in arts if a.key is not None]
    assert note.key == artifacts.FAILURE_KEY and "FAILED" in note.data and "journeys run --as-of" in note.data
    assert "stopped by its timeout" in note.data
