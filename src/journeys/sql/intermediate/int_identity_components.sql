-- model: int_identity_components
-- grain: id_type, id_value
-- materialized: table
-- partition: none
-- publish: false
-- procedure: identity
-- One row per identifier with its component of the unguarded identifier graph (int_identity_node_components)
-- Kept in the build for the next incremental run, which re-resolves only the components its new rows touch.
-- column id_type: Identifier type.
-- column id_value: Identifier value, as in identity_map.
-- column component: Id of the identifier's component: first 64 bits of sha256 of its highest-priority identifier.
with nodes as (
    select * from int_identity_nodes
),

node_components as (
    select * from int_identity_node_components
),

final as (
    select
        nd.id_type,
        nd.id_value,
        nc.component
    from nodes as nd
    inner join node_components as nc
        on nc.node_id = nd.node_id
)

select * from final
