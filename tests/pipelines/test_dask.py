"""`executor: dask`: the nightly flow with the per-customer models on a local Dask cluster of 2 processes."""

from __future__ import annotations

import shutil
from pathlib import Path

import dask
import pytest
from distributed import LocalCluster
from prefect.client.orchestration import get_client

from journeys import partitions
from journeys.config import load_settings
from pipelines.nightly import nightly
from tests.pipelines.conftest import NIGHTLY_SPEC, marts_digest, runs

# End-to-end runs: `make test-fast` leaves them to `make test`.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "journeys.yaml")
SPEC = NIGHTLY_SPEC


@pytest.fixture(scope="module")
def published(first_nightly_run, tmp_path_factory):
    """The nightly tests' sample published on a local Dask cluster of 2 worker processes, beside the session's
    single-process first run of the same sample (tests/pipelines/conftest.py) and that run's marts."""
    local = first_nightly_run
    root = tmp_path_factory.mktemp("dask")
    shutil.copytree(local.pristine, root, dirs_exist_ok=True)
    result = nightly(config_path=CONFIG, as_of=SPEC.as_of, data_root=str(root), executor="dask", dask_workers=2)
    return {"local": local.first_digest, "dask": (load_settings(CONFIG, data_root=root), result)}


def test_a_dask_run_publishes_the_single_process_marts(published):
    local = published["local"]
    settings, result = published["dask"]
    # 16 buckets in min(16, 4 x 2 workers) groups; every per-customer table came back from them.
    assert result["steps"]["build-buckets"] == {"groups": 8, "buckets": 16}
    assert result["journeys"]["int_journey_events"] > 0
    assert result["stage_levels"] > 0
    assert marts_digest(settings) == local
    # The groups' files are gone with the run.
    assert not list(settings.warehouse_path.parent.glob(".build-*"))


def test_a_killed_worker_fails_the_run_and_keeps_the_publication(published):
    settings, _ = published["dask"]
    before, history = marts_digest(settings), runs(settings)
    api = str(get_client(sync_client=True).api_url)
    # An existing cluster named by dask_address (one task per bucket), whose worker building bucket 3 dies;
    # no second try of the lost group here (Dask's default retries it on another worker, up to 3 times).
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            dashboard_address=None,
            env={"PREFECT_API_URL": api, partitions.KILL_HOOK: "3"},
        ) as cluster,
        pytest.raises(RuntimeError, match=r"bucket group 3 \(buckets \[3\]\): its Dask worker died"),
    ):
        nightly(
            config_path=CONFIG,
            as_of=SPEC.as_of,
            data_root=str(settings.root),
            executor="dask",
            dask_address=cluster.scheduler_address,
        )
    assert marts_digest(settings) == before
    assert runs(settings) == history
    # The working file is gone; a group still running on the cluster may write its folder again, which the
    # next run removes (a stale run file).
    assert not list(settings.warehouse_path.parent.glob(".build-*.duckdb"))
