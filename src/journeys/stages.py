"""Stage models: versioned YAML files of ordered stages, turned into rule tables that SQL joins against.

Rules never become SQL text. Each rule condition is a row of `stage_rule_conditions`; the SQL model
`int_event_stages` matches events against those rows, so a config can only ever supply values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from journeys import db, models
from journeys.config import Settings, StageModelRef, parse_duration_us

_MATCH_FIELDS = ("event_type", "channel", "touchpoint")
_OCCURRENCE = re.compile(r"([1-9][0-9]*)(\+?)")


class StageRule(BaseModel):
    """Conditions that must all hold; each lists the values accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: list[str] | None = None
    channel: list[str] | None = None
    touchpoint: list[str] | None = None
    attributes: dict[str, list[str]] = Field(default_factory=dict)
    occurrence: str | None = Field(
        None,
        description="`n` or `n+`: the rule matches only the n-th (or n-th and later) event of the journey that meets"
        " its other conditions, counted in (occurred_at, event_id) order; None matches every such event.",
    )

    @field_validator("occurrence", mode="before")
    @classmethod
    def _occurrence_text(cls, value: Any) -> Any:
        # YAML reads `occurrence: 2` as an int and `occurrence: 2+` as a string; bool is an int too.
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value is not None and (not isinstance(value, str) or not _OCCURRENCE.fullmatch(value)):
            raise ValueError(f"occurrence: expected n or n+ with n >= 1 (e.g. 2 or 2+), got {value!r}")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> StageRule:
        if not any(getattr(self, f) for f in _MATCH_FIELDS) and not self.attributes:
            raise ValueError("a rule needs at least one condition")
        return self

    @property
    def occurrence_n(self) -> int | None:
        """The n of `occurrence`, or None when the rule matches every occurrence."""
        m = _OCCURRENCE.fullmatch(self.occurrence) if self.occurrence is not None else None
        return int(m.group(1)) if m else None

    @property
    def occurrence_and_later(self) -> bool | None:
        """True for `n+`, False for exactly the n-th, None without `occurrence`."""
        return self.occurrence.endswith("+") if self.occurrence is not None else None


class Stage(BaseModel):
    """One stage of a model: what matches it, who owns it, and the experience designed for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    rules: list[StageRule] = Field(min_length=1)
    owner: str | None = None
    touchpoint_owners: dict[str, str] = Field(default_factory=dict)
    designed_channels: list[str] = Field(default_factory=list)
    time_budget: str | None = None
    optional: bool = Field(
        False,
        description="A journey may skip this stage on its way to later ones: an ordered or strict chain may go from"
        " the stage before it straight to the stage after it (see README, Optional stages). Not allowed on the"
        " first stage, the last stage or the purchase_stage.",
    )


class StageModel(BaseModel):
    """An ordered list of stages with a name and a version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int
    description: str = ""
    stages: list[Stage]
    journey_start_events: list[str] = Field(
        default_factory=list,
        description="Event types that start a new journey whatever the gap before them (e.g. a new trip's first"
        " search); journeys are shared by all stage models, so the union over the configured models applies.",
    )
    purchase_stage: str | None = Field(
        None,
        description="Name of the stage at which a customer has bought (the CxC matrix's P(purchase) and monetised"
        " value); None leaves those columns null.",
    )

    @model_validator(mode="after")
    def _unique_stage_names(self) -> StageModel:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage model {self.name!r}: duplicate stage names")
        if not self.stages:
            raise ValueError(f"stage model {self.name!r}: no stages")
        if self.purchase_stage is not None and self.purchase_stage not in names:
            raise ValueError(f"stage model {self.name!r}: purchase_stage {self.purchase_stage!r} is not one of {names}")
        # The first stage is where a closed funnel is entered and the last is conversion itself; a skippable
        # purchase would let P(purchase) and monetised value count customers who never bought.
        fixed = {
            0: "the first stage is where a closed funnel is entered",
            len(self.stages) - 1: "journeys convert at the last stage",
        }
        if self.purchase_stage is not None:
            fixed.setdefault(names.index(self.purchase_stage), "it is the purchase_stage")
        for i, why in sorted(fixed.items()):
            if self.stages[i].optional:
                raise ValueError(
                    f"stage model {self.name!r}: stages[{i}] ({self.stages[i].name!r}): optional: not allowed, {why}"
                )
        return self

    @property
    def optional_stage_indexes(self) -> tuple[int, ...]:
        """1-based positions of the optional stages."""
        return tuple(i for i, st in enumerate(self.stages, start=1) if st.optional)

    @property
    def purchase_stage_index(self) -> int | None:
        """1-based position of the purchase stage, or None."""
        names = [s.name for s in self.stages]
        return names.index(self.purchase_stage) + 1 if self.purchase_stage is not None else None


def shipped_stage_models() -> list[str]:
    """Names of the stage models shipped with the package."""
    files = resources.files("journeys.stage_models").iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def load_stage_model(ref: str, config_dir: Path | None = None) -> StageModel:
    """Load a stage model by shipped name or by path (relative to the config directory)."""
    if ref in shipped_stage_models():
        text = resources.files("journeys.stage_models").joinpath(f"{ref}.yaml").read_text(encoding="utf-8")
        origin = ref
    else:
        p = Path(ref)
        if not p.is_absolute() and config_dir is not None:
            p = config_dir / p
        if not p.is_file():
            raise FileNotFoundError(f"stage model {ref!r}: not a shipped model {shipped_stage_models()} nor a file")
        text, origin = p.read_text(encoding="utf-8"), str(p)
    try:
        return StageModel.model_validate(yaml.safe_load(text))
    except Exception as exc:
        raise ValueError(f"stage model {origin}: {exc}") from exc


def stage_models_for(settings: Settings) -> list[tuple[StageModel, StageModelRef]]:
    """The configured stage models with their run settings; names must be unique."""
    checked = settings.checked_stage_models
    # The files the config's goals were checked against, not a second read that an edit could make differ.
    out = (
        list(checked)
        if checked is not None
        else [(load_stage_model(r.path, settings.config_dir), r) for r in settings.stage_models]
    )
    names = [m.name for m, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"stage models configured twice: {names}")
    return out


def stage_definitions_table(models: list[tuple[StageModel, StageModelRef]]) -> pa.Table:
    """One row per (stage model, stage): name, owner, designed channels, time budget."""
    rows = []
    for model, ref in models:
        for i, st in enumerate(model.stages, start=1):
            rows.append(
                {
                    "stage_model": model.name,
                    "stage_model_version": model.version,
                    "n_stages": len(model.stages),
                    "conversion_window_us": parse_duration_us(ref.conversion_window),
                    "stage_index": i,
                    "stage_name": st.name,
                    "owner": st.owner,
                    "designed_channels": st.designed_channels,
                    "designed_channels_text": ", ".join(st.designed_channels),
                    "time_budget_us": parse_duration_us(st.time_budget),
                    "purchase_stage_index": model.purchase_stage_index,
                    "optional": st.optional,
                }
            )
    schema = pa.schema(
        [
            ("stage_model", pa.string()),
            ("stage_model_version", pa.int32()),
            ("n_stages", pa.int32()),
            ("conversion_window_us", pa.int64()),
            ("stage_index", pa.int32()),
            ("stage_name", pa.string()),
            ("owner", pa.string()),
            ("designed_channels", pa.list_(pa.string())),
            ("designed_channels_text", pa.string()),
            ("time_budget_us", pa.int64()),
            ("purchase_stage_index", pa.int32()),
            ("optional", pa.bool_()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def attribute_keys(models: list[tuple[StageModel, StageModelRef]]) -> list[str]:
    """Attribute keys any rule tests, in a stable order; events are projected onto these before matching."""
    keys = {k for m, _ in models for st in m.stages for r in st.rules for k in r.attributes}
    return sorted(keys)


def stage_rule_conditions_table(models: list[tuple[StageModel, StageModelRef]]) -> pa.Table:
    """One row per rule condition: (model, stage, rule, field, attribute position, accepted values)."""
    keys = attribute_keys(models)
    rows = []
    for model, _ in models:
        for i, st in enumerate(model.stages, start=1):
            for j, rule in enumerate(st.rules, start=1):
                conds: list[tuple[str, int | None, list[str]]] = [
                    (f, None, getattr(rule, f)) for f in _MATCH_FIELDS if getattr(rule, f)
                ]
                conds += [("attribute", keys.index(k) + 1, v) for k, v in sorted(rule.attributes.items())]
                for k, (field, pos, values) in enumerate(conds, start=1):
                    rows.append(
                        {
                            "stage_model": model.name,
                            "stage_index": i,
                            "rule_id": j,
                            "condition_no": k,
                            "n_conditions": len(conds),
                            "field": field,
                            "attribute_pos": pos,
                            "accepted": [str(v) for v in values],
                            "accepted_text": ", ".join(str(v) for v in values),
                            "occurrence": rule.occurrence_n,
                            "occurrence_and_later": rule.occurrence_and_later,
                        }
                    )
    schema = pa.schema(
        [
            ("stage_model", pa.string()),
            ("stage_index", pa.int32()),
            ("rule_id", pa.int32()),
            ("condition_no", pa.int32()),
            ("n_conditions", pa.int32()),
            ("field", pa.string()),
            ("attribute_pos", pa.int32()),
            ("accepted", pa.list_(pa.string())),
            ("accepted_text", pa.string()),
            ("occurrence", pa.int32()),
            ("occurrence_and_later", pa.bool_()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def touchpoint_owners_table(models: list[tuple[StageModel, StageModelRef]]) -> pa.Table:
    """One row per (model, touchpoint) with its owner; a touchpoint named in two stages keeps the first."""
    rows, seen = [], set()
    for model, _ in models:
        for st in model.stages:
            for tp, owner in st.touchpoint_owners.items():
                if (model.name, tp) not in seen:
                    seen.add((model.name, tp))
                    rows.append({"stage_model": model.name, "touchpoint": tp, "owner": owner})
    schema = pa.schema([("stage_model", pa.string()), ("touchpoint", pa.string()), ("owner", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


def stage_funnel_modes_table(models_: list[tuple[StageModel, StageModelRef]]) -> pa.Table:
    """One row per (stage model, funnel mode) the run computes."""
    return pa.Table.from_pylist(
        [{"stage_model": m.name, "mode": mode} for m, ref in models_ for mode in ref.modes],
        schema=pa.schema([("stage_model", pa.string()), ("mode", pa.string())]),
    )


_STAGE_TABLES = {
    "stage_definitions": (
        stage_definitions_table,
        ("stage_model", "stage_index"),
        "One row per (stage model, stage).",
        {
            "stage_model": "Name of the stage model (its YAML's name).",
            "stage_model_version": "Version of the stage model's YAML.",
            "n_stages": "Number of stages of the stage model.",
            "conversion_window_us": "The model's conversion_window in microseconds; null = unbounded within the"
            " journey.",
            "stage_index": "Position of the stage in the model, from 1.",
            "stage_name": "Name of the stage.",
            "owner": "Department that owns the stage (YAML owner); null when none.",
            "designed_channels": "Channels the experience is designed for at this stage; empty list when none.",
            "designed_channels_text": "designed_channels as one text for tools that cannot show a list, joined with"
            " ', '; '' when none.",
            "time_budget_us": "Stage's time_budget in microseconds: the intended time from reaching it to reaching the"
            " next; null when none.",
            "purchase_stage_index": "Position of the model's purchase_stage (the stage at which a customer has"
            " bought); null when the model names none.",
            "optional": "True when journeys may skip the stage: a chain may go from the stage before it to the stage"
            " after it, and the stage counts only the journeys that reached it.",
        },
    ),
    "stage_rule_conditions": (
        stage_rule_conditions_table,
        ("stage_model", "stage_index", "rule_id", "condition_no"),
        "One row per condition of a stage rule; an event matches a rule when all its conditions accept it.",
        {
            "stage_model": "Stage model of the rule.",
            "stage_index": "Stage (from 1) the rule maps events to.",
            "rule_id": "Position of the rule among the stage's rules, from 1; an event needs one rule to match.",
            "condition_no": "Position of the condition within the rule, from 1.",
            "n_conditions": "Number of conditions of the rule; all must accept the event.",
            "field": "Event field tested: 'event_type', 'channel', 'touchpoint' or 'attribute'.",
            "attribute_pos": "For 'attribute': 1-based position of the attribute key among every key a rule tests"
            " (sorted); null for the other fields.",
            "accepted": "Values that satisfy the condition (any one of them).",
            "accepted_text": "accepted as one text for tools that cannot show a list, joined with ', '.",
            "occurrence": "The rule's occurrence n: it matches only the n-th event of the journey that meets all its"
            " conditions (in occurred_at, event_id order), or the n-th and later ones; null = every such event.",
            "occurrence_and_later": "True when the rule matches the n-th and later occurrences (`n+`), false for the"
            " n-th only; null without occurrence.",
        },
    ),
    "stage_touchpoint_owners": (
        touchpoint_owners_table,
        ("stage_model", "touchpoint"),
        "One row per (stage model, touchpoint) with the department that owns it.",
        {
            "stage_model": "Stage model that names the touchpoint.",
            "touchpoint": "Touchpoint, as in the events' touchpoint column.",
            "owner": "Department that owns the touchpoint; the first stage that names it wins.",
        },
    ),
    "stage_funnel_modes": (
        stage_funnel_modes_table,
        ("stage_model", "mode"),
        "One row per (stage model, funnel mode) computed in the run.",
        {
            "stage_model": "Configured stage model.",
            "mode": "Funnel mode computed for it: 'ordered', 'strict', 'any_order' or 'open'.",
        },
    ),
}


def register_stage_tables(
    con: duckdb.DuckDBPyConnection, context: Any, params: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """Tables stage_definitions, stage_rule_conditions, stage_touchpoint_owners, stage_funnel_modes."""
    loaded = list(context.stage_models)
    counts = {}
    for name, (make, *_) in _STAGE_TABLES.items():
        table = make(loaded)
        con.register("_arrow_in", table)
        db.execute(con, f"create or replace table {db.quote_ident(name)} as select * from _arrow_in")
        con.unregister("_arrow_in")
        counts[name] = table.num_rows
    return counts


models.register(
    models.Procedure(
        name="stage_tables",
        task="stitch-journeys",
        layer="intermediate",
        run=register_stage_tables,
        outputs=tuple(
            models.Model(
                name=name,
                layer="intermediate",
                materialized="table",
                grain=grain,
                publish="warehouse",
                procedure="stage_tables",
                description=description,
                columns=columns,
            )
            for name, (_, grain, description, columns) in _STAGE_TABLES.items()
        ),
    )
)
