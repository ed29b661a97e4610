"""A small published warehouse, built once per session by the flow's own steps (no Prefect needed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def fail_ingest_file_on_call(monkeypatch: pytest.MonkeyPatch, call_no: int) -> None:
    """Make the run's `call_no`-th `ingest_file` raise OSError: a landing share that goes away mid-run."""
    import journeys.ingest as ingest_module

    real, calls = ingest_module.ingest_file, {"n": 0}

    def flaky(*args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == call_no:
            raise OSError("the share went away")
        return real(*args, **kw)

    monkeypatch.setattr(ingest_module, "ingest_file", flaky)
