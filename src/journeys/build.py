"""Build the warehouse after ingestion: the run's context, the lake views and the catalog's models.

Every function takes an open connection and the run context and produces named tables; nothing here
holds data in Python. What is built, in which order and by which flow task comes from the model catalog
(`journeys.models`); everything after identity resolution partitions by customer, so it can run per
`bucket` (customers.bucket) without changing the SQL.
"""

from __future__ import annotations

import glob as globlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import duckdb

from journeys import db, incremental, ingest, models
from journeys.config import Settings, parse_duration_us
from journeys.funnel import Exclusion, FunnelSpec
from journeys.stages import StageModel, attribute_keys, stage_models_for


@dataclass(frozen=True)
class RunContext:
    """Everything one run needs, resolved once when it starts: later edits to the config do not leak in."""

    settings: Settings
    as_of: datetime
    batch_id: str
    stage_models: tuple[tuple[StageModel, Any], ...]
    funnel_specs: tuple[FunnelSpec, ...]
    catalog: models.Catalog
    params: Mapping[str, Any] = field(default_factory=dict)
    keep_scratch: bool = False  # keep procedures' temp tables (to inspect or test them); never in a run
    mode: str = "full"  # "incremental": the working file is a copy of the kept build (journeys.incremental)
    fingerprint: str = ""  # what the run builds with (journeys.incremental.state_fingerprint), set by the flow

    @property
    def audit_history(self) -> dict[str, Path]:
        """Where the rows of earlier runs of each audit table are kept."""
        return {t: self.settings.state_dir / f"{t}.parquet" for t in AUDIT_TABLES}

    @property
    def previous_identity_map(self) -> Path | None:
        """The identity state the previous run left, if any (keys stay stable across runs)."""
        state = identity_state_path(self.settings)
        if state.exists():
            return state
        # Data roots published before the state moved to state/ carry it only as the mart.
        legacy = self.settings.marts_dir / "identity_map" / "identity_map.parquet"
        return legacy if legacy.exists() else None


AUDIT_TABLES = ("identity_merges", "identity_splits")
"""Tables whose rows accumulate over runs; their history is kept in state/."""


def identity_state_path(settings: Settings) -> Path:
    """Where the published identity map is kept for the next run's stable keys."""
    return settings.state_dir / "identity_map.parquet"


def runs_state_path(settings: Settings) -> Path:
    """Where the history of published runs is kept; each run rebuilds its `runs` table from it."""
    return settings.state_dir / "runs.parquet"


RUNS_SCHEMA = {
    "batch_id": "varchar",
    "flow_run_id": "varchar",
    "as_of": "timestamp",
    "published_at": "timestamp",
    "landing_files": "bigint",
    "files_ingested": "bigint",
    "rows_read": "bigint",
    "rows_loaded": "bigint",
    "rows_quarantined": "bigint",
    "rows_duplicate": "bigint",
    "rows_held": "bigint",
    "rows_released": "bigint",
    "rows_replaced": "bigint",
    "rows_blank": "bigint",
    "events_in_lake": "bigint",
    "expectations": "bigint",
    "events_checked": "bigint",
    "event_batches": "varchar[]",
    "quality": "varchar",
    "quality_warnings": "varchar[]",
    "quality_report": "varchar",
}


def funnel_specs(stage_models: list[tuple[StageModel, Any]] | tuple[tuple[StageModel, Any], ...]) -> list[FunnelSpec]:
    """FunnelSpec per configured stage model, for journeys.funnel."""
    return [
        FunnelSpec(
            stage_model=m.name,
            n_stages=len(m.stages),
            modes=tuple(ref.modes),
            window_us=parse_duration_us(ref.conversion_window),
            window_from=ref.window_from,
            strict_increase=ref.strict_increase,
            strict_deduplication=ref.strict_deduplication,
            exclusions=tuple(
                Exclusion(tuple(ex.between), tuple(ex.event_type), tuple(ex.channel), tuple(ex.touchpoint))
                for ex in ref.exclusions
            ),
            hold_constant=ref.hold_constant,
            optional_stages=m.optional_stage_indexes,
        )
        for m, ref in stage_models
    ]


def model_params(settings: Settings, as_of: datetime, stage_models: Any = None) -> dict[str, Any]:
    """The bound parameters every SQL model may use, from settings and the run's as-of time."""
    loaded = list(stage_models) if stage_models is not None else stage_models_for(settings)
    keys = attribute_keys(loaded)
    journey_timeout = parse_duration_us(settings.journey_timeout)
    primary, primary_ref = loaded[0]
    return {
        "journey_timeout_us": journey_timeout,
        # Journeys are shared by every stage model: any configured model's start events start one.
        "journey_start_events": sorted({e for m, _ in loaded for e in m.journey_start_events}),
        "session_timeout_us": parse_duration_us(settings.session_timeout),
        "dropout_timeout_us": journey_timeout
        if settings.dropout_timeout is None
        else parse_duration_us(settings.dropout_timeout),
        # A path that matches nothing keeps the list non-empty when no rule tests attributes.
        "attribute_paths": [f'$."{k}"' for k in keys] or ['$."__no_attribute__"'],
        "as_of": as_of.replace(tzinfo=None),
        "run_at": as_of,
        "batch_id": "adhoc",
        "buckets": settings.buckets,
        "cohort_period": settings.cohort_period,
        "breakdown_attribute": settings.breakdown_attribute,
        "breakdown_path": f'$."{settings.breakdown_attribute}"' if settings.breakdown_attribute else None,
        "primary_model": primary.name,
        "primary_mode": primary_ref.modes[0],
        # hold_constant attribute per stage model (zipped lists; the path is a value, never SQL text)
        "hold_models": [m.name for m, ref in loaded if ref.hold_constant],
        "hold_paths": [f'$."{ref.hold_constant}"' for _, ref in loaded if ref.hold_constant],
        # Cost to serve one contact per channel (zipped lists; channels not listed cost 0).
        "cost_channels": sorted(settings.costs),
        "cost_per_contact": [float(settings.costs[c]) for c in sorted(settings.costs)],
        "customer_value": settings.customer_value,
        # The journey-map marts read each stage model's funnel in its first configured mode (zipped lists).
        "map_models": [m.name for m, _ in loaded],
        "map_modes": [ref.modes[0] for _, ref in loaded],
        "top_paths": settings.top_paths,
        "red_min_count": settings.red_points.min_count,
        "red_z": settings.red_points.z,
        "red_min_lift": settings.red_points.min_lift,
        # Every customer unless a run is restricted to one bucket or a set of customers.
        "bucket": None,
        "customer_keys": None,
    }


def run_context(
    settings: Settings, as_of: datetime, batch_id: str = "adhoc", *, keep_scratch: bool = False
) -> RunContext:
    """Resolve the config, stage models, funnel specs and SQL parameters of one run, once."""
    loaded = stage_models_for(settings)
    return RunContext(
        settings=settings,
        as_of=as_of,
        batch_id=batch_id,
        stage_models=tuple(loaded),
        funnel_specs=tuple(funnel_specs(loaded)),
        catalog=models.load_catalog(settings.models_path),
        params=MappingProxyType({**model_params(settings, as_of, loaded), "batch_id": batch_id}),
        keep_scratch=keep_scratch,
    )


def _create_lake_view(
    con: duckdb.DuckDBPyConnection, name: str, glob: str, schema: dict[str, str], portable_from: Path | None = None
) -> None:
    """View `name` over the Parquet files of `glob`, or an empty view of the same columns when there are none.

    With `portable_from` (the warehouse's folder) it is the published form: every reader's types (UTC-aware
    times, JSON as text) and `glob` relative to that folder (see `db.set_file_search_path`).
    """
    portable = portable_from is not None
    cast = {c: _published_type(t) for c, t in schema.items()} if portable else dict(schema)
    twins = [c for c, t in schema.items() if t == ingest.ID_LIST_TYPE] if portable else []
    for c in twins:
        cast[f"{c}_text"] = "varchar"
    if globlib.glob(glob):
        path = os.path.relpath(glob, portable_from) if portable_from is not None else glob
        cols = ", ".join(
            [_view_column(c, t, portable) for c, t in schema.items()]
            # Most BI tools cannot show a list of structs: the same identifiers as JSON text beside it.
            + [f"cast(to_json({db.quote_ident(c)}) as varchar) as {db.quote_ident(f'{c}_text')}" for c in twins]
        )
        # A view cannot bind its file path; the path is ours, quoted by the one literal helper.
        body = (
            f"select {cols} from read_parquet({db.quote_literal(path)}, hive_partitioning = true, union_by_name = true)"
        )
    else:
        body = "select " + ", ".join(f"null::{t} as {db.quote_ident(c)}" for c, t in cast.items()) + " where false"
    db.execute(con, f"create or replace view {db.quote_ident(name)} as {body}")


_HIVE_KEYS = frozenset({"event_date", "source"})
"""Columns the lake keeps only in its folder names (`event_date=`, `source=`), not in the files."""


def _view_column(column: str, sql_type: str, portable: bool) -> str:
    """One column of a lake view: a hive key typed (readers infer it, older DuckDB releases differently)."""
    q = db.quote_ident(column)
    if column in _HIVE_KEYS:
        return f"cast({q} as {sql_type}) as {q}"
    return f"{_published_expr(q, sql_type) if portable else q} as {q}"


def _published_type(sql_type: str) -> str:
    """The type every reader takes: UTC-aware timestamps, JSON as text (DuckDB 1.x clients lack the JSON type)."""
    return {"timestamp": "timestamptz", "json": "varchar"}.get(sql_type, sql_type)


def _published_expr(column: str, sql_type: str) -> str:
    """`column` converted to `_published_type` (naive times are UTC)."""
    if sql_type == "timestamp":
        return f"timezone('UTC', {column})"
    if sql_type == "json":
        return f"cast({column} as varchar)"
    return column


def create_lake_views(con: duckdb.DuckDBPyConnection, settings: Settings, *, portable: bool = False) -> None:
    """Views `events`, `links` and `quarantine` over the lake: absolute paths in a build, portable once published."""
    base = settings.warehouse_path.parent if portable else None
    _create_lake_view(con, "events", ingest.events_glob(settings), ingest.EVENT_SCHEMA, base)
    _create_lake_view(con, "links", ingest.links_glob(settings), ingest.LINK_SCHEMA, base)
    _create_lake_view(con, "quarantine", ingest.quarantine_glob(settings), ingest.QUARANTINE_SCHEMA, base)


def publish_warehouse(con: duckdb.DuckDBPyConnection, context: RunContext) -> list[str]:
    """Give the kept tables and lake views the types every reader takes; return the columns converted.

    Run at publication, after the build was kept for the next incremental run and the identity state was
    written: those keep naive UTC timestamps, what the SQL models compute with. Here every TIMESTAMP of a kept
    table becomes TIMESTAMP WITH TIME ZONE (the same instant, read as UTC), so the Parquet marts carry
    isAdjustedToUTC and pandas, polars and BI tools show the zone; the lake views become portable.
    """
    tables = {m.name for m in context.catalog.kept() if m.materialized == "table"}
    rows = db.fetch(
        con,
        "select table_name, column_name from duckdb_columns() where schema_name = 'main' and not internal"
        " and data_type = 'TIMESTAMP' and list_contains($tables::varchar[], table_name)"
        " and table_name in (select table_name from duckdb_tables() where not temporary)"
        " order by table_name, column_index",
        {"tables": sorted(tables)},
    )
    for table, column in rows:
        t, c = db.quote_ident(table), db.quote_ident(column)
        db.execute(con, f"alter table {t} alter column {c} set data type timestamptz using timezone('UTC', {c})")
    # The views' paths start from the warehouse's folder, which must exist for them to resolve.
    context.settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    db.set_file_search_path(con, [context.settings.warehouse_path.parent])
    create_lake_views(con, context.settings, portable=True)
    return [f"{t}.{c}" for t, c in rows]


def _lake_views(con: duckdb.DuckDBPyConnection, context: RunContext, params: Mapping[str, Any]) -> dict[str, int]:
    create_lake_views(con, context.settings)
    return {"events": db.fetch(con, "select count(*) from events")[0][0]}


models.register(
    models.Procedure(
        name="lake",
        task="resolve-identity",
        layer="staging",
        run=_lake_views,
        outputs=(
            models.Model(
                name="events",
                layer="staging",
                materialized="view",
                publish="warehouse",
                procedure="lake",
                description="Canonical events of the lake (Parquet partitioned by source and event_date).",
                columns={
                    "event_id": "'<source>:<source id>', or '<source>:' + sha256 of the raw row when the source has"
                    " no id, followed by ':<event_type>' when the source lists several events per row; unique over"
                    " the lake (the first occurrence wins, later ones count as duplicates).",
                    "occurred_at": "When the event happened (UTC, microseconds); naive source times are converted"
                    " from the source's configured time zone.",
                    "event_date": "UTC date of occurred_at; the lake's partition key.",
                    "source": "Configured name of the source the event came from.",
                    "channel": "Canonical channel, lower snake case (web, app, email, call_centre, store, ...).",
                    "event_type": "Canonical event type, lower snake case (page_view, email_open, purchase, ...).",
                    "touchpoint": "Named point of contact; '<channel>:<event_type>' when the source gives none.",
                    "identifiers": "The event's identifiers as (id_type, id_value); email and phone are salted sha256"
                    " hex of the normalised value, empty values are left out.",
                    "identifiers_text": "identifiers as JSON text for tools that cannot show a list"
                    ' (\'[{"id_type":"email","id_value":"..."}]\'); \'[]\' when none.',
                    "sentiment": "Sentiment normalised to [-1, 1] from the source's sentiment_scale; null when none.",
                    "revenue": "Revenue in source units (no currency conversion), DECIMAL(18,2); null when none.",
                    "attributes": "JSON object of the source's other columns (not mapped, never identifiers),"
                    " null values left out; '{}' when none. VARCHAR holding the JSON text (DuckDB 1.x clients lack"
                    " the JSON type): json_extract and ->> read it as JSON.",
                    "ingested_at": "Wall-clock time (UTC) at which the ingest batch that loaded the event started.",
                    "batch_id": "Id of the run that loaded the event (in the flow: as_of as YYYYMMDDTHHMMSS, '-',"
                    " 8 hex digits).",
                    "source_file": "Landing file the event came from, relative to the landing folder.",
                    "source_line": "Physical line of the row in that file (CSV: the header is line 1; Parquet: row"
                    " number from 1); the events of one wide row share it.",
                },
            ),
            models.Model(
                name="links",
                layer="staging",
                materialized="view",
                publish="warehouse",
                procedure="lake",
                description="Identifier links of `kind: links` sources (a CRM's order id -> person id): rows that"
                " only join identifiers in the identity graph and are never events (Parquet partitioned by source).",
                columns={
                    "link_id": "'<source>:' + sha256 of the row's sorted identifiers: the same links exported again"
                    " are duplicates, a changed row (a new e-mail) is a new link.",
                    "source": "Configured name of the links source.",
                    "identifiers": "The identifiers the row links as (id_type, id_value), sorted; email and phone are"
                    " salted sha256 hex of the normalised value as in `events`, empty values are left out.",
                    "identifiers_text": "identifiers as JSON text for tools that cannot show a list, as in `events`.",
                    "ingested_at": "Wall-clock time (UTC) at which the ingest batch that loaded the link started.",
                    "batch_id": "Id of the run that loaded the link.",
                    "source_file": "Landing file the link came from, relative to the landing folder.",
                    "source_line": "Physical line of the row in that file (CSV: the header is line 1; Parquet: row"
                    " number from 1).",
                },
            ),
            models.Model(
                name="quarantine",
                layer="staging",
                materialized="view",
                publish="warehouse",
                procedure="lake",
                description="Rejected input rows with file, line, field, column and reason.",
                columns={
                    "source": "Configured name of the source of the rejected row.",
                    "source_file": "Landing file of the row, relative to the landing folder.",
                    "line": "Physical line of the row in that file (CSV: the header is line 1; Parquet: row number"
                    " from 1).",
                    "field": "Canonical field whose check failed first: 'row' (the reader could not parse it),"
                    " 'event_id', 'occurred_at', 'channel', 'event_type', 'revenue' or 'sentiment'.",
                    "column": "Source column the failing field is read from; null for 'channel' and 'event_type'"
                    " and for unparsed rows whose reader names no column.",
                    "reason": "Field, what was expected and what was found, in words (e.g. occurred_at: expected"
                    " timestamp ..., got ...).",
                    "raw": "The row as JSON text: known-safe mapped columns (id, times, channel, event type,"
                    " touchpoint, revenue, sentiment) as read with e-mails and phones redacted, identifier columns"
                    " as 'sha256:' + salted hash, every other column only its shape (digits 9, letters x); an"
                    " unparsed line only its shape.",
                    "batch_id": "Id of the run that quarantined the row.",
                    "quarantined_at": "Wall-clock time (UTC) at which that run's ingest batch started.",
                },
            ),
        ),
    )
)


def _run_history(con: duckdb.DuckDBPyConnection, context: RunContext, params: Mapping[str, Any]) -> dict[str, int]:
    cols = ", ".join(f"{db.quote_ident(c)} {t}" for c, t in RUNS_SCHEMA.items())
    db.execute(con, f"create or replace table runs ({cols})")
    state = runs_state_path(context.settings)
    if state.exists():
        # By name: a history written before a column was added simply has it null.
        db.execute(con, "insert into runs by name select * from read_parquet($p)", {"p": str(state)})
    return {"runs": db.fetch(con, "select count(*) from runs")[0][0]}


models.register(
    models.Procedure(
        name="run_history",
        task="resolve-identity",
        layer="staging",
        run=_run_history,
        outputs=(
            models.Model(
                name="runs",
                layer="staging",
                materialized="table",
                grain=("batch_id",),
                publish="warehouse",
                procedure="run_history",
                description="One row per published run, oldest first: what it is as of, when it was published,"
                " its row accounting and its quality result (history kept in state/runs.parquet).",
                columns={
                    "batch_id": "Id of the run (as_of as YYYYMMDDTHHMMSS, '-', 8 hex digits); the `batch_id` of the"
                    " events it loaded and the 'journeys.batch_id' of the Parquet marts it wrote.",
                    "flow_run_id": "Id of the Prefect flow run; null when the run was not a Prefect flow run.",
                    "as_of": "The time the run was as of (UTC): its scheduled time, or the as-of it was given.",
                    "published_at": "Wall-clock time (UTC) at which the run started publishing; the"
                    " 'journeys.published_at' of its Parquet marts.",
                    "landing_files": "Landing files that matched a source's path glob in this run.",
                    "files_ingested": "Of those, the files new or changed since an earlier run (ingested now).",
                    "rows_read": "Rows read from the ingested files: rows_loaded + rows_quarantined + rows_duplicate"
                    " + rows_held.",
                    "rows_loaded": "Rows loaded into the lake as new events.",
                    "rows_quarantined": "Rows rejected to the quarantine.",
                    "rows_duplicate": "Rows whose event id was already in the lake or earlier in the file.",
                    "rows_held": "Rows later than as_of + quality.max_future, held back in state/held/ (not"
                    " quarantined) until a run's as_of passes them; null for runs before rows were held back.",
                    "rows_released": "Rows held back by earlier runs that this run loaded into the lake (not part"
                    " of rows_read: each row is read once).",
                    "rows_replaced": "Rows of the earlier version of a landing file that arrived again changed (same"
                    " path, new content) which this run took out: loaded rows removed from the lake, quarantine"
                    " records and held rows dropped (not part of rows_read); null for runs before files had versions.",
                    "rows_blank": "Blank rows skipped (not part of rows_read).",
                    "events_in_lake": "Events in the lake after the run: what its tables were built from.",
                    "expectations": "Great Expectations expectations evaluated by the run's quality step.",
                    "events_checked": "Lake events the canonical-events suite checked in this run: those of the"
                    " batches no earlier published run had checked.",
                    "event_batches": "Ingest batches (`events`.`batch_id`) whose events and landing files this run"
                    " checked and published: its own, and those of runs that ingested but died or failed before"
                    " publishing.",
                    "quality": "'passed', or 'warned' when a check configured to warn (freshness, volume) or"
                    " schema drift left a warning.",
                    "quality_warnings": "The warnings of the quality step, one text each; empty when none.",
                    "quality_report": "Path of the run's quality report (reports/quality-<batch_id>.md).",
                },
            ),
        ),
    )
)


def build_models(
    con: duckdb.DuckDBPyConnection, context: RunContext, nodes: list[str] | None = None, **params: Any
) -> dict[str, Any]:
    """Build catalog nodes (default: everything after ingest) in dependency order; return counts per node."""
    return models.build(con, context.catalog, context, nodes, params=params)


def after_identity(catalog: models.Catalog) -> list[str]:
    """Nodes downstream of identity resolution and what they need besides it, in build order."""
    return catalog.order(catalog.upstream(catalog.downstream(["identity"])) - catalog.upstream(["identity"]))


def build_after_identity(con: duckdb.DuckDBPyConnection, context: RunContext, **params: Any) -> dict[str, Any]:
    """Build everything downstream of identity resolution (from events, int_event_customers and customers)."""
    return build_models(con, context, after_identity(context.catalog), **params)


def build_step(con: duckdb.DuckDBPyConnection, context: RunContext, step: models.Step) -> dict[str, Any]:
    """Build the nodes of one flow step (see `Catalog.steps`); an incremental run rebuilds affected customers."""
    if context.mode == "incremental":
        return incremental.build_step(con, context, step)
    return build_models(con, context, list(step.nodes))


def drop_intermediates(con: duckdb.DuckDBPyConnection, context: RunContext) -> list[str]:
    """Drop working tables so the published warehouse holds only what analysts should query."""
    incremental.drop_build_tables(con)
    return models.drop_unpublished(con, context.catalog)
