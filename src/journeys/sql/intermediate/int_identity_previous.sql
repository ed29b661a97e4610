-- model: int_identity_previous
-- grain: id_type, id_value
-- materialized: temp
-- partition: none
-- publish: false
-- params: previous_map
-- procedure: identity
-- One row per (id_type, id_value) that a previous run linked to a customer (shared identifiers excluded)
-- Shared identifiers only pointed at their best-supported customer; they are no evidence of membership.
with previous_map as (
    select
        pm.id_type,
        pm.id_value,
        pm.customer_key,
        pm.first_seen_at,
        pm.is_shared
    from read_parquet($previous_map) as pm
),

linked as (
    select
        pm.id_type,
        pm.id_value,
        min(pm.customer_key) as customer_key,
        min(pm.first_seen_at) as first_seen_at
    from previous_map as pm
    where not coalesce(pm.is_shared, false)
        and pm.customer_key is not null
    group by pm.id_type, pm.id_value
),

final as (
    select * from linked
)

select * from final
