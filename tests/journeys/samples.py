"""A small generated sample, ingested: the shared starting point of tests that build the whole catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from journeys import build
from journeys.config import load_settings
from journeys.generate import GenerateSpec, generate_sample
from journeys.ingest import ingest_sources

REPO = Path(__file__).resolve().parents[2]


def ingested_sample(root: Path, *, events: int = 3_000, seed: int = 7, **context: Any) -> build.RunContext:
    """A generated sample under `root` ingested into its lake (demo config), and the run context to build it."""
    spec = GenerateSpec(events=events, seed=seed)
    generate_sample(spec, root)
    settings = load_settings(REPO / "journeys.yaml", data_root=root)
    batch = f"{spec.as_of:%Y%m%dT%H%M%S}-sample{seed:02d}"
    ingest_sources(settings, as_of=spec.as_of, batch_id=batch)
    return build.run_context(settings, spec.as_of, batch, **context)
