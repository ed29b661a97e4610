-- model: int_identity_nodes
-- grain: node_id
-- materialized: temp
-- partition: none
-- publish: false
-- params: type_order
-- procedure: identity
-- One row per identifier (id_type, id_value) seen on at least one event or link row
-- n_events counts events only: an identifier known only from link rows has 0 and no first/last seen time.
-- node_id orders identifiers by (type priority rank, id_value), so the smallest node of a component is its
-- highest-priority identifier: component labels (min node_id) and fresh customer keys derive from it.
with identifiers as (
    select * from int_identifiers
),

per_identifier as (
    select
        idf.id_type,
        idf.id_value,
        count(*) filter (where not idf.is_link) as n_events,
        min(idf.occurred_at) as first_seen_at,
        max(idf.occurred_at) as last_seen_at
    from identifiers as idf
    group by idf.id_type, idf.id_value
),

ranked as (
    select
        pi.*,
        list_position($type_order, pi.id_type) as type_rank
    from per_identifier as pi
),

final as (
    select
        row_number() over (order by rk.type_rank, rk.id_value) as node_id,
        rk.id_type,
        rk.id_value,
        rk.type_rank,
        rk.n_events,
        rk.first_seen_at,
        rk.last_seen_at
    from ranked as rk
)

select * from final
