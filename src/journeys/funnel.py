"""Stage reach per journey (SPEC section 6): ordered, strict and any_order funnels, set-based in DuckDB.

Definitions, over the stage events of one (stage_model, journey_id), stages 1..k, taken in the order
(occurred_at, stage_index); events of the same instant and stage are interchangeable, so no further
tie-break is needed (ClickHouse stable-sorts (timestamp, condition index) the same way).

- A level-L chain is events a1..aL in that order with stage(ai) = i and
  ts(aL) - ts(a1) <= window (inclusive; no window = unbounded). Other events may sit in between.
- `ordered`: furthest_stage is the largest L with a level-L chain, over every possible a1; this is
  ClickHouse `windowFunnel(window)(ts, stage = 1, ..., stage = k)` in its default mode.
- `strict`: ClickHouse mode 'strict_order' fed only the stage events: the scan of `ordered` stops
  at the first stage-s event (s >= 2) that comes after the first stage-1 event while level s - 1
  has not been reached yet; furthest_stage is the level reached before that event. A repeated
  stage, a restart at stage 1 or a step outside the window does not stop the scan by itself.
- `any_order`: level L is reached once any event of a stage >= L occurred; furthest_stage is the
  highest stage seen. The window does not apply.
- reached_at of level L is the occurred_at of the event at which the journey first reached
  level L: in `ordered` and `strict` the earliest level-L chain end (aL of any valid chain, the
  chains of different levels may start at different a1), in `any_order` the earliest event of a
  stage >= L. It is non-decreasing in L, so time-to-next-stage is never negative.

Stage events with stage_index outside 1..n_stages of their model are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from journeys.db import execute, fetch, model_sql

MODES = ("ordered", "strict", "any_order")

_CHAIN_ENDS_DDL = """
create or replace temp table int_funnel_chain_ends (
    stage_model varchar,
    journey_id varchar,
    stage_index integer,
    occurred_at timestamp,
    start_at timestamp
)
"""


@dataclass(frozen=True)
class FunnelSpec:
    """One stage model's funnel: its number of stages, the modes to compute and the window in µs."""

    stage_model: str
    n_stages: int
    modes: tuple[str, ...] = ("ordered",)
    window_us: int | None = None  # None = unbounded

    def __post_init__(self) -> None:
        if not isinstance(self.stage_model, str) or not self.stage_model:
            raise ValueError(f"stage_model must be a non-empty string, got {self.stage_model!r}")
        if not isinstance(self.n_stages, int) or self.n_stages < 1:
            raise ValueError(f"n_stages must be a positive integer, got {self.n_stages!r}")
        if not self.modes or len(set(self.modes)) != len(self.modes):
            raise ValueError(f"modes must be non-empty and distinct, got {self.modes!r}")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown:
            raise ValueError(f"unknown funnel modes {unknown}; expected some of {MODES}")
        if self.window_us is not None and (not isinstance(self.window_us, int) or self.window_us < 0):
            raise ValueError(f"window_us must be None or a non-negative integer, got {self.window_us!r}")


def _spec_params(specs: list[FunnelSpec]) -> dict[str, list]:
    rows = [(s.stage_model, m, s.n_stages, s.window_us) for s in specs for m in s.modes]
    return {
        "stage_models": [r[0] for r in rows],
        "modes": [r[1] for r in rows],
        "n_stages": [r[2] for r in rows],
        "window_us": [r[3] for r in rows],
    }


def build_stage_reached(con: duckdb.DuckDBPyConnection, specs: list[FunnelSpec]) -> int:
    """Build `journey_stage_reached` from `stage_events` for every spec and mode; return its row count."""
    models = [s.stage_model for s in specs]
    if len(set(models)) != len(models):
        raise ValueError(f"one FunnelSpec per stage model, got {models}")

    execute(
        con,
        "create or replace temp table int_funnel_specs as\n" + model_sql("intermediate", "int_funnel_specs"),
        _spec_params(specs),
    )
    execute(con, _CHAIN_ENDS_DDL)
    # One pass per level: each reads only the previous level's chain ends and this level's events.
    max_level = max((s.n_stages for s in specs if set(s.modes) & {"ordered", "strict"}), default=0)
    chain_sql = "insert into int_funnel_chain_ends\n" + model_sql("intermediate", "int_funnel_chain_ends")
    for level in range(1, max_level + 1):
        execute(con, chain_sql, {"level": level})

    execute(
        con,
        "create or replace table journey_stage_reached as\n" + model_sql("intermediate", "journey_stage_reached"),
    )
    execute(con, "drop table if exists int_funnel_chain_ends")
    execute(con, "drop table if exists int_funnel_specs")
    return fetch(con, "select count(*) from journey_stage_reached")[0][0]
