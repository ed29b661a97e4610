-- model: int_identity_keys
-- grain: label
-- materialized: temp
-- partition: none
-- publish: false
-- params: run_at
-- procedure: identity
-- One row per final component (label) with its customer_key
-- Key = the surviving previous key, else 'c_' || first 16 hex of sha256(id_type || ':' || id_value) of the
-- component's highest-priority identifier (input-order independent). A fresh key that a previous run
-- already used (the component split off a former customer) is re-hashed with the run time.
with labels as (
    select * from int_identity_labels
),

nodes as (
    select * from int_identity_nodes
),

claims as (
    select * from int_identity_key_claims
),

previous as (
    select * from int_identity_previous
),

components as (
    select distinct
        lb.label
    from labels as lb
),

fresh as (
    select
        co.label,
        'c_' || left(sha256(nd.id_type || ':' || nd.id_value), 16) as fresh_key
    from components as co
    inner join nodes as nd
        on nd.node_id = co.label
),

survivors as (
    select
        cl.label,
        cl.customer_key
    from claims as cl
    where cl.survivor_rank = 1
),

previous_keys as (
    select distinct
        pv.customer_key
    from previous as pv
),

final as (
    select
        fr.label,
        coalesce(
            sv.customer_key,
            case
                when pk.customer_key is not null
                    then 'c_' || left(sha256(fr.fresh_key || ':' || cast($run_at as varchar)), 16)
                else fr.fresh_key
            end
        ) as customer_key
    from fresh as fr
    left join survivors as sv
        on sv.label = fr.label
    left join previous_keys as pk
        on pk.customer_key = fr.fresh_key
)

select * from final
