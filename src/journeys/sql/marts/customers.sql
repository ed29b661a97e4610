-- model: customers
-- grain: customer_key
-- materialized: table
-- partition: none
-- publish: true
-- params: buckets
-- procedure: identity
-- One row per customer_key
-- bucket = first 32 bits of sha256(customer_key) mod buckets: stable across DuckDB versions, unlike hash().
with row_numbers as (
    select * from int_identity_rows
),

event_customers_src as (
    select * from int_event_customers
),

identity_map_src as (
    select * from identity_map
),

per_customer as (
    -- the event ids' rows aggregated once (int_identity_rows): `events` is not read again
    select
        ec.customer_key,
        min(rn.first_occurred_at) as first_seen_at,
        max(rn.last_occurred_at) as last_seen_at,
        cast(sum(rn.n_event_rows) as bigint) as n_events
    from event_customers_src as ec
    inner join row_numbers as rn
        on rn.event_id = ec.event_id
    where ec.customer_key is not null
    group by ec.customer_key
),

per_customer_identifiers as (
    select
        im.customer_key,
        count(*) as n_identifiers
    from identity_map_src as im
    where not im.is_shared
    group by im.customer_key
),

final as (
    select
        pc.customer_key,
        pc.first_seen_at,
        pc.last_seen_at,
        pc.n_events,
        coalesce(pi.n_identifiers, 0) as n_identifiers,
        cast(cast('0x' || left(sha256(pc.customer_key), 8) as ubigint) % $buckets as integer) as bucket
    from per_customer as pc
    left join per_customer_identifiers as pi
        on pi.customer_key = pc.customer_key
)

select * from final
