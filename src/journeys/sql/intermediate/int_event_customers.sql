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
with row_numbers as (
    select * from int_identity_rows
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

source_events as (
    -- the distinct event_ids of `events`, numbered (int_identity_rows): joined by event_no, not by the varchar id
    select
        rn.event_no,
        rn.event_id
    from row_numbers as rn
    where rn.n_event_rows > 0
),

final as (
    select
        se.event_id,
        coalesce(le.customer_key, so.customer_key) as customer_key
    from source_events as se
    left join linked_events as le
        on le.event_no = se.event_no
    left join shared_only_events as so
        on so.event_no = se.event_no
)

select * from final
