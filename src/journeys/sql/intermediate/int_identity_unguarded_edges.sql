-- model: int_identity_unguarded_edges
-- grain: a, b
-- materialized: temp
-- partition: none
-- publish: false
-- procedure: identity
-- One row per link (a, b) of the unguarded identifier graph: an identifier to the smallest one of a row it is on
-- Guardrails ignored (hubs and shared values link too), so a component of this graph is closed: every row
-- carrying one of its identifiers, and every identifier of such a row, is in it (int_identity_components).
with event_nodes as (
    select * from int_identity_event_nodes
),

event_min as (
    select
        en.event_no,
        min(en.node_id) as min_node
    from event_nodes as en
    group by en.event_no
),

final as (
    select distinct
        em.min_node as a,
        en.node_id as b
    from event_nodes as en
    inner join event_min as em
        on em.event_no = en.event_no
    where en.node_id <> em.min_node
)

select * from final
