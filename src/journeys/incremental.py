"""Incremental runs: rebuild only the customers whose events changed, on top of the last published build.

In the manner of Snowplow's manifest-driven models. A run that publishes keeps its whole working file
(every table, before the unpublished ones are dropped) as `state/build.duckdb`, with a fingerprint of what
it was built with (code, SQL models, settings that shape tables, stage models) and the ingest batches its
events came from. The next run, unless asked for a full refresh or the fingerprint differs, starts from a
copy of that file:

- identity is resolved again for the components of the identifier graph that new or changed rows touch
  (`journeys.identity_incremental`; keys stay stable through the carried identity state);
- the affected customers are those with an event of a batch the state has not seen, or whose
  (event, customer) assignment changed (a merge, a split, a late event re-keyed);
- every `partition: customer` model that does not depend on the run's time (`as_of`, `run_at`) is built
  for the affected customers only (`customer_keys`), and its rows replace theirs in the kept table;
- everything else (identity's tables, as-of-dependent journey tables, the aggregate marts) is rebuilt
  from those tables, as in a full run.

The rule that makes this safe: a customer-partitioned model's rows for a customer depend only on that
customer's events, its `customers` row and the configuration, so rows of unaffected customers are what a
full rebuild would produce. `tests/journeys/test_incremental.py` compares every table with a full rebuild
after each day of a month.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from journeys import db, models

STATE_TABLE = "_journeys_build_state"
"""One row in the kept build: the fingerprint it was built with and the batch that published it."""

BATCHES_TABLE = "_journeys_build_batches"
"""Ingest batches (`events.batch_id`) whose events the kept build holds."""

AFFECTED_TABLE = "_journeys_affected_customers"
"""Customer keys an incremental run rebuilds."""

CHECKED_TABLE = "_journeys_checked_suites"
"""Table suites the kept build's tables passed, each with the fingerprint of what it checked (journeys.quality)."""

PREV_PREFIX = "_journeys_prev_"
"""Kept tables are moved to this prefix while the affected customers are rebuilt under the real name."""

ASSIGNMENT_TABLE = "int_event_customers"
"""Which customer each event belongs to; its change between runs marks customers affected."""

RUN_TIME_PARAMS = frozenset({"as_of", "run_at", "batch_id"})
"""Parameters that change every run: a customer-partitioned model using one is rebuilt in full."""

_UNSHAPING_SETTINGS = (
    "data_root",
    "config_dir",
    "memory_limit",
    "threads",
    "schedule",
    "quality",
    "sources",
    "goals",
    "executor",
    "dask_address",
    "dask_workers",
)
"""Settings that do not change the rows of a kept table (sources shape only what ingest loads next; goals only
`alerts`, which every run rebuilds whole; the executor only where the same SQL runs)."""

_OWN_TABLES = (STATE_TABLE, BATCHES_TABLE, AFFECTED_TABLE, CHECKED_TABLE)


def build_state_path(state_dir: Path) -> Path:
    """Where the last published run's full working file is kept for the next incremental run."""
    return state_dir / "build.duckdb"


def _code_digest() -> str:
    """sha256 over the package's code, SQL and stage models: an upgrade rebuilds everything once."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.suffix in (".py", ".sql", ".yml", ".yaml") and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def state_fingerprint(context: Any) -> str:
    """What a kept build was made with; a run whose fingerprint differs rebuilds in full."""
    shaping = context.settings.model_dump(mode="json", exclude=set(_UNSHAPING_SETTINGS))
    catalog = {
        name: [m.sql, m.materialized, m.partition, list(m.params), m.procedure]
        for name, m in sorted(context.catalog.models.items())
    }
    params = {k: v for k, v in context.params.items() if k not in RUN_TIME_PARAMS}
    payload = {
        "code": _code_digest(),
        "settings": shaping,
        "catalog": catalog,
        "params": params,
        "stage_models": repr(context.stage_models),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Plan:
    """How a run builds: 'full' or 'incremental', and why."""

    mode: str
    reason: str


def plan_build(
    state_dir: Path, working: Path, fingerprint: str, *, full_refresh: bool, incremental_executor: str | None = None
) -> Plan:
    """Decide full or incremental; for incremental, the kept build is copied to `working` (never changed).

    `incremental_executor` names an executor that cannot build incrementally: a run that could be incremental
    is full instead, and says so.
    """
    state = build_state_path(state_dir)
    if full_refresh:
        return Plan("full", "a full refresh was asked for")
    if not state.exists():
        return Plan("full", f"no kept build ({state}): the first run on this data root, or its state was removed")
    try:
        with duckdb.connect(str(state), read_only=True) as con:
            kept = db.fetch(con, f"select fingerprint, batch_id from {db.quote_ident(STATE_TABLE)}")
    except duckdb.Error as exc:
        return Plan("full", f"the kept build {state} cannot be read ({type(exc).__name__}); rebuilding it")
    if not kept or kept[0][0] != fingerprint:
        return Plan("full", "the code, SQL models, stage models or table-shaping settings changed since the kept build")
    if incremental_executor is not None:
        return Plan(
            "full",
            f"executor: {incremental_executor} rebuilds every customer on the cluster; the build kept by run"
            f" {kept[0][1]} is not used (incremental runs are single-process: executor: local)",
        )
    working.parent.mkdir(parents=True, exist_ok=True)
    tmp = working.with_name(working.name + ".copy")
    shutil.copyfile(state, tmp)
    os.replace(tmp, working)
    return Plan("incremental", f"on the build kept by run {kept[0][1]}")


def _run_dependent(catalog: models.Catalog, node: str) -> bool:
    own = [m for m in catalog.models.values() if m.name == node or m.procedure == node]
    return any(set(m.params) & RUN_TIME_PARAMS for m in own)


def subset_nodes(catalog: models.Catalog) -> list[str]:
    """Customer-partitioned nodes an incremental run builds for the affected customers only, in build order."""
    partitioned = catalog.partitioned()
    full = {n for n in partitioned if _run_dependent(catalog, n)}
    full |= catalog.downstream(full)
    return [n for n in partitioned if n not in full]


def _outputs(catalog: models.Catalog, node: str) -> list[str]:
    """Tables (not temp scratch or views) a node leaves in the working file."""
    return sorted(
        m.name for m in catalog.models.values() if (m.name == node or m.procedure == node) and m.materialized == "table"
    )


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {r[0] for r in db.fetch(con, "select column_name from duckdb_columns() where table_name = $t", {"t": table})}


def _prev(table: str) -> str:
    return PREV_PREFIX + table


def _start_subset(con: duckdb.DuckDBPyConnection, catalog: models.Catalog) -> None:
    """Find the affected customers and move the kept customer tables aside without their rows."""
    prev_assignment = _prev(ASSIGNMENT_TABLE)
    db.execute(
        con,
        f"""
        create or replace table {AFFECTED_TABLE} as
        with

        kept as (
            select pa.event_id, pa.customer_key
            from {prev_assignment} as pa
            where pa.customer_key is not null
        ),

        now_assigned as (
            select ec.event_id, ec.customer_key
            from {ASSIGNMENT_TABLE} as ec
            where ec.customer_key is not null
        ),

        reassigned as (
            (select * from kept except select * from now_assigned)
            union all
            (select * from now_assigned except select * from kept)
        ),

        new_events as (
            select na.customer_key
            from events as ev
            inner join now_assigned as na on na.event_id = ev.event_id
            where ev.batch_id not in (select kb.batch_id from {BATCHES_TABLE} as kb)
        ),

        final as (
            select ra.customer_key from reassigned as ra
            union
            select ne.customer_key from new_events as ne
        )

        select * from final
        """,
    )
    tables = [t for n in subset_nodes(catalog) for t in _outputs(catalog, n)]
    for t in tables:
        if not db.table_exists(con, t):
            raise RuntimeError(f"the kept build has no table {t}; run with --full-refresh")
        db.execute(con, f"alter table {db.quote_ident(t)} rename to {db.quote_ident(_prev(t))}")
    # The affected customers' kept journeys and events, before any row is removed (tables keyed only by
    # journey or event are cleared through them).
    root = _prev(tables[0])
    db.execute(
        con,
        f"create or replace temp table _journeys_affected_rows as select je.event_id, je.journey_id "
        f"from {db.quote_ident(root)} as je where je.customer_key in (select customer_key from {AFFECTED_TABLE})",
    )
    for t in tables:
        cols = _columns(con, _prev(t))
        key = next((c for c in ("customer_key", "journey_id", "event_id") if c in cols), None)
        if key is None:
            raise models.CatalogError(
                f"model {t} is partition: customer but has no customer_key, journey_id or event_id column to "
                "replace a customer's rows by"
            )
        source = AFFECTED_TABLE if key == "customer_key" else "_journeys_affected_rows"
        db.execute(
            con,
            f"delete from {db.quote_ident(_prev(t))} where {db.quote_ident(key)} in "
            f"(select {db.quote_ident(key)} from {source})",
        )


def _merge(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """The kept rows of `table` take in the rebuilt customers' rows and its name back."""
    prev = db.quote_ident(_prev(table))
    db.execute(con, f"insert into {prev} by name select * from {db.quote_ident(table)}")
    db.execute(con, f"drop table {db.quote_ident(table)}")
    db.execute(con, f"alter table {prev} rename to {db.quote_ident(table)}")


def _pending(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = db.fetch(
        con,
        "select table_name from duckdb_tables() where not temporary and starts_with(table_name, $p)",
        {"p": PREV_PREFIX},
    )
    return {r[0][len(PREV_PREFIX) :] for r in rows} - {ASSIGNMENT_TABLE}


def build_step(con: duckdb.DuckDBPyConnection, context: Any, step: models.Step) -> dict[str, Any]:
    """Build one flow step on a copy of the kept build: affected customers only where that is exact."""
    catalog = context.catalog
    subset = subset_nodes(catalog)
    out: dict[str, Any] = {}
    for node in step.nodes:
        if ASSIGNMENT_TABLE in _outputs(catalog, node) and db.table_exists(con, ASSIGNMENT_TABLE):
            db.execute(con, f"drop table if exists {_prev(ASSIGNMENT_TABLE)}")
            db.execute(con, f"alter table {ASSIGNMENT_TABLE} rename to {_prev(ASSIGNMENT_TABLE)}")
        if node in subset:
            if not db.table_exists(con, AFFECTED_TABLE):
                _start_subset(con, catalog)
            needs = set(catalog.node_reads(node)) & {t for n in subset for t in _outputs(catalog, n)}
            merged_early = needs - _pending(con)
            if merged_early:
                raise models.CatalogError(
                    f"{node} is built per customer but reads {sorted(merged_early)}, already merged for a model "
                    "that needs every customer: its model order cannot run incrementally"
                )
            keys = [r[0] for r in db.fetch(con, f"select customer_key from {AFFECTED_TABLE} order by 1")]
            out[node] = models.build(con, catalog, context, [node], params={"customer_keys": keys})[node]
        else:
            for t in sorted(catalog.node_reads(node) & _pending(con)):
                _merge(con, t)
            out[node] = models.build(con, catalog, context, [node])[node]
    # Tables no later per-customer node reads are complete now; the checks and the publication read them.
    later = [n for s in catalog.steps()[catalog.steps().index(step) + 1 :] for n in s.nodes if n in subset]
    still_needed = {t for n in later for t in _outputs(catalog, n)} | {t for n in later for t in catalog.node_reads(n)}
    for t in sorted(_pending(con) - still_needed):
        _merge(con, t)
    if not later and not (_pending(con)):
        out["incremental"] = {
            "affected_customers": db.fetch(con, f"select count(*) from {AFFECTED_TABLE}")[0][0]
            if db.table_exists(con, AFFECTED_TABLE)
            else 0
        }
        db.execute(con, f"drop table if exists {AFFECTED_TABLE}")
        db.execute(con, f"drop table if exists {_prev(ASSIGNMENT_TABLE)}")
    return out


def seal_build(con: duckdb.DuckDBPyConnection, fingerprint: str, batch_id: str) -> None:
    """Record in the working file what it was built with and from, so the next run can start from it."""
    db.execute(
        con,
        f"create or replace table {STATE_TABLE} as select $f as fingerprint, $b as batch_id",
        {
            "f": fingerprint,
            "b": batch_id,
        },
    )
    db.execute(con, f"create or replace table {BATCHES_TABLE} as select distinct ev.batch_id from events as ev")
    db.execute(con, "checkpoint")


def keep_build(working: Path, target: Path) -> Path:
    """Copy the sealed working file to `target`, the next kept build (the published set's pending state)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(working, target)
    return target


def drop_build_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Remove the bookkeeping tables from a file about to become the analysts' warehouse."""
    for t in _OWN_TABLES:
        db.execute(con, f"drop table if exists {t}")
