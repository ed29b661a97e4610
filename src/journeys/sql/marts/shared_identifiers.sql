-- model: shared_identifiers
-- grain: id_type, id_value
-- materialized: table
-- partition: none
-- publish: true
-- procedure: identity
-- One row per identifier that hit a guardrail and is not used for linking, with the reason
-- n_customers counts the customers its events resolve to through other identifiers.
with shared as (
    select * from int_identity_shared
),

nodes as (
    select * from int_identity_nodes
),

shared_support as (
    select * from int_identity_shared_support
),

final as (
    select
        nd.id_type,
        nd.id_value,
        sh.reason,
        coalesce(ss.n_customers, 0) as n_customers,
        nd.n_events
    from shared as sh
    inner join nodes as nd
        on nd.node_id = sh.node_id
    left join shared_support as ss
        on ss.node_id = sh.node_id
)

select * from final
