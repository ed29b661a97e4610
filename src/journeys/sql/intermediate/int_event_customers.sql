-- model: int_event_customers
-- grain: event_id
-- materialized: table
-- partition: none
-- publish: false
-- procedure: identity
-- int_event_customers
-- One row per event of `events`
-- customer_key is null when the event has no usable identifier, or none but hubs. Events carrying only shared
-- identifiers go to the best-supported customer of their highest-priority shared identifier that is not a
-- hub: the calls that carry nothing but a call centre's own number belong to no one customer.
with source_events as (
    select distinct
        ev.event_id
    from events as ev
),

event_numbers as (
    select distinct
        idf.event_id,
        idf.event_no
    from int_identifiers as idf
),

event_nodes as (
    select * from int_identity_event_nodes
),

linked_events as (
    select * from int_identity_linked_events
),

shared_support as (
    select * from int_identity_shared_support
),

shared_only_events as (
    select
        en.event_no,
        arg_min(ss.customer_key, en.node_id) as customer_key
    from event_nodes as en
    inner join shared_support as ss
        on ss.node_id = en.node_id
    anti join linked_events as le
        on le.event_no = en.event_no
    where ss.customer_key is not null
    group by en.event_no
),

final as (
    select
        se.event_id,
        coalesce(le.customer_key, so.customer_key) as customer_key
    from source_events as se
    left join event_numbers as evn
        on evn.event_id = se.event_id
    left join linked_events as le
        on le.event_no = evn.event_no
    left join shared_only_events as so
        on so.event_no = evn.event_no
)

select * from final
