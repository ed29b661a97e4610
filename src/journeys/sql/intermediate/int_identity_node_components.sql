-- model: int_identity_node_components
-- grain: node_id
-- materialized: temp
-- partition: none
-- publish: false
-- procedure: identity
-- One row per identifier node with the id of its component of the unguarded graph (int_identity_unguarded_edges)
-- component = first 64 bits of sha256 of the component's highest-priority identifier (its smallest node_id):
-- the same whichever rows a run resolved, so a kept build's ids and a new run's ids name the same components.
-- Read right after the connected components of the unguarded edges, before the stages reuse their tables.
with nodes as (
    select * from int_identity_nodes
),

labels as (
    select * from int_identity_cc_labels
),

labelled as (
    select
        nd.node_id,
        -- a node alone on all its rows has no edge, hence no label: it is its own component
        coalesce(lb.label, nd.node_id) as label
    from nodes as nd
    left join labels as lb
        on lb.node_id = nd.node_id
),

component_ids as (
    select
        rep.node_id as label,
        cast('0x' || left(sha256(rep.id_type || ':' || rep.id_value), 16) as ubigint) as component
    from nodes as rep
    semi join labelled as la
        on la.label = rep.node_id
),

final as (
    select
        la.node_id,
        ci.component
    from labelled as la
    inner join component_ids as ci
        on ci.label = la.label
)

select * from final
