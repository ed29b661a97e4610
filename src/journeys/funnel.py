"""Stage reach per journey (SPEC section 6): ordered, strict, open and any_order funnels, set-based in DuckDB.

Definitions, over the stage events of one funnel partition, stages 1..k, taken in the order
(occurred_at, stage_index) (ClickHouse stable-sorts (timestamp, condition index) the same way; events of
the same instant and stage are interchangeable). A partition is (stage_model, journey) or, with
`hold_constant`, (stage_model, journey, value of that attribute): chains never mix values, events
without the attribute form one group of their own, and a stage counts as reached when any partition of
the journey reached it (reached_at = the earliest).

- A chain is events a1..aL in that order with stage(ai) = i; other events may sit in between. Its window
  (inclusive, None = unbounded) holds if ts(aL) - ts(a1) <= window (`window_from: first_step`, ClickHouse,
  Mixpanel, PostHog) or ts(ai) - ts(ai-1) <= window for every step (`prior_step`, GA4).
- Each step is checked against the latest valid chain end of the previous stage that precedes it in
  that order (a previous-stage end at the same instant precedes it). That end has the latest start and
  the latest time, so it is the best choice for the window and for exclusions: the level reached is the
  best chain over every possible a1. It is also exactly the state ClickHouse's scan holds.
- `strict_increase` (option): the step also needs ts(ai) > ts of that latest previous end. Like
  ClickHouse, an earlier previous end is not tried when the latest one ties (1@0, 2@1, 2@2, 3@2 stops at
  level 2 although 0, 1, 2 would increase).
- `strict_deduplication` (option): the scan stops at the first event of a stage s >= 2 whose level s was
  already reached (a second stage-s event at the instant level s was reached counts); furthest is the
  level reached until then (ClickHouse >= 25, after its #37177 fix).
- `exclusions` (option): an excluded event strictly between the times of the chain's steps i and i + 1 (for
  `between: [i, j]`, every step from i to j) voids that step of that attempt: a later attempt may still count
  (PostHog, Mixpanel). An event is excluded when it matches every condition the exclusion gives (event type,
  channel, touchpoint; any value of a list). An exclusion event applies to every partition of its journey.
- `ordered`: furthest_stage is the largest L with a valid chain; with no options this is ClickHouse
  `windowFunnel(window)(ts, stage = 1, ..., stage = k)`, and with them windowFunnel(window,
  'strict_increase' / 'strict_deduplication').
- `strict`: ClickHouse 'strict_order' fed only the stage events: the scan of `ordered` stops at the first
  stage-s event (s >= 2) after the first stage-1 event while level s - 1 has not been reached yet;
  furthest_stage is the level reached before that event. A repeated stage, a restart at stage 1 or a
  step outside the window does not stop the scan by itself.
- `open`: the funnel is entered at the journey's lowest stage e seen (in the model), not necessarily 1;
  chains run e, e + 1, ... with every rule of `ordered` (windows, options, exclusions by stage number).
  A journey with a stage-1 event gets exactly its `ordered` result. Rows exist for stages e..furthest.
  (Decision: open is its own mode, so stage_conversion publishes it beside the closed `ordered`/`strict`
  rows; "entered at i" there means e <= i <= furthest.)
- `any_order`: level L is reached once any event of a stage >= L occurred; furthest_stage is the highest
  stage seen. The window and the options do not apply.
- `optional_stages` (stage YAML `optional: true`, never the first or last stage): a chain may go from its
  stage-s step straight to a stage-t step when every stage strictly between s and t is optional, so a
  chain's stages rise but need not be consecutive. A stage is reached when a valid chain ends at one of its
  events: a skipped optional stage is not reached, and one taken after a later stage (1, 3, 2 with 2
  optional) is reached when its own chain (1, 2) is valid. The window, strict_increase and the latest-end
  rule apply to the step s -> t as to any step (the latest end among the stages it may follow); an
  exclusion `between: [i, j]` checks the step into stage t when i < t <= j, over the whole time since the
  chain's step before (so an exclusion that ends at a skipped optional stage does not apply). `strict`
  stops at a stage-t event before any stage it may follow was reached; `strict_deduplication` is
  unchanged (a repeat of a reached stage). `any_order`: an optional stage is reached by its own events
  only, at its first one; a required level L by any event of a stage >= L, as before. `open` enters at
  the lowest stage seen and skips like `ordered`. Reached stages then need not be contiguous, and
  reached_at is non-decreasing over the required stages only.
- reached_at of level L is the occurred_at of the event at which the journey first reached level L: the
  earliest valid level-L chain end (chains of different levels may start at different a1), in
  `any_order` the earliest event of a stage >= L. It is non-decreasing in L.

Stage events with stage_index outside 1..n_stages of their model are ignored.

Implementation: every chain partition gets one HUGEINT `funnel_key` (from the integer journey_key of
int_journey_events), and one pass per step ASOF-joins that step's events to the previous step's chain
ends on it (with optional stages, to the latest end of any step it may follow: each end carries
`reach_step`, the highest step it may precede); strict, strict_deduplication and the merge of partitions
are set-based filters afterwards. The latest end stays the best one across optional stages: an end's
deadline never falls as its time rises, whichever step it is at, and every end a step may follow is
checked against the same exclusions (those before the step's own stage).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from journeys import models
from journeys.db import execute, fetch

MODES = ("ordered", "strict", "any_order", "open")
WINDOW_FROM = ("first_step", "prior_step")
MAX_MODELS = 1024  # funnel_key = journey_key * 2048 + model_no * 2 + family_no

_CHAIN_ENDS_DDL = """
create or replace temp table int_funnel_chain_ends (
    funnel_key hugeint,
    step integer,
    occurred_us bigint,
    prev_us bigint,
    deadline_us bigint,
    step_window_us bigint,
    strict_increase boolean,
    reach_step integer
)
"""

_EXCLUSION_EVENTS_DDL = """
create or replace temp table int_funnel_exclusion_events (
    funnel_key hugeint,
    after_step integer,
    occurred_us bigint
)
"""


@dataclass(frozen=True)
class Exclusion:
    """Events matching every given condition (`event_types`, `channels`, `touchpoints`; any value of each)
    strictly between the chain's stage `between[0]` and stage `between[1]` invalidate that chain (each
    consecutive step from between[0] to between[1] is checked)."""

    between: tuple[int, int]
    event_types: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    touchpoints: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (
            not isinstance(self.between, tuple)
            or len(self.between) != 2
            or not all(isinstance(i, int) for i in self.between)
            or not 1 <= self.between[0] < self.between[1]
        ):
            raise ValueError(f"exclusion between must be two stages i < j, got {self.between!r}")
        conditions = {"event_types": self.event_types, "channels": self.channels, "touchpoints": self.touchpoints}
        if not any(conditions.values()):
            raise ValueError("an exclusion needs event_types, channels or touchpoints")
        for name, values in conditions.items():
            if not isinstance(values, tuple) or not all(isinstance(e, str) and e for e in values):
                raise ValueError(f"exclusion {name} must be non-empty strings, got {values!r}")


@dataclass(frozen=True)
class FunnelSpec:
    """One stage model's funnel: number of stages, modes, window (µs) and ClickHouse-style options."""

    stage_model: str
    n_stages: int
    modes: tuple[str, ...] = ("ordered",)
    window_us: int | None = None  # None = unbounded
    window_from: str = "first_step"
    strict_increase: bool = False
    strict_deduplication: bool = False
    exclusions: tuple[Exclusion, ...] = ()
    hold_constant: str | None = None  # attribute key; its value is int_stage_events.hold_value
    optional_stages: tuple[int, ...] = ()  # 1-based stages a chain may skip; never the first or the last

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
        if self.window_from not in WINDOW_FROM:
            raise ValueError(f"window_from must be one of {WINDOW_FROM}, got {self.window_from!r}")
        for ex in self.exclusions:
            if not isinstance(ex, Exclusion) or ex.between[1] > self.n_stages:
                raise ValueError(f"exclusion {ex!r} does not fit a model of {self.n_stages} stages")
        if self.hold_constant is not None and (not isinstance(self.hold_constant, str) or not self.hold_constant):
            raise ValueError(f"hold_constant must be None or an attribute key, got {self.hold_constant!r}")
        if (
            not isinstance(self.optional_stages, tuple)
            or len(set(self.optional_stages)) != len(self.optional_stages)
            or not all(isinstance(i, int) and 1 < i < self.n_stages for i in self.optional_stages)
        ):
            raise ValueError(
                f"optional_stages must be distinct stages strictly between 1 and {self.n_stages},"
                f" got {self.optional_stages!r}"
            )

    @property
    def reach_offsets(self) -> list[int]:
        """Per stage s (from 1): how many stages above s a chain may step next (1 + the optional stages after s)."""
        offsets, run = [], 1
        for s in range(self.n_stages, 0, -1):
            offsets.append(run)
            run = run + 1 if s in self.optional_stages else 1
        return offsets[::-1]


def _family(mode: str) -> int | None:
    """Chain family a mode reads: 0 closed chains (ordered, strict), 1 open chains, None (any_order)."""
    return {"ordered": 0, "strict": 0, "open": 1}.get(mode)


def _spec_params(specs: list[FunnelSpec]) -> dict[str, list]:
    rows = [(no, s, m) for no, s in enumerate(specs) for m in s.modes]
    return {
        "stage_models": [s.stage_model for _, s, _ in rows],
        "modes": [m for _, _, m in rows],
        "model_nos": [no for no, _, _ in rows],
        "family_nos": [_family(m) for _, _, m in rows],
        "n_stages": [s.n_stages for _, s, _ in rows],
        "window_us": [s.window_us for _, s, _ in rows],
        "from_prior": [s.window_from == "prior_step" for _, s, _ in rows],
        "strict_increase": [s.strict_increase for _, s, _ in rows],
        "strict_dedup": [s.strict_deduplication for _, s, _ in rows],
        "hold": [s.hold_constant is not None for _, s, _ in rows],
        "optional_stages": [sorted(s.optional_stages) for _, s, _ in rows],
        "reach_offsets": [s.reach_offsets for _, s, _ in rows],
    }


def _exclusion_params(specs: list[FunnelSpec]) -> dict[str, list]:
    # An empty condition list matches every value: it is passed as null.
    rows = [
        (
            s.stage_model,
            after,
            no,
            list(ex.event_types) or None,
            list(ex.channels) or None,
            list(ex.touchpoints) or None,
        )
        for s in specs
        for no, ex in enumerate(s.exclusions, start=1)
        for after in range(ex.between[0], ex.between[1])
    ]
    return {
        "ex_models": [r[0] for r in rows],
        "ex_after_stages": [r[1] for r in rows],
        "ex_nos": [r[2] for r in rows],
        "ex_event_types": [r[3] for r in rows],
        "ex_channels": [r[4] for r in rows],
        "ex_touchpoints": [r[5] for r in rows],
    }


def build_stage_reached(
    con: duckdb.DuckDBPyConnection,
    specs: list[FunnelSpec] | tuple[FunnelSpec, ...],
    catalog: models.Catalog | None = None,
    *,
    keep_intermediate: bool = False,
) -> int:
    """Build `int_journey_stage_reached` from `int_stage_events` for every spec and mode; return its row count.

    Reads int_stage_events(stage_model, journey_id, journey_key, occurred_at, stage_index, hold_value) and,
    only when a spec has exclusions, int_journey_events(journey_key, occurred_at, event_type, channel, touchpoint).
    """
    specs = list(specs)
    models_ = (catalog or models.load_catalog()).models
    names = [s.stage_model for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"one FunnelSpec per stage model, got {names}")
    if len(specs) > MAX_MODELS:
        raise ValueError(f"at most {MAX_MODELS} stage models per run, got {len(specs)}")

    models.materialize(con, models_["int_funnel_specs"], _spec_params(specs))
    ex_params = _exclusion_params(specs)
    models.materialize(con, models_["int_funnel_exclusions"], ex_params)
    models.materialize(con, models_["int_funnel_events"], {})
    execute(con, _EXCLUSION_EVENTS_DDL)
    if ex_params["ex_models"]:
        models.insert_into(con, models_["int_funnel_exclusion_events"], {})
    execute(con, _CHAIN_ENDS_DDL)
    # One pass per step: each reads only the previous step's chain ends and this step's events.
    max_level = max((s.n_stages for s in specs if any(_family(m) is not None for m in s.modes)), default=0)
    for level in range(1, max_level + 1):
        models.insert_into(con, models_["int_funnel_chain_ends"], {"level": level})
    for name in ("int_funnel_step_reached", "int_funnel_breaks", "int_funnel_any_order_reached"):
        models.materialize(con, models_[name], {})
    models.materialize(con, models_["int_journey_stage_reached"], {"has_open": any("open" in s.modes for s in specs)})
    for m in models_.values():
        if m.procedure == "funnel" and m.materialized == "temp" and not keep_intermediate:
            execute(con, f"drop table if exists {m.name}")
    return fetch(con, "select count(*) from int_journey_stage_reached")[0][0]


def _funnel_step(con: duckdb.DuckDBPyConnection, context: Any, params: Any) -> dict[str, int]:
    n = build_stage_reached(con, context.funnel_specs, context.catalog, keep_intermediate=context.keep_scratch)
    return {"int_journey_stage_reached": n}


models.register(
    models.Procedure(name="funnel", task="stage-funnels", layer="intermediate", run=_funnel_step, partition="customer")
)
