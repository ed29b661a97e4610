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

event_labels as (
    -- the integer label through the group by; the varchar key is joined to its one row per event after it
    select
        en.event_no,
        arg_min(lb.label, en.node_id) as label
    from event_nodes as en
    inner join labels as lb
        on lb.node_id = en.node_id
    group by en.event_no
),

final as (
    select
        el.event_no,
        ck.customer_key
    from event_labels as el
    inner join component_keys as ck
        on ck.label = el.label
)

select * from final
