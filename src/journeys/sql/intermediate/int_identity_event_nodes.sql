-- model: int_identity_event_nodes
-- grain: event_no, node_id
-- materialized: temp
-- partition: none
-- publish: false
-- procedure: identity
-- One row per (event_no, node_id): which identifier nodes each event carries
with identifiers as (
    select * from int_identifiers
),

nodes as (
    select * from int_identity_nodes
),

final as (
    select
        idf.event_no,
        nd.node_id,
        nd.type_rank
    from identifiers as idf
    inner join nodes as nd
        on nd.id_type = idf.id_type
        and nd.id_value = idf.id_value
)

select * from final
