"""A small published warehouse, built once per session by the flow's own steps (no Prefect needed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from journeys import build, db, dictionary
from journeys.config import Settings, load_settings
from journeys.generate import GenerateSpec, generate_sample
from journeys.ingest import ingest_sources

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Published:
    """A data root whose warehouse holds what a run publishes, and the run's context."""

    settings: Settings
    context: build.RunContext


@pytest.fixture(scope="session")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    """Ingest a generated sample, build every step, keep and describe what publication does, in the warehouse."""
    root = tmp_path_factory.mktemp("published")
    spec = GenerateSpec(events=3_000, seed=13)
    generate_sample(spec, root)
    settings = load_settings(REPO / "journeys.yaml", data_root=root, pii_salt="test-salt", memory_limit="1GB")
    context = build.run_context(settings, spec.as_of, "20261101T000000-test")
    ingest_sources(settings, as_of=spec.as_of, batch_id=context.batch_id)
    with db.connect(settings.warehouse_path, memory_limit="1GB") as con:
        for step in context.catalog.steps():
            build.build_step(con, context, step)
        build.drop_intermediates(con, context)
        build.publish_warehouse(con, context)
        dictionary.comment_warehouse(con, context.catalog)
    return Published(settings, context)
