"""Identity resolution scored against the generator's ground truth, with shared household devices."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from journeys.config import load_settings
from journeys.evaluate import evaluate_identity
from journeys.generate import GenerateSpec, generate_sample
from journeys.ingest import ingest_sources

# End-to-end runs: `make test-fast` leaves them to `make test`.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    root = tmp_path_factory.mktemp("identity_eval")
    spec = GenerateSpec(events=8_000, seed=11, shared_device_rate=0.2)
    generate_sample(spec, root)
    settings = load_settings(REPO / "journeys.yaml", data_root=root)
    ingest_sources(settings, as_of=spec.as_of, batch_id="eval")
    return evaluate_identity(settings, root / "truth", run_at=datetime(2026, 11, 1, tzinfo=UTC))


def test_guarded_resolution_meets_the_bar(scores):
    g = scores["guardrails"]
    assert g["precision"] >= 0.999
    assert g["recall"] >= 0.99
    assert g["n_events"] > 7_000


def test_plain_connected_components_fuse_households(scores):
    plain, guarded = scores["plain_connected_components"], scores["guardrails"]
    assert plain["persons_fused"] > 0
    assert plain["precision"] < guarded["precision"]
    assert guarded["persons_fused"] < plain["persons_fused"]
