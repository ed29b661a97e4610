"""Incremental identity resolution: re-resolve only the components of the identifier graph that new rows touch.

A component of the unguarded identifier graph (identifiers linked by sharing an event or a link row, guardrails
ignored: `int_identity_components`) is closed: every row carrying one of its identifiers, and every identifier
of such a row, is in it. What the guarded resolution computes for its identifiers (hubs, touches, per-type
limits, violations, support ranks, labels, key claims, merges, splits, shared support, first and last seen)
reads only its own rows, the configuration and the previous identity map, and compares node ids only inside
it or, for a previous key's claims, among the components holding that key's identifiers, which all lie in the
one kept component the key was resolved in. Node ids are renumbered in the same order on any closed subset,
and fresh keys are hashes of identifiers. So when the previous identity map is the kept build's own, a
component whose rows did not change resolves as the kept build resolved it (same keys, no merge, no split),
and an incremental run:

1. takes the rows of batches the kept build has not seen, and the kept rows no longer in the lake under a
   batch it has seen (removed, or delivered again in a changed landing file);
2. marks touched the kept components of their identifiers (a new identifier has none: it joins through its rows);
3. runs the unchanged resolution (`identity.resolve_identities`) over the rows of the touched components plus
   the new rows only, a union of whole components of the new graph (new rows may merge kept components);
4. splices: the kept rows of untouched components stay, the touched components' rows are the new ones.

When that argument does not hold (no identity state, a state that is not the kept build's, a kept build without
the component tables, identity tables this module does not know how to splice) the run resolves the whole lake
and says why. `tests/journeys/test_incremental.py` compares every table with a full rebuild day after day.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from journeys import db, identity, incremental, models
from journeys.config import Settings

KEPT_PREFIX = "_journeys_identity_kept_"
"""The kept build's identity tables are moved to this prefix while the touched components are resolved."""

SEEN_ROWS = "_journeys_identity_seen_rows"
"""Ids of the lake's events and link rows of batches the kept build holds."""

TOUCHED = "_journeys_identity_touched"
"""Kept components that changed: a new row carries one of their identifiers, or one of their rows left."""

SCOPE_ROWS = "_journeys_identity_scope"
"""Ids of the rows re-resolved: the lake rows of the touched components and every new row."""

BY_IDENTIFIER = ("identity_map", "shared_identifiers", "int_identity_components")
"""Identity tables with one row per identifier: kept rows of identifiers outside the touched components stay."""

SPLICED = frozenset(
    {
        *BY_IDENTIFIER,
        "int_identity_event_components",  # per row, by its component
        "customers",  # per customer key, by the key's identifiers
        "int_event_customers",  # per event: the kept rows of the events not re-resolved
        "identity_merges",  # audit tables: this run's rows and the history (state/), as in a full run
        "identity_splits",
    }
)
"""Every table the identity procedure leaves, each with its splice rule below."""

EVENT_COLUMNS = ("event_id", "occurred_at", "identifiers", "batch_id")
LINK_COLUMNS = ("link_id", "identifiers", "batch_id")
"""The columns of `events` and `links` the shipped identity models read: the narrowed tables hold only these
(each column is read for every row of the lake). With models of one's own (`models_dir`) they hold every column."""

_OWN = (SEEN_ROWS, TOUCHED, SCOPE_ROWS, "_journeys_identity_new_events", "_journeys_identity_new_links")


def _kept(table: str) -> str:
    return KEPT_PREFIX + table


def kept_assignment(con: duckdb.DuckDBPyConnection) -> str:
    """Where the kept build's int_event_customers is: set aside by `incremental.build_step`, or still in place."""
    moved = incremental.PREV_PREFIX + incremental.ASSIGNMENT_TABLE
    return moved if db.table_exists(con, moved) else incremental.ASSIGNMENT_TABLE


def why_full(con: duckdb.DuckDBPyConnection, catalog: models.Catalog, previous_identity_map: str | None) -> str | None:
    """Why this incremental run must resolve identity over the whole lake, or None when the touched components do."""
    made = {m.name for m in catalog.models.values() if m.procedure == "identity" and m.materialized == "table"}
    if made - SPLICED:
        return f"the identity procedure makes tables an incremental run cannot splice: {sorted(made - SPLICED)}"
    needed = sorted((SPLICED - {incremental.ASSIGNMENT_TABLE}) | {incremental.BATCHES_TABLE})
    missing = [t for t in needed if not db.table_exists(con, t)]
    if missing or not db.table_exists(con, kept_assignment(con)):
        return f"the kept build has no {', '.join(missing) or incremental.ASSIGNMENT_TABLE}"
    if previous_identity_map is None:
        return "there is no identity state to carry keys from"
    differing = db.fetch(
        con,
        """
        with

        state as (
            select pm.id_type, pm.id_value, pm.customer_key, pm.first_seen_at
            from read_parquet($previous) as pm
            where not coalesce(pm.is_shared, false) and pm.customer_key is not null
        ),

        kept as (
            select km.id_type, km.id_value, km.customer_key, km.first_seen_at
            from identity_map as km
            where not coalesce(km.is_shared, false) and km.customer_key is not null
        ),

        -- both hold one row per identifier: a join, far cheaper than except all both ways
        final as (
            select count(*) as n_identifiers
            from state as st
            full outer join kept as kp
                on kp.id_type = st.id_type and kp.id_value = st.id_value
            where st.id_type is null
                or kp.id_type is null
                or st.customer_key is distinct from kp.customer_key
                or st.first_seen_at is distinct from kp.first_seen_at
        )

        select * from final
        """,
        {"previous": str(previous_identity_map)},
    )[0][0]
    if differing:
        # Untouched components keep the kept build's keys, which are right only for the state it resolved from.
        return (
            f"the identity state {previous_identity_map} is not the kept build's identity_map ({differing} linked"
            " identifiers differ: a run stopped between writing it and publishing)"
        )
    return None


def _find_scope(con: duckdb.DuckDBPyConnection, narrow: bool) -> None:
    """The new rows, the touched kept components and the rows to re-resolve (SEEN_ROWS, TOUCHED, SCOPE_ROWS)."""
    batches = db.quote_ident(incremental.BATCHES_TABLE)
    db.execute(
        con,
        """
        create or replace temp table _journeys_identity_lake_rows as
        with

        lake_events as (
            select ev.event_id as row_id, ev.batch_id from events as ev
        ),

        lake_links as (
            select lk.link_id as row_id, lk.batch_id from links as lk
        ),

        final as (
            select * from lake_events
            union all
            select * from lake_links
        )

        select * from final
        """,
    )
    db.execute(
        con,
        f"create or replace temp table {SEEN_ROWS} as select lr.row_id from _journeys_identity_lake_rows as lr"
        f" semi join {batches} as kb on kb.batch_id = lr.batch_id",
    )
    unseen = [
        r[0]
        for r in db.fetch(
            con,
            f"select distinct lr.batch_id from _journeys_identity_lake_rows as lr"
            f" anti join {batches} as kb on kb.batch_id = lr.batch_id order by 1",
        )
    ]
    db.execute(con, "drop table _journeys_identity_lake_rows")
    # Filtering by the few new batch ids as values lets the Parquet scan skip the older files (an anti join
    # with the kept batches would read every column of the whole lake).
    for name, source, columns in (
        ("_journeys_identity_new_events", "events", EVENT_COLUMNS if narrow else None),
        ("_journeys_identity_new_links", "links", LINK_COLUMNS if narrow else None),
    ):
        db.execute(
            con,
            f"create or replace temp table {name} as select {_columns('nr', columns)} from {source} as nr"
            " where nr.batch_id in (select unnest($unseen::varchar[]))",
            {"unseen": unseen},
        )
    kept_components = db.quote_ident(_kept("int_identity_components"))
    kept_rows = db.quote_ident(_kept("int_identity_event_components"))
    db.execute(
        con,
        f"""
        create or replace temp table {TOUCHED} as
        with

        new_rows as (
            select ne.identifiers from _journeys_identity_new_events as ne
            union all
            select nl.identifiers from _journeys_identity_new_links as nl
        ),

        new_identifiers as (
            select distinct
                ni.ident.id_type as id_type,
                ni.ident.id_value as id_value
            from (select unnest(nr.identifiers) as ident from new_rows as nr) as ni
        ),

        joined as (
            select kc.component
            from {kept_components} as kc
            semi join new_identifiers as ni on ni.id_type = kc.id_type and ni.id_value = kc.id_value
        ),

        -- a kept row not in the lake under a seen batch was removed or delivered again (maybe changed)
        left_rows as (
            select kr.component
            from {kept_rows} as kr
            anti join {SEEN_ROWS} as sr on sr.row_id = kr.event_id
        ),

        final as (
            select jo.component from joined as jo
            union
            select lr.component from left_rows as lr
        )

        select * from final
        """,
    )
    db.execute(
        con,
        f"""
        create or replace temp table {SCOPE_ROWS} as
        with

        touched_rows as (
            select kr.event_id as row_id
            from {kept_rows} as kr
            semi join {TOUCHED} as tc on tc.component = kr.component
            semi join {SEEN_ROWS} as sr on sr.row_id = kr.event_id
        ),

        new_rows as (
            select ne.event_id as row_id from _journeys_identity_new_events as ne
            union all
            select nl.link_id as row_id from _journeys_identity_new_links as nl
        ),

        final as (
            select tr.row_id from touched_rows as tr
            union all
            select nr.row_id from new_rows as nr
        )

        select * from final
        """,
    )


def _splice(con: duckdb.DuckDBPyConnection, assignment: str) -> None:
    """Give every identity table the kept rows of the untouched components beside the re-resolved ones.

    The kept tables take in the re-resolved rows (few) in place of their touched ones and their names back:
    cheaper than copying the kept rows (most) into the new tables.
    """
    kept_map = db.quote_ident(_kept("identity_map"))
    db.execute(
        con,
        "create or replace temp table _journeys_identity_touched_ids as select kc.id_type, kc.id_value"
        f" from {db.quote_ident(_kept('int_identity_components'))} as kc"
        f" semi join {TOUCHED} as tc on tc.component = kc.component",
    )
    # A customer is a guarded component inside one unguarded component; its linked identifiers carry its key.
    db.execute(
        con,
        f"create or replace temp table _journeys_identity_touched_keys as select distinct km.customer_key"
        f" from {kept_map} as km semi join _journeys_identity_touched_ids as ti"
        " on ti.id_type = km.id_type and ti.id_value = km.id_value"
        " where not km.is_shared and km.customer_key is not null",
    )
    by_identifier = (
        "using _journeys_identity_touched_ids as ti where ti.id_type = kt.id_type and ti.id_value = kt.id_value"
    )
    touched_rows = {
        **{table: by_identifier for table in BY_IDENTIFIER},
        "int_identity_event_components": f"using {TOUCHED} as tc where tc.component = kt.component",
        "customers": "using _journeys_identity_touched_keys as tk where tk.customer_key = kt.customer_key",
    }
    for table, touched in touched_rows.items():
        kept, new = db.quote_ident(_kept(table)), db.quote_ident(table)
        db.execute(con, f"delete from {kept} as kt {touched}")
        db.execute(con, f"insert into {kept} by name select nw.* from {new} as nw")
        db.execute(con, f"drop table {new}")
        db.execute(con, f"alter table {kept} rename to {new}")
    # Events of seen batches outside the scope keep their customer (or none: an event without identifiers). The
    # kept assignment stays as it is: the incremental build compares the two to find the affected customers.
    db.execute(
        con,
        f"insert into int_event_customers by name select ka.* from {db.quote_ident(assignment)} as ka"
        f" semi join {SEEN_ROWS} as sr on sr.row_id = ka.event_id"
        f" anti join {SCOPE_ROWS} as sc on sc.row_id = ka.event_id",
    )
    db.execute(con, "drop table _journeys_identity_touched_ids")
    db.execute(con, "drop table _journeys_identity_touched_keys")


def _columns(alias: str, columns: tuple[str, ...] | None) -> str:
    if columns is None:
        return f"{alias}.*"
    return ", ".join(f"{alias}.{db.quote_ident(c)}" for c in columns)


def _shadow_lake(con: duckdb.DuckDBPyConnection, narrow: bool) -> list[str]:
    """Temp tables `events` and `links` of the scope's rows only, which the resolution's models read first."""
    made = []
    for name, key, columns, new in (
        ("events", "event_id", EVENT_COLUMNS if narrow else None, "_journeys_identity_new_events"),
        ("links", "link_id", LINK_COLUMNS if narrow else None, "_journeys_identity_new_links"),
    ):
        if db.table_exists(con, name, temporary=True):
            continue  # identity.ensure_links's empty stand-in: nothing to narrow
        # The kept rows of the touched components from the lake (a scan of a few columns), the new ones as read.
        db.execute(
            con,
            f"create temp table {name} as select {_columns('lr', columns)} from {name} as lr"
            f" semi join {SCOPE_ROWS} as sc on sc.row_id = lr.{key}"
            f" anti join {new} as nr on nr.{key} = lr.{key}"
            f" union all select {_columns('nr', columns)} from {new} as nr",
        )
        made.append(name)
    return made


def resolve_touched(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    *,
    run_at: datetime,
    previous_identity_map: str,
    catalog: models.Catalog,
    batch_id: str = "adhoc",
    audit_history: Mapping[str, Path] | None = None,
    keep_intermediate: bool = False,
) -> identity.IdentityReport:
    """Re-resolve the components touched since the kept build (see the module); the tables cover the whole lake."""
    assignment = kept_assignment(con)
    # The audit tables are rebuilt whole (this run's rows and their history), as a full resolution does.
    moved = sorted(SPLICED - {"identity_merges", "identity_splits", incremental.ASSIGNMENT_TABLE})
    if assignment == incremental.ASSIGNMENT_TABLE:
        moved.append(assignment)
        assignment = _kept(assignment)
    for table in moved:
        db.execute(con, f"drop table if exists {db.quote_ident(_kept(table))}")
        db.execute(con, f"alter table {db.quote_ident(table)} rename to {db.quote_ident(_kept(table))}")
    identity.ensure_links(con)
    # Identity models of one's own may read any column of the lake.
    narrow = Path(catalog.models_dir).resolve() == models.shipped_models_dir().resolve()
    _find_scope(con, narrow)
    shadows = _shadow_lake(con, narrow)
    try:
        report = identity.resolve_identities(
            con,
            settings,
            run_at=run_at,
            previous_identity_map=previous_identity_map,
            catalog=catalog,
            batch_id=batch_id,
            audit_history=audit_history,
            keep_intermediate=keep_intermediate,
        )
    finally:
        for name in shadows:
            db.execute(con, f"drop table if exists temp.main.{db.quote_ident(name)}")
    _splice(con, assignment)
    n_identifiers, n_customers, n_resolved, n_unresolved, n_shared, n_hubs, n_touched, n_rows = db.fetch(
        con,
        f"""
        select
            (select count(*) from identity_map) as n_identifiers,
            (select count(distinct im.customer_key) from identity_map as im where not im.is_shared) as n_customers,
            (select count(ec.customer_key) from int_event_customers as ec) as n_events_resolved,
            (select count(*) - count(ec.customer_key) from int_event_customers as ec) as n_events_unresolved,
            (select count(*) from shared_identifiers) as n_shared,
            (select count(*) from shared_identifiers as si where si.reason = 'hub') as n_hubs,
            (select count(*) from {TOUCHED}) as n_touched,
            (select count(*) from {SCOPE_ROWS}) as n_rows
        """,
    )[0]
    for table in moved:
        db.execute(con, f"drop table if exists {db.quote_ident(_kept(table))}")
    if not keep_intermediate:
        for table in _OWN:
            db.execute(con, f"drop table if exists {table}")
    return identity.IdentityReport(
        n_identifiers=n_identifiers,
        n_customers=n_customers,
        n_events_resolved=n_resolved,
        n_events_unresolved=n_unresolved,
        passes=report.passes,
        n_merges=report.n_merges,
        n_shared_identifiers=n_shared,
        n_splits=report.n_splits,
        n_hubs=n_hubs,
        resolution="incremental",
        resolution_reason=f"{n_touched} kept components changed; re-resolved {report.n_identifiers} identifiers"
        f" of {n_rows} rows",
        n_identifiers_resolved=report.n_identifiers,
    )


def resolve_step(con: duckdb.DuckDBPyConnection, context: Any) -> dict[str, Any]:
    """The identity step of an incremental run: the touched components only, or the whole lake and why."""
    previous = context.previous_identity_map
    common: dict[str, Any] = {
        "run_at": context.as_of,
        "catalog": context.catalog,
        "batch_id": context.batch_id,
        "audit_history": context.audit_history,
        "keep_intermediate": context.keep_scratch,
    }
    identity.ensure_links(con)
    reason = why_full(con, context.catalog, str(previous) if previous else None)
    if reason is None:
        report = resolve_touched(con, context.settings, previous_identity_map=str(previous), **common)
    else:
        report = identity.resolve_identities(
            con, context.settings, previous_identity_map=str(previous) if previous else None, **common
        )
        report.resolution_reason = reason
    return dict(vars(report))
