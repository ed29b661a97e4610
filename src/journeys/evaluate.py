"""Score identity resolution on the lake against the generator's ground truth, with and without guardrails."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from journeys import build, db
from journeys.config import Settings
from journeys.identity import resolve_identities, score_identity


def truth_event_persons(settings: Settings, truth_dir: Path) -> Path:
    """Parquet of (event_id as in the lake, person_id) from the generator's truth/events.parquet."""
    out = settings.tmp_dir / "truth_event_persons.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    with db.connect() as con:
        con.sql(
            "select source || ':' || event_id as event_id, person_id from read_parquet($p)",
            params={"p": str(truth_dir / "events.parquet")},
        ).write_parquet(str(out))
    return out


def evaluate_identity(settings: Settings, truth_dir: Path, run_at: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Pairwise precision/recall and fused persons for guarded resolution and for plain connected components."""
    truth = truth_event_persons(settings, truth_dir)
    run_at = run_at or datetime.now(UTC)
    scores: dict[str, dict[str, Any]] = {}
    for label, guardrails in (("guardrails", True), ("plain_connected_components", False)):
        with db.connect(
            memory_limit=settings.memory_limit, threads=settings.threads, temp_directory=settings.tmp_dir
        ) as con:
            build.create_lake_views(con, settings)
            report = resolve_identities(con, settings, run_at=run_at, guardrails=guardrails)
            scores[label] = {
                **score_identity(con, str(truth)),
                "passes": report.passes,
                "n_customers": report.n_customers,
            }
    return scores
