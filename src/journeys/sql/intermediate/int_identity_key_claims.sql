-- model: int_identity_key_claims
-- grain: label, customer_key
-- materialized: temp
-- partition: none
-- publish: false
-- procedure: identity
-- One row per (final component label, previous customer_key) where the component owns that key
-- A previous key is owned by the component holding most of its identifiers (tie: smallest label), so a
-- key is never given to two components. Within a component the survivor (survivor_rank 1) is the owned
-- key whose customer was seen first (tie: smallest key); the others are merged into it.
with labels as (
    select * from int_identity_labels
),

nodes as (
    select * from int_identity_nodes
),

previous as (
    select * from int_identity_previous
),

previous_customers as (
    select
        pv.customer_key,
        min(pv.first_seen_at) as first_seen_at
    from previous as pv
    group by pv.customer_key
),

claims as (
    select
        lb.label,
        pv.customer_key,
        count(*) as n_identifiers
    from labels as lb
    inner join nodes as nd
        on nd.node_id = lb.node_id
    inner join previous as pv
        on pv.id_type = nd.id_type
        and pv.id_value = nd.id_value
    group by lb.label, pv.customer_key
),

owned as (
    select
        cl.*
    from claims as cl
    qualify
        row_number() over (
            partition by cl.customer_key
            order by cl.n_identifiers desc, cl.label asc
        ) = 1
),

final as (
    select
        ow.label,
        ow.customer_key,
        ow.n_identifiers,
        pc.first_seen_at,
        row_number() over (
            partition by ow.label
            order by pc.first_seen_at nulls last, ow.customer_key
        ) as survivor_rank
    from owned as ow
    inner join previous_customers as pc
        on pc.customer_key = ow.customer_key
)

select * from final
