"""The generated sample every benchmark starts from, generated once per (events, seed) and kept under out/."""

from __future__ import annotations

import shutil
from pathlib import Path

from journeys.generate import GenerateSpec, generate_sample

HERE = Path(__file__).resolve().parent


def cached_sample(events: int, seed: int) -> tuple[GenerateSpec, Path]:
    """The sample's spec and folder (landing files and truth), generated on first use and reused after."""
    spec = GenerateSpec(events=events, seed=seed)
    cache = HERE / "out" / f"sample-{events}-{seed}"
    if not (cache / "landing").exists():
        # A folder without landing/ is a generation that was interrupted: start it again.
        shutil.rmtree(cache, ignore_errors=True)
        generate_sample(spec, cache)
    return spec, cache
