-- model: int_identity_linked_events
-- grain: event_no
-- materialized: temp
-- partition: none
-- publish: false
-- procedure: identity
-- One row per event carrying at least one linked (not shared) identifier
-- An event whose linked identifiers ended in different components (a dropped link) goes to the component
-- of its highest-priority identifier (smallest node_id).
with event_nodes as (
    select * from int_identity_event_nodes
),

labels as (
    select * from int_identity_labels
),

component_keys as (
    select * from int_identity_keys
),

linked_nodes as (
    select
        en.event_no,
        en.node_id,
        ck.customer_key
    from event_nodes as en
    inner join labels as lb
        on lb.node_id = en.node_id
    inner join component_keys as ck
        on ck.label = lb.label
),

final as (
    select
        ln.event_no,
        arg_min(ln.customer_key, ln.node_id) as customer_key
    from linked_nodes as ln
    group by ln.event_no
)

select * from final
