-- model: int_identity_shared_support
-- grain: node_id
-- materialized: temp
-- partition: none
-- publish: false
-- procedure: identity
-- One row per shared identifier (not used for linking)
-- A shared identifier belongs to the customer with most of its events (tie: smallest customer_key),
-- counted over its events that resolve through linked identifiers. A hub belongs to no one (customer_key
-- null): among hundreds of customers the most frequent one is an accident, not an owner.
with shared as (
    select * from int_identity_shared
),

event_nodes as (
    select * from int_identity_event_nodes
),

linked_events as (
    select * from int_identity_linked_events
),

support as (
    select
        en.node_id,
        sh.reason,
        le.customer_key,
        count(*) as n_events
    from event_nodes as en
    inner join shared as sh
        on sh.node_id = en.node_id
    inner join linked_events as le
        on le.event_no = en.event_no
    group by en.node_id, sh.reason, le.customer_key
),

final as (
    select
        su.node_id,
        case
            when su.reason <> 'hub'
                then arg_min(su.customer_key, (-su.n_events, su.customer_key))
        end as customer_key,
        count(*) as n_customers
    from support as su
    group by su.node_id, su.reason
)

select * from final
