-- model: identity_map
-- grain: id_type, id_value
-- materialized: table
-- partition: none
-- publish: true
-- procedure: identity
-- One row per identifier (id_type, id_value) seen as a usable identifier of an event or a link row
-- Linked identifiers map to their component's customer; shared ones (is_shared) to their best-supported one,
-- hubs to none.
with nodes as (
    select * from int_identity_nodes
),

labels as (
    select * from int_identity_labels
),

component_keys as (
    select * from int_identity_keys
),

shared_support as (
    select * from int_identity_shared_support
),

linked as (
    select
        lb.node_id,
        ck.customer_key
    from labels as lb
    inner join component_keys as ck
        on ck.label = lb.label
),

final as (
    select
        nd.id_type,
        nd.id_value,
        coalesce(li.customer_key, ss.customer_key) as customer_key,
        nd.first_seen_at,
        nd.last_seen_at,
        li.node_id is null as is_shared,
        nd.n_events
    from nodes as nd
    left join linked as li
        on li.node_id = nd.node_id
    left join shared_support as ss
        on ss.node_id = nd.node_id
)

select * from final
