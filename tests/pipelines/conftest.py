"""One Prefect test server for every flow test of the session, and the nightly flow's first run on it.

Each module used to start its own server (about 8 s each on 2 cores, 20 s while the other pytest process
runs); the CLI subprocesses of the crash test use the same server through its URL.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.events.worker import EventsWorker
from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL
from prefect.testing.utilities import prefect_test_harness

from journeys.config import Settings, load_settings
from journeys.generate import GenerateResult, GenerateSpec, generate_sample
from pipelines.nightly import nightly

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "journeys.yaml")
# Shared devices on: 16 households share a web device between two persons with their own customer_ids, which
# the max-1-customer_id guardrail must keep apart (the identity test checks persons against customers exactly).
NIGHTLY_SPEC = GenerateSpec(events=4_000, seed=7, shared_device_rate=0.2)


@dataclass(frozen=True)
class PrefectServer:
    """The session's test server: its API URL and its SQLite database (None on another database)."""

    api_url: str
    database: Path | None


@pytest.fixture(scope="session")
def harness() -> Iterator[PrefectServer]:
    with prefect_test_harness(server_startup_timeout=180):
        url = str(PREFECT_API_DATABASE_CONNECTION_URL.value() or "")
        database = Path(url.split(":///", 1)[1]) if url.startswith("sqlite") else None
        yield PrefectServer(str(get_client(sync_client=True).api_url), database)


def marts_digest(settings) -> dict[str, str]:
    """Each mart's rows in order and its schema, without the key-value metadata that names the run."""
    out = {}
    for p in sorted(settings.marts_dir.glob("*/*.parquet")):
        table = pq.read_table(p).replace_schema_metadata(None)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        out[p.name] = hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
    return out


def runs(settings) -> list[dict]:
    """The published warehouse's run history, oldest first."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.sql("select * from runs order by published_at").to_arrow_table().to_pylist()


def restart_event_workers() -> None:
    """Stop the process's Prefect event workers once their queues are sent; the next event starts one anew.

    One worker serves the whole process and keeps the server it started with: a test that points
    PREFECT_API_URL at another server while the session's server is up must restart it, or that server never
    hears of its task runs.
    """
    EventsWorker.drain_all(at_exit=False)


@dataclass(frozen=True)
class FirstRun:
    """The nightly flow's first run on NIGHTLY_SPEC's sample, and a copy of the sample as generated."""

    root: Path
    generated: GenerateResult
    result: dict
    settings: Settings
    pristine: Path
    first_digest: dict[str, str]


@pytest.fixture(scope="session")
def first_nightly_run(harness, tmp_path_factory) -> FirstRun:
    """Later tests add landing files and runs to `root`; `pristine` is the sample before any run."""
    pristine = tmp_path_factory.mktemp("nightly-sample")
    generated = generate_sample(NIGHTLY_SPEC, pristine)
    root = tmp_path_factory.mktemp("e2e")
    shutil.copytree(pristine, root, dirs_exist_ok=True)
    result = nightly(config_path=CONFIG, as_of=NIGHTLY_SPEC.as_of, data_root=str(root))
    settings = load_settings(CONFIG, data_root=root)
    return FirstRun(root, generated, result, settings, pristine, marts_digest(settings))
