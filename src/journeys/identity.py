"""Identity resolution: link the identifiers seen on the same event into customers, with guardrails.

Set-based in DuckDB: Python loops only over identifier types (priority order) and connected-component
passes, never over rows. SQL models live in `sql/intermediate/int_identit*.sql` and `sql/marts/`.

First, hubs: a value that shares events with more distinct identifiers than one person could hold (a call
centre's own number on hundreds of visitors' web forms) is held back whatever its type's priority.
Then per identifier type, highest priority first (a "stage"):
1. touches: which already-linked components each value of the type shares an event with;
2. a value touching several components whose union would break any type's limit is shared (a
   household device between two customer_ids) and not used for linking, and so is a hub of the type;
3. tentative components over anchor links (value -> component) and peer links (values of the type on
   one event); a tentative component that still breaks a limit keeps only single-component anchors;
4. a component holding more values of the type than its limit keeps the best-supported ones.
Components come from label propagation with hooking and pointer jumping, a few passes even on long chains.
Rows are numbered once (`int_identity_rows`) and identifiers once (`int_identity_nodes`): every model after
joins and groups those integers, and each scratch table is dropped once no later model reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from journeys import db, models
from journeys.config import Settings

_MAX_CC_PASSES = 200


@dataclass
class IdentityReport:
    """Counts from one identity-resolution run."""

    n_identifiers: int
    n_customers: int
    n_events_resolved: int
    n_events_unresolved: int
    passes: int
    n_merges: int
    n_shared_identifiers: int
    n_splits: int
    n_hubs: int = 0  # shared identifiers held back as hubs (identity.max_links_per_value)
    resolution: str = "full"  # "incremental": only the components touched since the kept build
    resolution_reason: str = ""  # what the incremental resolution re-resolved, or why a run resolved in full
    n_identifiers_resolved: int | None = None  # identifiers this run resolved (all of them in a full resolution)


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> Any:
    return db.fetch(con, sql, params)[0][0]


def _build(
    con: duckdb.DuckDBPyConnection, cat: models.Catalog, name: str, params: dict[str, Any] | None = None
) -> None:
    """Materialise one identity model as its header says (scratch models are TEMP: they live in memory and
    spill to the temp directory, and are never compressed into the database file)."""
    models.materialize(con, cat.models[name], params or {})


def _build_counted(
    con: duckdb.DuckDBPyConnection, cat: models.Catalog, name: str, params: dict[str, Any] | None = None
) -> int:
    """Materialise an identity model and return its row count."""
    _build(con, cat, name, params)
    return _scalar(con, f"select count(*) from {db.quote_ident(name)}")


def _replace(con: duckdb.DuckDBPyConnection, source: str, target: str) -> None:
    """Make table `source` the new `target` (models cannot read the table they replace)."""
    db.execute(con, f"drop table if exists {db.quote_ident(target)}")
    db.execute(con, f"alter table {db.quote_ident(source)} rename to {db.quote_ident(target)}")


_STAGE_MODELS = (
    "int_identity_touches",
    "int_identity_component_counts",
    "int_identity_bridges",
    "int_identity_stage_edges",
    "int_identity_cc_seed",
    "int_identity_cc_hook",
    "int_identity_cc_jump",
    "int_identity_violations",
    "int_identity_stage_values",
    "int_identity_stage_edges_kept",
    "int_identity_stage_shared",
    "int_identity_labels_next",
)
_FINAL_MODELS = (
    "int_identity_previous",
    "int_identity_key_claims",
    "int_identity_keys",
    "int_identity_linked_events",
    "int_identity_shared_support",
    "int_event_customers",
    "identity_map",
    "identity_merges",
    "identity_splits",
    "shared_identifiers",
    "customers",
)
_STAGE_SCRATCH = (
    "int_identity_hubs",
    "int_identity_touches",
    "int_identity_component_counts",
    "int_identity_bridges",
    "int_identity_stage_edges",
    "int_identity_stage_edges_kept",
    "int_identity_violations",
    "int_identity_stage_values",
    "int_identity_stage_shared",
    "int_identity_cc_edges",
    "int_identity_cc_labels",
)


def _release(
    con: duckdb.DuckDBPyConnection, cat: models.Catalog, keep: bool, tables: tuple[str, ...], later: tuple[str, ...]
) -> None:
    """Drop scratch tables that no model of `later` reads (unless kept for inspection)."""
    # Scratch tables are in-memory temp tables counted against memory_limit: at 10M events they held about the
    # whole limit until the end, so every later statement spilled. A custom catalog's later model that still
    # reads one keeps it.
    if keep:
        return
    still_read = {t for m in later if m in cat.models for t in cat.models[m].depends_on}
    for table in tables:
        if table not in still_read:
            db.execute(con, f"drop table if exists {db.quote_ident(table)}")


def _blocked_patterns(con: duckdb.DuckDBPyConnection, patterns: list[str]) -> list[str]:
    """Check that DuckDB (RE2) accepts every blocked pattern; a clear error names the one it rejects."""
    for p in patterns:
        try:
            db.fetch(con, "select regexp_matches('', $p)", {"p": p})
        except duckdb.Error as exc:
            raise ValueError(
                f"identity.blocked_patterns: {p!r} is not a valid RE2 regex (no backreferences/lookaround): {exc}"
            ) from exc
    return patterns


def ensure_links(con: duckdb.DuckDBPyConnection) -> None:
    """An empty `links` table when the caller gave only `events` (no link source): int_identifiers reads both."""
    from journeys.ingest import LINK_SCHEMA

    if db.fetch(con, "select count(*) from duckdb_views() where view_name = 'links'")[0][0]:
        return
    if db.fetch(con, "select count(*) from duckdb_tables() where table_name = 'links'")[0][0]:
        return
    cols = ", ".join(f"{db.quote_ident(c)} {t}" for c, t in LINK_SCHEMA.items())
    db.execute(con, f"create temp table links ({cols})")


def _label_sum(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """Sum of a labelling's labels: a pass changed a label iff the sum fell (labels never grow, nodes stay)."""
    # One scan instead of joining the old and the new labelling node by node to count the changed labels.
    return int(_scalar(con, f"select coalesce(sum(label), 0) from {db.quote_ident(table)}"))


def connected_components(con: duckdb.DuckDBPyConnection, cat: models.Catalog | None = None) -> int:
    """Label `int_identity_cc_edges(a, b)` into `int_identity_cc_labels(node_id, label = min node)`; return passes."""
    cat = cat or models.load_catalog()
    _build(con, cat, "int_identity_cc_seed")
    _replace(con, "int_identity_cc_seed", "int_identity_cc_labels")
    if _scalar(con, "select count(*) from int_identity_cc_labels") == 0:
        return 0
    label_sum = _label_sum(con, "int_identity_cc_labels")
    passes = 0
    while True:
        passes += 1
        if passes > _MAX_CC_PASSES:
            raise RuntimeError(f"connected components did not converge in {_MAX_CC_PASSES} passes")
        _build(con, cat, "int_identity_cc_hook")
        hooked_sum = _label_sum(con, "int_identity_cc_hook")
        _replace(con, "int_identity_cc_hook", "int_identity_cc_labels")
        if hooked_sum == label_sum:
            return passes
        label_sum = hooked_sum
        # Shortcut to stars: each jump halves every pointer path, so this loop is logarithmic.
        while True:
            _build(con, cat, "int_identity_cc_jump")
            jumped_sum = _label_sum(con, "int_identity_cc_jump")
            _replace(con, "int_identity_cc_jump", "int_identity_cc_labels")
            if jumped_sum == label_sum:
                break
            label_sum = jumped_sum


def _components_of(con: duckdb.DuckDBPyConnection, cat: models.Catalog, edges_table: str) -> int:
    db.execute(
        con,
        f"create or replace temp table int_identity_cc_edges as select a, b from {db.quote_ident(edges_table)}",
    )
    return connected_components(con, cat)


def _run_stage(con: duckdb.DuckDBPyConnection, cat: models.Catalog, params: dict[str, Any]) -> int:
    """Add one identifier type to the linked graph under the guardrails; return component passes."""
    for model in (
        "int_identity_touches",
        "int_identity_component_counts",
        "int_identity_bridges",
        "int_identity_stage_edges",
    ):
        _build(con, cat, model, params)
    passes = _components_of(con, cat, "int_identity_stage_edges")
    n_violations = _build_counted(con, cat, "int_identity_violations", params)
    _build(con, cat, "int_identity_stage_values", params)
    if n_violations:
        _build(con, cat, "int_identity_stage_edges_kept", params)
        passes += _components_of(con, cat, "int_identity_stage_edges_kept")
    _build(con, cat, "int_identity_stage_shared", params)
    db.execute(
        con,
        "insert into int_identity_shared select s.node_id, $stage_rank, s.reason from int_identity_stage_shared as s",
        params,
    )
    _build(con, cat, "int_identity_labels_next")
    _replace(con, "int_identity_labels_next", "int_identity_labels")
    return passes


def resolve_identities(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    *,
    run_at: datetime,
    previous_identity_map: str | None = None,
    guardrails: bool = True,
    keep_intermediate: bool = False,
    catalog: models.Catalog | None = None,
    batch_id: str = "adhoc",
    audit_history: Mapping[str, Path] | None = None,
) -> IdentityReport:
    """Resolve `events` into int_event_customers, identity_map, identity_merges, identity_splits, shared_identifiers
    and customers (and int_identity_components, int_identity_event_components: what the next incremental run
    re-resolves by).

    With `previous_identity_map` (the last published identity_map) keys stay stable: a previous key goes to the
    component holding most of its identifiers. Two previous keys in one component merge (identity_merges); a
    previous key whose identifiers now lie in several components splits (identity_splits: one row per
    component that left it), e.g. after a newly blocked value or a lower limit removed the link that held
    them together. identity_splits is always created, empty without a previous map.

    `audit_history` maps identity_merges / identity_splits to the Parquet file of earlier runs' rows, which
    are kept beside this run's (the audit must survive a rerun that merges nothing).
    """
    cat = catalog or models.load_catalog(settings.models_path)
    ident = settings.identity
    patterns = _blocked_patterns(con, list(ident.blocked_patterns))
    ensure_links(con)
    _build(con, cat, "int_identity_rows")
    _build(
        con,
        cat,
        "int_identifiers",
        {
            "blocked_values": sorted({v.strip().lower() for v in ident.blocked_values}),
            "has_blocked_patterns": bool(patterns),
            "blocked_regex": "|".join(f"(?:{p})" for p in patterns),
        },
    )

    present = {r[0] for r in db.fetch(con, "select distinct id_type from int_identifiers")}
    type_order = [t for t in ident.priority if t in present] + sorted(present - set(ident.priority))
    # Without guardrails every limit is null (unlimited): the same stages then give plain connected components.
    type_limits = [
        max(1, ident.max_values_per_type[t]) if guardrails and t in ident.max_values_per_type else None
        for t in type_order
    ]
    n_identifiers = _build_counted(con, cat, "int_identity_nodes", {"type_order": type_order})
    _build(con, cat, "int_identity_event_nodes")
    components = ("int_identity_unguarded_edges", "int_identity_node_components", "int_identity_event_components")
    _release(
        con,
        cat,
        keep_intermediate,
        ("int_identifiers",),
        ("int_identity_hubs", *components, *_STAGE_MODELS, *_FINAL_MODELS),
    )
    # Before any stage, whatever the hub's type: per-type limits would hold back the values a hub touches
    # (linked before them when its type ranks higher), never the hub itself.
    max_links = ident.max_links_per_value if guardrails else None
    n_hubs = _build_counted(con, cat, "int_identity_hubs", {"max_links_per_value": max_links})
    # The components of the unguarded graph, kept for the next incremental run (journeys.identity_incremental):
    # the unit it re-resolves. Before the stages, which reuse the connected-components tables.
    _build(con, cat, "int_identity_unguarded_edges")
    _components_of(con, cat, "int_identity_unguarded_edges")
    for model in ("int_identity_node_components", "int_identity_components", "int_identity_event_components"):
        _build(con, cat, model)
    _release(con, cat, keep_intermediate, components[:2], (*_STAGE_MODELS, *_FINAL_MODELS))
    db.execute(con, "create or replace temp table int_identity_labels (node_id bigint, label bigint)")
    db.execute(
        con, "create or replace temp table int_identity_shared (node_id bigint, stage_rank integer, reason varchar)"
    )

    passes = 0
    for rank in range(1, len(type_order) + 1):
        passes += _run_stage(con, cat, {"stage_rank": rank, "type_limits": type_limits})
    _release(con, cat, keep_intermediate, _STAGE_SCRATCH, _FINAL_MODELS)

    if previous_identity_map is not None:
        if not Path(previous_identity_map).exists():
            raise FileNotFoundError(f"previous identity map not found: {previous_identity_map}")
        _build(con, cat, "int_identity_previous", {"previous_map": str(previous_identity_map)})
    else:
        db.execute(
            con,
            "create or replace temp table int_identity_previous "
            "(id_type varchar, id_value varchar, customer_key varchar, first_seen_at timestamp)",
        )
    final_params = {"run_at": run_at, "buckets": settings.buckets, "batch_id": batch_id}
    _build(con, cat, "int_identity_key_claims")
    n_customers = _build_counted(con, cat, "int_identity_keys", final_params)
    _build(con, cat, "int_identity_linked_events")
    _build(con, cat, "int_identity_shared_support")
    _build(con, cat, "int_event_customers")
    _release(
        con,
        cat,
        keep_intermediate,
        ("int_identity_linked_events",),
        _FINAL_MODELS[_FINAL_MODELS.index("identity_map") :],
    )
    _build(con, cat, "identity_map")
    n_merges = _build_counted(con, cat, "identity_merges", final_params)
    n_splits = _build_counted(con, cat, "identity_splits", final_params)
    _release(
        con,
        cat,
        keep_intermediate,
        ("int_identity_event_nodes",),
        _FINAL_MODELS[_FINAL_MODELS.index("shared_identifiers") :],
    )
    for table, history in (audit_history or {}).items():
        if Path(history).exists():
            db.execute(
                con,
                f"insert into {db.quote_ident(table)} by name select * from read_parquet($history)",
                {"history": str(history)},
            )
    n_shared = _build_counted(con, cat, "shared_identifiers")
    _build(con, cat, "customers", final_params)

    resolved, unresolved = db.fetch(
        con,
        "select count(customer_key), count(*) - count(customer_key) from int_event_customers",
    )[0]
    if not keep_intermediate:
        for m in cat.models.values():
            if m.procedure == "identity" and m.materialized == "temp":
                db.execute(con, f"drop table if exists {db.quote_ident(m.name)}")
    return IdentityReport(
        n_identifiers=n_identifiers,
        n_customers=n_customers,
        n_events_resolved=resolved,
        n_events_unresolved=unresolved,
        passes=passes,
        n_merges=n_merges,
        n_shared_identifiers=n_shared,
        n_splits=n_splits,
        n_hubs=n_hubs,
        n_identifiers_resolved=n_identifiers,
    )


def connected_components_without_guardrails(
    con: duckdb.DuckDBPyConnection, settings: Settings, *, run_at: datetime
) -> IdentityReport:
    """Plain connected components over all identifiers (blocked values still dropped), for comparison."""
    return resolve_identities(con, settings, run_at=run_at, guardrails=False)


def score_identity(con: duckdb.DuckDBPyConnection, truth_events_path: str) -> dict[str, Any]:
    """Pairwise precision/recall of `int_event_customers` against a truth Parquet (event_id, person_id)."""
    # Pair counts come from cluster sizes (n choose 2), never from materialised pairs; an unresolved
    # event is its own cluster. Only events present in both sides are scored.
    row = db.fetch(
        con,
        """
        with truth as (
            select tr.event_id, tr.person_id from read_parquet($truth) as tr
        ),
        joined as (
            select
                tr.person_id,
                coalesce(ec.customer_key, '__unresolved__' || ec.event_id) as cluster
            from truth as tr
            inner join int_event_customers as ec
                on ec.event_id = tr.event_id
        ),
        predicted as (
            select jo.cluster, count(*) as n from joined as jo group by jo.cluster
        ),
        actual as (
            select jo.person_id, count(*) as n from joined as jo group by jo.person_id
        ),
        cells as (
            select jo.cluster, jo.person_id, count(*) as n from joined as jo group by jo.cluster, jo.person_id
        ),
        fused_clusters as (
            select ce.cluster from cells as ce group by ce.cluster having count(*) > 1
        ),
        fused_persons as (
            select count(distinct ce.person_id) as n
            from cells as ce
            semi join fused_clusters as fc on fc.cluster = ce.cluster
        ),
        split_persons as (
            select count(*) as n from (
                select ce.person_id from cells as ce group by ce.person_id having count(*) > 1
            ) as sp
        ),
        final as (
            select
                (select count(*) from joined) as n_events,
                (select count(*) from predicted) as n_clusters,
                (select count(*) from actual) as n_persons,
                (select sum(pr.n * (pr.n - 1) // 2) from predicted as pr) as predicted_pairs,
                (select sum(ac.n * (ac.n - 1) // 2) from actual as ac) as truth_pairs,
                (select sum(ce.n * (ce.n - 1) // 2) from cells as ce) as true_pairs,
                (select fp.n from fused_persons as fp) as persons_fused,
                (select sp.n from split_persons as sp) as persons_split
        )
        select * from final
    """,
        {"truth": str(truth_events_path)},
    )[0]
    n_events, n_clusters, n_persons, predicted_pairs, truth_pairs, true_pairs, fused, split = row
    predicted_pairs, truth_pairs, true_pairs = (int(x or 0) for x in (predicted_pairs, truth_pairs, true_pairs))
    precision = true_pairs / predicted_pairs if predicted_pairs else 1.0
    recall = true_pairs / truth_pairs if truth_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n_events": n_events,
        "n_clusters": n_clusters,
        "n_persons": n_persons,
        "predicted_pairs": predicted_pairs,
        "truth_pairs": truth_pairs,
        "true_pairs": true_pairs,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "persons_fused": int(fused or 0),
        "persons_split": int(split or 0),
    }


def _resolve_step(con: duckdb.DuckDBPyConnection, context: Any, params: Any) -> dict[str, Any]:
    if context.mode == "incremental":
        from journeys import identity_incremental  # it builds on this module

        return identity_incremental.resolve_step(con, context)
    previous = context.previous_identity_map
    report = resolve_identities(
        con,
        context.settings,
        run_at=context.as_of,
        previous_identity_map=str(previous) if previous else None,
        catalog=context.catalog,
        keep_intermediate=context.keep_scratch,
        batch_id=context.batch_id,
        audit_history=context.audit_history,
    )
    return dict(vars(report))


def _scratch(name: str, description: str) -> models.Model:
    return models.Model(
        name=name, layer="intermediate", materialized="temp", procedure="identity", description=description
    )


models.register(
    models.Procedure(
        name="identity",
        task="resolve-identity",
        layer="intermediate",
        run=_resolve_step,
        outputs=(
            _scratch("int_identity_labels", "Component label of every linked identifier node, per stage."),
            _scratch("int_identity_shared", "Identifier nodes held back from linking, with the stage and reason."),
            _scratch("int_identity_cc_edges", "Edges (a, b) whose connected components a pass labels."),
            _scratch("int_identity_cc_labels", "Current component label per node during connected components."),
        ),
    )
)
