"""Build the warehouse tables after ingestion: journeys, stages, funnels and marts, in SQL models.

Every function takes an open connection and settings and produces named tables; nothing here holds data
in Python. Everything after identity resolution partitions by customer, so each step can run per
`bucket` (customers.bucket) without changing the SQL.
"""

from __future__ import annotations

import glob as globlib
from datetime import datetime
from typing import Any

import duckdb

from journeys import db, ingest
from journeys.config import Settings, parse_duration_us
from journeys.stages import (
    attribute_keys,
    stage_definitions_table,
    stage_models_for,
    stage_rule_conditions_table,
    touchpoint_owners_table,
)

MART_TABLES: dict[str, tuple[str, ...]] = {
    "identity_map": ("id_type", "id_value"),
    "identity_merges": ("merged_at", "merged_key", "survivor_key"),
    "identity_splits": ("split_at", "previous_key", "new_key"),
    "shared_identifiers": ("id_type", "id_value"),
    "customers": ("customer_key",),
    "journeys": ("journey_id",),
    "journey_events": ("journey_id", "event_seq"),
    "journey_stages": ("stage_model", "mode", "journey_id"),
    "stage_conversion": (
        "stage_model",
        "mode",
        "cohort_period",
        "cohort",
        "breakdown",
        "breakdown_value",
        "stage_index",
    ),
    "stage_dropout": ("stage_model", "mode", "stage_index", "last_touchpoint", "last_channel"),
    "stage_channel_matrix": ("stage_model", "stage_index", "channel"),
    "stage_survival": ("stage_model", "mode", "stage_index", "t_days"),
    "stage_time_to_next": ("stage_model", "mode", "stage_index", "bucket_index"),
}
"""Tables published as Parquet under marts/ and kept in the warehouse, with the key that orders them
(so that the same inputs give byte-identical files)."""

INTERMEDIATE_TABLES = (
    "int_journey_events",
    "int_event_stages",
    "stage_events",
    "int_journeys",
    "journey_stage_reached",
)


def _create_lake_view(con: duckdb.DuckDBPyConnection, name: str, glob: str, schema: dict[str, str]) -> None:
    """View `name` over the Parquet files of `glob`, or an empty view of the same columns when there are none."""
    if globlib.glob(glob):
        # A view cannot bind its file path; the path is ours, quoted by the one literal helper.
        body = f"select * from read_parquet({db.quote_literal(glob)}, hive_partitioning = true, union_by_name = true)"
    else:
        cols = ", ".join(f"null::{sql_type} as {db.quote_ident(col)}" for col, sql_type in schema.items())
        body = f"select {cols} where false"
    db.execute(con, f"create or replace view {db.quote_ident(name)} as {body}")


def create_lake_views(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Views `events` and `quarantine` over the lake, with absolute paths so any client can open them."""
    _create_lake_view(con, "events", ingest.events_glob(settings), ingest.EVENT_SCHEMA)
    _create_lake_view(con, "quarantine", ingest.quarantine_glob(settings), ingest.QUARANTINE_SCHEMA)


def register_stage_tables(con: duckdb.DuckDBPyConnection, settings: Settings) -> list[str]:
    """Tables stage_definitions, stage_rule_conditions, stage_touchpoint_owners, stage_funnel_modes."""
    models = stage_models_for(settings)
    frames = {
        "stage_definitions": stage_definitions_table(models),
        "stage_rule_conditions": stage_rule_conditions_table(models),
        "stage_touchpoint_owners": touchpoint_owners_table(models),
    }
    import pyarrow as pa

    frames["stage_funnel_modes"] = pa.Table.from_pylist(
        [{"stage_model": m.name, "mode": mode} for m, ref in models for mode in ref.modes],
        schema=pa.schema([("stage_model", pa.string()), ("mode", pa.string())]),
    )
    for name, table in frames.items():
        con.register("_arrow_in", table)
        db.execute(con, f"create or replace table {db.quote_ident(name)} as select * from _arrow_in")
        con.unregister("_arrow_in")
    return [m.name for m, _ in models]


def model_params(settings: Settings, as_of: datetime) -> dict[str, Any]:
    """The bound parameters every SQL model may use, from settings and the run's as-of time."""
    models = stage_models_for(settings)
    keys = attribute_keys(models)
    journey_timeout = parse_duration_us(settings.journey_timeout)
    primary, primary_ref = models[0]
    return {
        "journey_timeout_us": journey_timeout,
        "session_timeout_us": parse_duration_us(settings.session_timeout),
        "dropout_timeout_us": journey_timeout
        if settings.dropout_timeout is None
        else parse_duration_us(settings.dropout_timeout),
        # A path that matches nothing keeps the list non-empty when no rule tests attributes.
        "attribute_paths": [f'$."{k}"' for k in keys] or ['$."__no_attribute__"'],
        "as_of": as_of.replace(tzinfo=None),
        "cohort_period": settings.cohort_period,
        "breakdown_attribute": settings.breakdown_attribute,
        "breakdown_path": f'$."{settings.breakdown_attribute}"' if settings.breakdown_attribute else None,
        "primary_model": primary.name,
        "primary_mode": primary_ref.modes[0],
        # hold_constant attribute per stage model (zipped lists; the path is a value, never SQL text)
        "hold_models": [m.name for m, ref in models if ref.hold_constant],
        "hold_paths": [f'$."{ref.hold_constant}"' for _, ref in models if ref.hold_constant],
    }


def build_journeys(con: duckdb.DuckDBPyConnection, settings: Settings, as_of: datetime) -> dict[str, int]:
    """Journeys, sessions and stage events from resolved events; returns row counts per table."""
    params = model_params(settings, as_of)
    register_stage_tables(con, settings)
    counts = {
        "int_journey_events": db.build_table(con, "intermediate", "int_journey_events", params),
        "int_event_stages": db.build_table(con, "intermediate", "int_event_stages", params),
        "stage_events": db.build_table(con, "intermediate", "int_stage_events", params, target="stage_events"),
        "int_journeys": db.build_table(con, "intermediate", "int_journeys", params),
    }
    return counts


def funnel_specs(settings: Settings) -> list[Any]:
    """FunnelSpec per configured stage model, for journeys.funnel."""
    from journeys.funnel import Exclusion, FunnelSpec

    return [
        FunnelSpec(
            stage_model=m.name,
            n_stages=len(m.stages),
            modes=tuple(ref.modes),
            window_us=parse_duration_us(ref.conversion_window),
            window_from=ref.window_from,
            strict_increase=ref.strict_increase,
            strict_deduplication=ref.strict_deduplication,
            exclusions=tuple(Exclusion(tuple(ex.between), tuple(ex.event_type)) for ex in ref.exclusions),
            hold_constant=ref.hold_constant,
        )
        for m, ref in stage_models_for(settings)
    ]


def build_funnels(con: duckdb.DuckDBPyConnection, settings: Settings) -> int:
    """journey_stage_reached for every configured stage model and mode."""
    from journeys.funnel import build_stage_reached

    return build_stage_reached(con, funnel_specs(settings))


def build_marts(con: duckdb.DuckDBPyConnection, settings: Settings, as_of: datetime) -> dict[str, int]:
    """The stage marts (journey_stages, journeys, journey_events, conversion, dropout, channel matrix)."""
    params = model_params(settings, as_of)
    order = (
        "journey_stages",
        "journeys",
        "journey_events",
        "stage_conversion",
        "stage_dropout",
        "stage_channel_matrix",
        "stage_survival",
        "stage_time_to_next",
    )
    return {name: db.build_table(con, "marts", name, params) for name in order}


def drop_intermediates(con: duckdb.DuckDBPyConnection) -> None:
    """Drop working tables so the published warehouse holds only what analysts should query."""
    for name in (*INTERMEDIATE_TABLES, "event_customers"):
        db.execute(con, f"drop table if exists {db.quote_ident(name)}")
