"""red_points on generated data: a planted fault is the first red point, the same sample without it has none."""

from __future__ import annotations

from pathlib import Path

import pytest

from journeys import build, db
from journeys.config import load_settings
from journeys.generate import GenerateSpec, generate_sample
from journeys.ingest import ingest_sources

REPO = Path(__file__).resolve().parents[2]
EVENTS, SEED = 6_000, 7


def _red_points(root: Path, plant_fault: bool) -> list[tuple]:
    """Every build step of the demo config on a generated sample; the primary model's red points in rank order."""
    spec = GenerateSpec(events=EVENTS, seed=SEED, plant_fault=plant_fault)
    generate_sample(spec, root)
    settings = load_settings(REPO / "journeys.yaml", data_root=root, memory_limit="1GB")
    context = build.run_context(settings, spec.as_of, "red")
    ingest_sources(settings, as_of=spec.as_of, batch_id="red")
    with db.connect() as con:
        for step in context.catalog.steps():
            build.build_step(con, context, step)
        return db.fetch(
            con,
            "select unit_type, stage_index, unit, channel, metric, lift from red_points"
            " where stage_model = 'generic_lifecycle' order by red_rank",
        )


@pytest.mark.slow
def test_the_planted_touchpoint_is_the_first_red_point(tmp_path):
    rows = _red_points(tmp_path, plant_fault=True)
    assert rows, "the planted fault was not flagged"
    unit_type, stage_index, unit, channel, metric, lift = rows[0]
    assert (unit_type, stage_index, unit, channel, metric) == (
        "touchpoint",
        2,
        "call_centre:call",
        "call_centre",
        "dropout",
    )
    assert lift >= 1.5


@pytest.mark.slow
def test_without_the_fault_nothing_is_flagged(tmp_path):
    assert _red_points(tmp_path, plant_fault=False) == []


@pytest.mark.parametrize("plant_fault", [False, True])
def test_generated_journeys_stay_within_the_timeouts(tmp_path, plant_fault):
    """Cutting a planted journey short never leaves a gap of more than 20 days inside it."""
    import polars as pl

    generate_sample(GenerateSpec(events=3_000, seed=SEED, plant_fault=plant_fault), tmp_path)
    truth = pl.read_parquet(tmp_path / "truth" / "events.parquet").sort("person_id", "journey_no", "occurred_at")
    gaps = truth.with_columns(gap=pl.col("occurred_at").diff().over("person_id", "journey_no").dt.total_seconds())[
        "gap"
    ].drop_nulls()
    assert gaps.max() <= 20 * 86_400
