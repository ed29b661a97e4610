-- model: int_identity_cc_seed
-- grain: node_id
-- materialized: temp
-- partition: none
-- publish: false
-- procedure: identity
-- One row per node of int_identity_cc_edges; label = smallest of the node and its neighbours
-- Start of connected components: label propagation with hooking and pointer jumping (see int_identity_cc_hook).
with edges as (
    select * from int_identity_cc_edges
),

directed as (
    select ed.a as node_id, ed.b as neighbour from edges as ed
    union all
    select ed.b as node_id, ed.a as neighbour from edges as ed
),

final as (
    select
        di.node_id,
        least(di.node_id, min(di.neighbour)) as label
    from directed as di
    group by di.node_id
)

select * from final
