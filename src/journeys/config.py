"""The one typed project config, loaded from `journeys.yaml` and `JOURNEYS_*` environment variables."""

from __future__ import annotations

import difflib
import os
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

IdentifierType = str
"""An identifier type name, e.g. customer_id, email, phone, device_id, cookie_id, loyalty_id."""

PII_TYPES = ("email", "phone")
"""Identifier types that are personal data: normalised and hashed with the salt before they reach the lake."""

_FILL_CHARACTERS = "0123456789abcdefghijklmnopqrstuvwxyz-_.*#+"
REPEATED_CHAR_PATTERN = "^(?:" + "|".join(re.escape(c) + "{2,}" for c in _FILL_CHARACTERS) + ")$"
r"""One character repeated two or more times ("0000", "xxxx", "----"), spelt out per character because RE2
(DuckDB's regex engine) has no backreferences for `^(.)\1+$`. Covers digits, a-z (values are lower-cased before
matching) and the fill characters `- _ . * # +`."""

DEFAULT_CHANNELS = (
    "web",
    "app",
    "email",
    "ads",
    "social",
    "call_centre",
    "chat",
    "store",
    "delivery",
    "support",
    "survey",
    "partner",
)


class ConfigError(ValueError):
    """An unusable config: one line per problem naming the file (or variable), the key and what was expected."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def _duration(text: str) -> str:
    parse_duration_us(text)
    return text


def _positive_duration(text: str) -> str:
    if not parse_duration_us(text):
        raise ValueError(f"expected a duration above zero, got {text!r}")
    return text


Duration = Annotated[str, AfterValidator(_duration)]
"""A length of time as `30d`, `36h`, `90m`, `45s`, `2w` or a bare number of seconds; checked at load time."""

PositiveDuration = Annotated[str, AfterValidator(_positive_duration)]


def snake(value: str) -> str:
    """Lower snake case exactly as ingest's journeys_snake macro makes it (how unmapped raw values are stored)."""
    return re.sub(r"[^a-z0-9]+", "_", value.strip().lower()).strip("_")


UNSET_PII_SALT = "change-me"
"""The placeholder salt of an unconfigured project; loading a config (and ingest) refuses it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MappedField(_Strict):
    """A canonical field taken from a source column (optionally through a value map) or a constant."""

    column: str | None = Field(None, description="Source column holding the raw value.")
    value: str | None = Field(None, description="Constant value used for every row of the source.")
    map: dict[str, str] = Field(
        default_factory=dict,
        description="Raw value -> canonical value. Unmapped raw values are lower-snake-cased as they are.",
    )

    @model_validator(mode="after")
    def _one_of_column_or_value(self) -> MappedField:
        if (self.column is None) == (self.value is None):
            raise ValueError("give exactly one of 'column' or 'value'")
        return self


SentimentScale = Literal["csat_1_5", "nps_0_10", "stars_1_5", "stars_1_10", "unit"]


class EventSpec(_Strict):
    """One of several events a wide row carries (`sources[].events`): its time column and its event type."""

    occurred_at: str = Field(description="Column with this event's time.")
    event_type: str = Field(
        description="Canonical event type of this event (a constant, lower-snake-cased as a constant `event_type`"
        " is); also the last part of its event id."
    )
    optional: bool = Field(
        False,
        description="An empty time means the event did not happen: it is skipped, not quarantined. A time that"
        " cannot be read still quarantines the row.",
    )

    @property
    def canonical_type(self) -> str:
        """The event type as stored (lower snake case)."""
        return snake(self.event_type)


class RowFilter(_Strict):
    """Keep only the rows of a source whose column passes: a value in a set, or any non-empty value."""

    column: str = Field(description="Source column tested.")
    one_of: list[str] | None = Field(
        None, description="Keep a row when the column's trimmed value is one of these (compared as text)."
    )
    not_empty: bool = Field(False, description="Keep a row when the column holds a non-empty value.")

    @model_validator(mode="after")
    def _one_test(self) -> RowFilter:
        if (self.one_of is None) == (not self.not_empty):
            raise ValueError("give exactly one of 'one_of' (a list of values) or 'not_empty: true'")
        if self.one_of is not None and not self.one_of:
            raise ValueError("one_of: expected at least one value")
        return self


SourceKind = Literal["events", "links"]

_LINK_FORBIDDEN = (
    "event_id",
    "occurred_at",
    "events",
    "channel",
    "event_type",
    "touchpoint",
    "sentiment",
    "sentiment_scale",
    "revenue",
    "attributes",
    "timezone",
    "timestamp_format",
    "redact_attributes",
)
"""Keys that describe events: a `links` source has none, and giving one is a config error, not ignored."""


class SourceConfig(_Strict):
    """One landing source: where its files are, how to read them and how they map onto the canonical event."""

    name: str = Field(description="Source name, stored in the `source` column; lower snake case.")
    kind: SourceKind = Field(
        "events",
        description="`events`: each row is one event (or several, see `events`). `links`: each row only links"
        " the identifiers in its `identifiers` columns (a CRM table: order id -> person id, e-mail -> account);"
        " it has no time, never becomes an event or a journey, and is kept in `lake/links/`.",
    )
    path: str = Field(description="Glob relative to `<data_root>/landing/`, e.g. `web/*.csv`.")
    format: Literal["csv", "jsonl", "parquet"] = Field(description="File format of the landing files.")
    delimiter: str = Field(",", description="CSV field delimiter.")
    quote: str = Field('"', description="CSV quote character.")
    encoding: str = Field("utf-8", description="CSV text encoding (utf-8, latin-1, ...).")
    timezone: str = Field("UTC", description="IANA zone of naive timestamps; offset-aware ones are converted.")
    timestamp_format: str | None = Field(
        None,
        description="strptime format of the time column(s); None accepts ISO 8601 (with or without offset).",
    )
    event_id: str | list[str] | None = Field(
        None,
        description="Column with the source's event id, or a list of columns that identify an event together"
        " (`[review_id, order_id]`: one review of two orders is two events); None derives a hash of source + raw"
        " row.",
    )
    occurred_at: str | None = Field(
        None, description="Column with the event time; required unless the source lists its `events`."
    )
    events: list[EventSpec] | None = Field(
        None,
        description="Several events per row instead of `occurred_at` + `event_type`, e.g. an order row with"
        " `[{occurred_at: purchased_at, event_type: purchase}, {occurred_at: delivered_at, event_type:"
        " delivery, optional: true}]`. The row is read and accounted once; each event's id is"
        " `<source>:<row id>:<event_type>`. At least one event must not be optional. The row's `revenue` and"
        " `sentiment` go to the first event only (which must then not be optional), not to every event.",
    )
    channel: MappedField | None = Field(
        None, description="Canonical channel: constant or column (+ map); required for `kind: events`."
    )
    event_type: MappedField | None = Field(
        None, description="Canonical event type: constant or column (+ map); required unless `events` is given."
    )
    touchpoint: MappedField | None = Field(None, description="Named point of contact; default `channel:event_type`.")
    identifiers: dict[str, IdentifierType] = Field(
        default_factory=dict, description="Source column -> identifier type it holds."
    )
    sentiment: str | None = Field(None, description="Column with a satisfaction score.")
    sentiment_scale: SentimentScale | None = Field(None, description="Scale of `sentiment`, normalised to [-1, 1].")
    revenue: str | None = Field(None, description="Column with revenue (decimal).")
    attributes: list[str] | None = Field(
        None, description="Columns kept in `attributes`; None keeps every column not mapped above."
    )
    redact_attributes: bool = Field(
        True,
        description="Scan `attributes` (other than identifier columns) for personal data: a column named like an"
        " e-mail or phone column (`Email`, `mobile_no`, `tel`) keeps a salted hash of its value, and anything in"
        " any value (nested ones too) or name that looks like an e-mail address or a phone number becomes"
        " `<redacted-email>` / `<redacted-phone>`. False keeps the values as they are, for a source whose"
        " attributes the scan would mistake (ids written like phone numbers); `attributes` then says which"
        " columns are kept.",
    )
    keep_rows: list[RowFilter] = Field(
        default_factory=list,
        description="Row filters, all of which a row must pass to be read (`[{column: status, one_of: [delivered]},"
        " {column: email, not_empty: true}]`); other rows are counted as `filtered` per file, outside `read`.",
    )

    @field_validator("path")
    @classmethod
    def _inside_landing(cls, v: str) -> str:
        # A glob must stay inside landing/: `..` would ingest (and later fail on) someone else's files.
        if Path(v).is_absolute() or ".." in Path(v).parts:
            raise ValueError(f"expected a glob relative to <data_root>/landing/ without '..', got {v!r}")
        return v

    @field_validator("name")
    @classmethod
    def _snake(cls, v: str) -> str:
        if not v.replace("_", "").isalnum() or v.lower() != v:
            raise ValueError(f"source name must be lower snake case, got {v!r}")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(
                f"expected an IANA time zone such as Europe/Berlin, America/New_York or UTC, got {v!r}"
            ) from None
        return v

    @field_validator("event_id")
    @classmethod
    def _id_columns(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and (not v or len(set(v)) != len(v) or not all(v)):
            raise ValueError(f"expected one column or a list of distinct columns, got {v!r}")
        return v

    @model_validator(mode="after")
    def _fits_kind(self) -> SourceConfig:
        if self.kind == "links":
            given = [k for k in _LINK_FORBIDDEN if k in self.model_fields_set]
            if given:
                raise ValueError(
                    f"a source of kind 'links' only links identifiers; remove {given} (no time, channel or event"
                    " fields: its rows never become events)"
                )
            if len(self.identifiers) < 2:
                raise ValueError("a source of kind 'links' needs at least two `identifiers` columns to link")
            return self
        if self.channel is None:
            raise ValueError("channel: required key missing (a constant `value` or a `column`)")
        if self.events is not None:
            both = [k for k in ("occurred_at", "event_type") if getattr(self, k) is not None]
            if both:
                raise ValueError(f"give either `events` or {both}, not both")
            if not self.events:
                raise ValueError("events: expected at least one event")
            types = [e.canonical_type for e in self.events]
            if not all(types) or len(set(types)) != len(types):
                raise ValueError(f"events: expected distinct, non-empty event types, got {types}")
            if all(e.optional for e in self.events):
                raise ValueError("events: at least one event must not be optional (a row with no event is no row)")
            carried = [k for k in ("revenue", "sentiment") if getattr(self, k) is not None]
            if carried and self.events[0].optional:
                raise ValueError(
                    f"events[0]: carries the row's {' and '.join(carried)}, so it must not be optional"
                    " (an empty time would drop them)"
                )
            return self
        missing = [k for k in ("occurred_at", "event_type") if getattr(self, k) is None]
        if missing:
            raise ValueError(f"{' and '.join(missing)}: required key missing (or list the row's `events`)")
        return self

    @model_validator(mode="after")
    def _event_id_not_personal(self) -> SourceConfig:
        # An event id reaches the lake as it is read, while the same column as an identifier is hashed: the
        # raw e-mail or phone number would be stored after all.
        personal = [c for c in self.event_id_columns if self.identifiers.get(c) in PII_TYPES]
        if personal:
            kinds = sorted({self.identifiers[c] for c in personal})
            raise ValueError(
                f"event_id: column(s) {personal} hold {' and '.join(kinds)} identifiers, and an event id is stored"
                " in the lake as it is read (raw personal data); name another column, or leave `event_id` out to"
                " identify each event by a hash of its row"
            )
        return self

    @property
    def event_id_columns(self) -> list[str]:
        """The column(s) whose values identify an event (empty: a hash of the row)."""
        if self.event_id is None:
            return []
        return [self.event_id] if isinstance(self.event_id, str) else list(self.event_id)

    @property
    def required_time_columns(self) -> list[str]:
        """Time columns every row must fill (none for a links source; optional events left out)."""
        if self.events is not None:
            return list(dict.fromkeys(e.occurred_at for e in self.events if not e.optional))
        return [self.occurred_at] if self.occurred_at is not None else []

    def mapped_columns(self) -> list[str]:
        """Source columns this mapping reads, in a stable order (used to check files before loading)."""
        cols = [*self.event_id_columns, self.occurred_at, self.sentiment, self.revenue]
        cols += [e.occurred_at for e in self.events or []]
        cols += [f.column for f in (self.channel, self.event_type, self.touchpoint) if f is not None]
        cols += list(self.identifiers)
        cols += [r.column for r in self.keep_rows]
        return [c for c in dict.fromkeys(cols) if c is not None]


class IdentityConfig(_Strict):
    """Identity-resolution guardrails."""

    blocked_values: list[str] = Field(
        default_factory=lambda: ["", "0", "-1", "null", "none", "nan", "anonymous", "unknown", "undefined", "n/a"],
        description="Identifier values never used (compared after trim + lower case).",
    )
    blocked_patterns: list[str] = Field(
        default_factory=lambda: [r"^test@", r"^0+$", REPEATED_CHAR_PATTERN],
        description="Regexes (RE2, matched against the normalised raw value) of values never used.",
    )
    max_values_per_type: dict[str, int] = Field(
        default_factory=lambda: {
            "customer_id": 1,
            "loyalty_id": 2,
            "email": 5,
            "phone": 5,
            "device_id": 10,
            "cookie_id": 20,
        },
        description="Most values of one identifier type one customer may hold; a link that breaks it is not used.",
    )
    priority: list[str] = Field(
        default_factory=lambda: ["customer_id", "loyalty_id", "email", "phone", "device_id", "cookie_id"],
        description="Identifier types from most to least trusted; lower ones give way when a limit is hit.",
    )
    max_links_per_value: int | None = Field(
        100,
        ge=1,
        description="Most distinct other identifiers one value may share events with; a value above it (a call"
        " centre's own number on hundreds of visitors' events) is a hub: held back from linking whatever its type's"
        " priority, listed in `shared_identifiers` with reason `hub`, and an event that carries nothing but hubs"
        " stays unresolved. One customer holds at most the sum of `max_values_per_type` (43 by default). None"
        " turns the check off.",
    )


class FunnelExclusion(_Strict):
    """Events that void a step: an event matching every given condition strictly between stage i and stage j."""

    between: tuple[int, int] = Field(
        description="Stages [i, j], 1-based, i < j; every step from i to j is checked (usually [i, i + 1])."
    )
    event_type: list[str] = Field(default_factory=list, description="Canonical event types that exclude the step.")
    channel: list[str] = Field(
        default_factory=list, description="Channels whose events exclude the step (with event_type: both must match)."
    )
    touchpoint: list[str] = Field(
        default_factory=list,
        description="Touchpoints (`channel:event_type`) whose events exclude the step (all given lists must match).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> FunnelExclusion:
        if not 1 <= self.between[0] < self.between[1]:
            raise ValueError(f"between must be two stages i < j, got {list(self.between)}")
        if not (self.event_type or self.channel or self.touchpoint):
            raise ValueError("an exclusion needs at least one of event_type, channel, touchpoint")
        return self


FunnelMode = Literal["ordered", "strict", "any_order", "open"]


def _ordered_only() -> list[FunnelMode]:
    return ["ordered"]


class StageModelRef(_Strict):
    """A stage model used in a run and the funnel settings it is evaluated with (see journeys.funnel)."""

    path: str = Field(
        description="YAML file: a name of a shipped model (`generic_lifecycle`) or a path relative to the config."
    )
    modes: list[FunnelMode] = Field(
        default_factory=_ordered_only,
        description="Funnel modes computed for this model; `open` lets a journey enter at its lowest stage.",
    )
    conversion_window: PositiveDuration | None = Field(
        None, description="Conversion window, inclusive (`7d`, `36h`, `90m`); None is unbounded."
    )
    window_from: Literal["first_step", "prior_step"] = Field(
        "first_step",
        description="Measure the window from the chain's first step (ClickHouse, Mixpanel, PostHog) or from"
        " the step before each step (GA4).",
    )
    strict_increase: bool = Field(
        False, description="A step needs a strictly later time than the step before (ClickHouse strict_increase)."
    )
    strict_deduplication: bool = Field(
        False,
        description="A repeat of an already reached stage (>= 2) ends the scan (ClickHouse strict_deduplication).",
    )
    exclusions: list[FunnelExclusion] = Field(
        default_factory=list, description="Events between two stages that void the attempt (PostHog, Mixpanel)."
    )
    hold_constant: str | None = Field(
        None,
        description="Attribute key (JSON key of `attributes`) whose value must be the same at every step of a"
        " chain, e.g. `product_id`; events without it form their own group.",
    )


OnFail = Literal["fail", "warn"]


class FreshnessCheck(_Strict):
    """Alarm when nothing new has been loaded for too long (a feed that went quiet)."""

    max_staleness: PositiveDuration | None = Field(
        None,
        description="Longest time (`2d`, `36h`) from the newest ingest that loaded rows (ingest manifest) to the"
        " run's as_of; a run that loads rows is fresh. None turns the check off.",
    )
    on_fail: OnFail = Field("fail", description="`fail` stops publication; `warn` publishes and reports a warning.")


class VolumeCheck(_Strict):
    """Alarm when a run loads far fewer events than the last run that loaded any."""

    min_ratio: float | None = Field(
        None,
        ge=0,
        description="Smallest accepted ratio of this run's loaded events to those of the latest published run that"
        " loaded events (`0.5`: at least half). A run that loads nothing is left to the freshness check. None turns"
        " the check off.",
    )
    on_fail: OnFail = Field("fail", description="`fail` stops publication; `warn` publishes and reports a warning.")


class IdentityCheck(_Strict):
    """Alarm when the largest customer is bigger than any person could be (strangers fused into one)."""

    max_identifiers: int | None = Field(
        100,
        ge=1,
        description="Most linked identifiers one customer (`customers.n_identifiers`) may hold; None turns it off.",
    )
    max_events: int | None = Field(
        10_000, ge=1, description="Most events one customer (`customers.n_events`) may hold; None turns it off."
    )
    on_fail: OnFail = Field("warn", description="`fail` stops publication; `warn` publishes and reports a warning.")


class QualityConfig(_Strict):
    """Data-quality thresholds."""

    freshness: FreshnessCheck = Field(default_factory=FreshnessCheck, description="Freshness check (off by default).")
    volume: VolumeCheck = Field(default_factory=VolumeCheck, description="Volume check (off by default).")
    identity: IdentityCheck = Field(
        default_factory=IdentityCheck, description="Size of the largest customer (warns by default)."
    )

    max_quarantine_share: float = Field(
        0.05, description="A source file with a larger share of quarantined rows fails the run's checks."
    )
    min_occurred_at: str = Field("2000-01-01", description="Earliest plausible event time (UTC).")
    max_future: Duration = Field(
        "1d",
        description="How far past `as_of` an event time may be and still load now (clock skew); a later row is"
        " held back in state/held/, not rejected, and loaded by the first run whose as_of passes it.",
    )


class ScheduleConfig(_Strict):
    """When `journeys serve` runs the nightly flow, and how long one run may take."""

    cron: str = Field("0 2 * * *", description="Cron expression (5 fields) of the scheduled runs, read in `timezone`.")
    timezone: str = Field("UTC", description="IANA zone the cron is read in; runs follow its daylight-saving shifts.")
    run_timeout: str = Field("6h", description="A run still going after this long fails (`6h`, `90m`).")
    deployment: str = Field(
        "nightly", description="Deployment name; trigger it with `prefect deployment run 'journeys-nightly/<name>'`."
    )

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, v: str) -> str:
        # Prefect checks the expression itself when the deployment is registered; this catches a missing field early.
        if len(v.split()) != 5:
            raise ValueError(f"cron must have 5 fields (minute hour day month weekday), got {v!r}")
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @property
    def run_timeout_s(self) -> float:
        """The run timeout in seconds."""
        return (parse_duration_us(self.run_timeout) or 0) / 1_000_000


class RedPointsConfig(_Strict):
    """When a touchpoint or a CxC matrix cell counts as a red point (see the `red_points` mart)."""

    min_count: int = Field(
        30, ge=1, description="Fewest journeys (dropout) or sentiment readings a touchpoint or cell needs to be judged."
    )
    z: float = Field(1.96, gt=0, description="z of the two-sided Wilson score interval; 1.96 is 95 %, 2.576 is 99 %.")
    min_lift: float = Field(
        1.5, ge=1.0, description="Least share / stage share for a red point, on top of the interval's lower bound."
    )


GoalMetric = Literal["conversion_rate", "flow_rate", "monetised_value", "dropout_share", "mean_sentiment"]

GOAL_METRIC_UNIT = {
    "conversion_rate": "stage",
    "flow_rate": "cell",
    "monetised_value": "cell",
    "dropout_share": "touchpoint",
    "mean_sentiment": "touchpoint",
}
"""What a goal's metric is measured on: a stage (`stage_funnel`), a CxC cell (`stage_channel_matrix`: stage and
channel) or a touchpoint at a stage (`touchpoint_performance`)."""

_GOAL_METRIC_RANGE = {
    "conversion_rate": (0.0, 1.0),
    "flow_rate": (0.0, 1.0),
    "dropout_share": (0.0, 1.0),
    "mean_sentiment": (-1.0, 1.0),
}


class Goal(_Strict):
    """A target for one metric of the journey map; a run whose value misses it writes a row of `alerts`."""

    name: str = Field(
        min_length=1, description="Name of the goal, unique among the goals; the key of its row in `alerts`."
    )
    stage_model: str = Field(description="Name of a configured stage model (its YAML's `name`).")
    metric: GoalMetric = Field(
        description="`conversion_rate` of a stage (`stage_funnel`), `flow_rate` or `monetised_value` of a CxC cell"
        " (`stage_channel_matrix`), `dropout_share` (`touchpoint_performance.share_dropped_at_stage`) or"
        " `mean_sentiment` of a touchpoint at a stage (`touchpoint_performance`)."
    )
    stage: str = Field(description="Name of the stage the metric is read at; a stage of `stage_model`.")
    channel: str | None = Field(
        None, description="Channel of the cell, one of `channels`; required for flow_rate and monetised_value only."
    )
    touchpoint: str | None = Field(
        None,
        description="Touchpoint as in the events' touchpoint column; required for dropout_share and mean_sentiment"
        " only. Not checked at load time (touchpoints are data); one with no events at the stage alerts `no_value`.",
    )
    mode: FunnelMode | None = Field(
        None,
        description="Funnel mode of a conversion_rate goal, one of the stage model's configured `modes`; default"
        " its first. The other metrics use the stage model's first mode as their marts do.",
    )
    threshold: float = Field(
        description="The target value: a share in [0, 1] for the rates and dropout_share, [-1, 1] for"
        " mean_sentiment, revenue units for monetised_value."
    )
    direction: Literal["min", "max"] = Field(
        description="`min`: the value must be at least the threshold; `max`: at most. Equal meets the goal."
    )

    @model_validator(mode="after")
    def _keys_of_its_metric(self) -> Goal:
        unit = GOAL_METRIC_UNIT[self.metric]
        if (unit == "cell") != (self.channel is not None):
            raise ValueError(f"channel: {'required' if unit == 'cell' else 'not used'} for metric {self.metric}")
        if (unit == "touchpoint") != (self.touchpoint is not None):
            raise ValueError(
                f"touchpoint: {'required' if unit == 'touchpoint' else 'not used'} for metric {self.metric}"
            )
        if self.mode is not None and self.metric != "conversion_rate":
            raise ValueError(f"mode: only a conversion_rate goal has one, not {self.metric}")
        low_high = _GOAL_METRIC_RANGE.get(self.metric)
        if low_high is not None and not low_high[0] <= self.threshold <= low_high[1]:
            hint = " (a share: write 0.5 for 50 %)" if low_high[0] == 0 else ""
            raise ValueError(
                f"threshold: {self.metric} lies in [{low_high[0]:g}, {low_high[1]:g}], got {self.threshold:g}{hint}"
            )
        return self


class Settings(BaseSettings):
    """Everything a run needs; one instance per run, passed by the flow."""

    model_config = SettingsConfigDict(env_prefix="JOURNEYS_", env_nested_delimiter="__", extra="forbid", frozen=True)

    data_root: Path = Field(Path("data"), description="Root of landing/, lake/, warehouse/ and marts/.")
    pii_salt: SecretStr = Field(
        SecretStr(UNSET_PII_SALT),
        description="Salt for hashing email and phone; set JOURNEYS_PII_SALT. Loading a config (file or"
        " environment) refuses the default and an empty salt, and so does ingest: anyone could rebuild the"
        " hashes of known e-mails.",
    )
    default_phone_region: str = Field(
        "US",
        description="Region whose numbering plan reads phone numbers written without a country code: an ISO"
        " region (`US`, `GB`, `DE`) or a country calling code (`1`, `+44`), stored as the region (1 -> US).",
    )
    memory_limit: str = Field("4GB", description="DuckDB memory_limit; DuckDB spills to disk beyond it.")
    threads: int = Field(2, description="DuckDB worker threads.")
    buckets: int = Field(16, description="Customer-hash buckets; per-customer work can be split along them.")
    executor: Literal["local", "dask"] = Field(
        "local",
        description="Where the customer-partitioned models are built: `local` (the run's own process, one DuckDB"
        " file) or `dask` (one Prefect task per group of buckets on a Dask cluster through prefect-dask's"
        ' DaskTaskRunner, each in a DuckDB file of its own; see README "Running on Dask").',
    )
    dask_address: str | None = Field(
        None,
        description="Scheduler of an existing Dask cluster (`tcp://host:8786`) for `executor: dask`; its workers"
        " must see the data root at the same path and run the same journeys version. None starts a local cluster"
        " of `dask_workers` processes for the run.",
    )
    dask_workers: int = Field(
        2, ge=1, description="Worker processes of the local Dask cluster (`executor: dask` without dask_address)."
    )
    session_timeout: PositiveDuration = Field("30m", description="Gap that splits sessions.")
    journey_timeout: PositiveDuration = Field("30d", description="Gap that splits journeys.")
    dropout_timeout: PositiveDuration | None = Field(
        None, description="Inactivity that closes a journey; default journey_timeout."
    )
    cohort_period: Literal["day", "week", "month"] = Field("month", description="Cohort grain of stage_conversion.")
    breakdown_attribute: str | None = Field(
        None, description="Attribute (JSON key of the journey's first event) used as an extra breakdown."
    )
    channels: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CHANNELS),
        description="Known channels. Every channel a source maps to must be one of them: constants and map values"
        " are checked when the config is loaded, values read from a column before anything is written.",
    )
    sources: list[SourceConfig] = Field(default_factory=list, description="Landing sources.")
    stage_models: list[StageModelRef] = Field(
        default_factory=lambda: [StageModelRef(path="generic_lifecycle")], description="Stage models to evaluate."
    )
    costs: dict[str, float] = Field(
        default_factory=dict,
        description="Cost to serve one contact (event) per channel, in revenue units, e.g. `{call_centre: 6.5,"
        " chat: 2.0}`; channels not listed cost 0. Used by `stage_channel_matrix.monetised_value`.",
    )
    customer_value: float | None = Field(
        None,
        description="Value of one purchasing customer in revenue units; None uses the run's mean revenue per"
        " customer who reached a stage model's purchase_stage.",
    )
    top_paths: int = Field(
        20, ge=1, description="Paths kept per stage model, path type and collapsing in `journey_paths` (most frequent)."
    )
    red_points: RedPointsConfig = Field(
        default_factory=RedPointsConfig, description="Thresholds of the red_points mart."
    )
    goals: list[Goal] = Field(
        default_factory=list,
        description="Targets for journey-map metrics; each run writes the missed ones to `alerts` (see Goal).",
    )
    identity: IdentityConfig = Field(default_factory=IdentityConfig, description="Identity guardrails.")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Quality thresholds.")
    models_dir: Path | None = Field(
        None,
        description="Folder of SQL models (staging/, intermediate/, marts/) used instead of the shipped ones, e.g."
        " a copy of `journeys/sql` with one more mart; relative to the config file. None uses the shipped models.",
    )
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Schedule of `journeys serve`.")
    config_dir: Path = Field(Path("."), description="Directory of the config file; relative paths resolve here.")
    # The stage models the goals were checked against, reused by the run so it reads each file once.
    _checked_stage_models: tuple[tuple[Any, StageModelRef], ...] | None = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file, explicit arguments beat both.
        return (init_settings, env_settings)

    @model_validator(mode="after")
    def _dask_settings_need_dask(self) -> Settings:
        # Accepted means honoured: a cluster address that a local run would silently ignore is refused.
        if self.executor != "dask":
            given = [k for k in ("dask_address", "dask_workers") if k in self.model_fields_set]
            if given:
                raise ValueError(f"{given[0]}: used only with executor: dask (executor is {self.executor})")
            return self
        if self.dask_address is not None:
            if "dask_workers" in self.model_fields_set:
                raise ValueError(
                    "dask_workers: sizes only the local cluster; the cluster at dask_address has its own workers"
                )
            if not re.fullmatch(r"[a-z]+://\S+", self.dask_address):
                raise ValueError(
                    f"dask_address: expected a scheduler address such as tcp://host:8786, got {self.dask_address!r}"
                )
        return self

    @model_validator(mode="after")
    def _unique_sources(self) -> Settings:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate source names: {dupes}")
        return self

    @model_validator(mode="after")
    def _goals_name_what_exists(self) -> Settings:
        # Caught at load, not by an empty alert at the end of a run: a misspelt stage never alerts otherwise.
        if not self.goals:
            return self
        names = [g.name for g in self.goals]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"goals: duplicate goal names {dupes}")
        from journeys.stages import load_stage_model

        loaded = []
        for i, ref in enumerate(self.stage_models):
            try:
                loaded.append((load_stage_model(ref.path, self.config_dir), ref))
            except (OSError, ValueError) as exc:
                raise ValueError(f"goals: cannot check them against stage_models[{i}]: {exc}") from None
        self._checked_stage_models = tuple(loaded)
        configured = {model.name: (model, ref) for model, ref in loaded}
        for i, goal in enumerate(self.goals):
            key = f"goals[{i}] ({goal.name!r})"
            if goal.stage_model not in configured:
                raise ValueError(
                    f"{key}.stage_model: {goal.stage_model!r} is not a configured stage model;"
                    f" configured: {sorted(configured)}"
                )
            model, ref = configured[goal.stage_model]
            stages = [st.name for st in model.stages]
            if goal.stage not in stages:
                raise ValueError(f"{key}.stage: {goal.stage!r} is not a stage of {model.name}; stages: {stages}")
            last = goal.stage == stages[-1]
            if goal.metric in ("conversion_rate", "flow_rate") and last:
                raise ValueError(
                    f"{key}.stage: {goal.stage!r} is the last stage of {model.name}: it has no {goal.metric}"
                )
            if goal.metric == "monetised_value" and model.purchase_stage is None:
                raise ValueError(
                    f"{key}.metric: {model.name} names no purchase_stage, so its cells have no monetised_value"
                )
            if goal.mode is not None and goal.mode not in ref.modes:
                raise ValueError(f"{key}.mode: {goal.mode!r} is not computed for {model.name}; its modes: {ref.modes}")
            if goal.channel is not None and goal.channel not in self.channels:
                raise ValueError(f"{key}.channel: {goal.channel!r} is not one of `channels` {self.channels}")
        return self

    @model_validator(mode="after")
    def _models_dir_exists(self) -> Settings:
        if self.models_path is not None and not Path(self.models_path).is_dir():
            raise ValueError(f"models_dir: {self.models_path} is not a folder of SQL models")
        return self

    @property
    def checked_stage_models(self) -> tuple[tuple[Any, StageModelRef], ...] | None:
        """The (stage model, ref) pairs loaded to check the goals at load time; None when there are no goals."""
        return self._checked_stage_models

    @property
    def models_path(self) -> str | None:
        """Absolute folder of the run's SQL models, or None for the shipped ones."""
        if self.models_dir is None:
            return None
        p = self.models_dir if self.models_dir.is_absolute() else self.config_dir / self.models_dir
        return str(p.resolve())

    @field_validator("default_phone_region")
    @classmethod
    def _phone_region(cls, v: str) -> str:
        from journeys.phones import region_code

        return region_code(v)

    @model_validator(mode="after")
    def _known_channels(self) -> Settings:
        # Caught here, not by the quality suite at the end of a run: a misspelt channel is a config error.
        known = set(self.channels)
        for i, src in enumerate(self.sources):
            ch = src.channel
            if ch is None:
                continue  # a links source has no channel
            produced = set(ch.map.values())
            if ch.value is not None:
                produced.add(ch.map.get(ch.value.strip()) or ch.map.get(snake(ch.value)) or snake(ch.value))
            unknown = sorted(produced - known)
            if unknown:
                raise ValueError(
                    f"channels: sources[{i}] ({src.name!r}) maps channel to {unknown}, not in `channels`;"
                    f" add {'it' if len(unknown) == 1 else 'them'} to `channels` or map to one of {sorted(known)}"
                )
        return self

    def require_pii_salt(self) -> None:
        """Raise ConfigError unless a real salt is set (never the placeholder, never empty)."""
        salt = self.pii_salt.get_secret_value()
        if not salt.strip() or salt == UNSET_PII_SALT:
            raise ConfigError(
                "pii_salt: expected a secret salt (set JOURNEYS_PII_SALT or pii_salt in the config);"
                f" {'an empty one' if not salt.strip() else 'the placeholder ' + repr(UNSET_PII_SALT)} would let"
                " anyone rebuild the hashes of known e-mails and phones"
            )

    @property
    def root(self) -> Path:
        """Absolute data root."""
        p = self.data_root if self.data_root.is_absolute() else self.config_dir / self.data_root
        return p.resolve()

    @property
    def landing_dir(self) -> Path:
        return self.root / "landing"

    @property
    def lake_dir(self) -> Path:
        return self.root / "lake"

    @property
    def events_dir(self) -> Path:
        return self.lake_dir / "events"

    @property
    def links_dir(self) -> Path:
        """Identifier links from `kind: links` sources (Parquet partitioned by source)."""
        return self.lake_dir / "links"

    @property
    def quarantine_dir(self) -> Path:
        return self.lake_dir / "quarantine"

    @property
    def warehouse_path(self) -> Path:
        return self.root / "warehouse" / "journeys.duckdb"

    @property
    def marts_dir(self) -> Path:
        return self.root / "marts"

    @property
    def state_dir(self) -> Path:
        """Pipeline bookkeeping (manifests, locks, the identity state carried between runs)."""
        return self.root / "state"

    @property
    def tmp_dir(self) -> Path:
        """DuckDB spill directory."""
        return self.root / "tmp"

    @property
    def handoff_dir(self) -> Path:
        """Ingest's raw landing values for the quality step, one folder per batch, removed once checked."""
        # Not under tmp_dir: DuckDB removes a spill directory it created, contents and all, when it closes.
        return self.state_dir / "raw-handoff"


def load_settings(
    path: str | os.PathLike[str] | None = None, *, data_root: str | os.PathLike[str] | None = None, **overrides: Any
) -> Settings:
    """Load `journeys.yaml` (if given), then JOURNEYS_* env vars, then keyword overrides (data_root if not None)."""
    if data_root is not None:
        overrides["data_root"] = Path(data_root).resolve()
    data: dict[str, Any] = {}
    config_dir = Path.cwd()
    origin = "settings"
    if path is not None:
        p = Path(path)
        origin = str(p)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise ConfigError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping of keys at the top level, got {type(data).__name__}")
        config_dir = p.resolve().parent
    data.setdefault("config_dir", config_dir)
    env_keys = {k[len("JOURNEYS_") :].split("__")[0].lower() for k in os.environ if k.startswith("JOURNEYS_")}
    # pydantic-settings skips an env var that names no field: a typo (JOURNEYS_MEMORY_LIMT) would be ignored.
    unknown = sorted(
        k for k in os.environ if k.startswith("JOURNEYS_") and k[9:].split("__")[0].lower() not in Settings.model_fields
    )
    if unknown:
        raise ConfigError(
            f"{', '.join(unknown)} (environment): not a setting; JOURNEYS_<KEY> sets a top-level key of"
            f" journeys.yaml and JOURNEYS_<KEY>__<FIELD> one field of it"
        )
    try:
        env = EnvSettingsSource(Settings)()
    except (SettingsError, ValueError) as exc:
        raise ConfigError(f"JOURNEYS_* (environment): {exc}") from None
    # Env overrides the file field by field: JOURNEYS_IDENTITY__PRIORITY replaces identity.priority only.
    data = _deep_merge(data, env)
    data.update(overrides)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        # `from None`: the pydantic report repeats every input and runs to dozens of lines.
        raise ConfigError(_config_message(exc, origin, env_keys)) from None
    try:
        settings.require_pii_salt()
    except ConfigError as exc:
        # Refused when loading, not at the first hash: a run must not get as far as reading landing files.
        where = "JOURNEYS_PII_SALT (environment)" if "pii_salt" in env_keys and "pii_salt" not in overrides else origin
        raise ConfigError(f"{where}: {exc}") from None
    return settings


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` laid on top, mapping by mapping (a list or a value replaces)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "nullable[")):
            out += ("." if out else "") + str(part)
    return out


def _config_message(exc: ValidationError, origin: str, env_keys: set[str], limit: int = 8) -> str:
    """One line per validation error: `<file or variable>: <key>: <what was expected>`."""
    lines = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = tuple(err["loc"])
        key = _key_path(loc)
        where = f"JOURNEYS_{str(loc[0]).upper()} (environment)" if loc and loc[0] in env_keys else origin
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            if len(loc) == 1:
                close = difflib.get_close_matches(str(loc[0]), list(Settings.model_fields), n=1)
                msg += f"; did you mean {close[0]!r}?" if close else ""
        elif err["type"] == "missing":
            msg = "required key missing"
        value = err.get("input")
        secret = bool(loc) and loc[0] == "pii_salt"
        shown = err["type"] != "extra_forbidden" and not secret and isinstance(value, str | int | float)
        if shown and repr(value) not in msg and len(repr(value)) <= 60:
            msg += f", got {value!r}"
        lines.append(f"{where}: {key}: {msg}" if key else f"{where}: {msg}")
    if exc.error_count() > limit:
        lines.append(f"{origin}: ... and {exc.error_count() - limit} more")
    return "\n".join(lines)


def parse_duration_us(text: str | None) -> int | None:
    """Parse `30d`, `36h`, `90m`, `45s`, `2w` (or a bare number of seconds) into microseconds."""
    if text is None:
        return None
    m = _DURATION.match(str(text))
    if m is None:
        raise ValueError(f"expected a duration such as 30d, 36h, 90m, 45s or 2w, got {text!r}")
    return int(float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()] * 1_000_000)
