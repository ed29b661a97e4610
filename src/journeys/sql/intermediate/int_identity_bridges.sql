-- model: int_identity_bridges
-- grain: node_id
-- materialized: temp
-- partition: none
-- publish: false
-- params: type_limits
-- procedure: identity
-- One row per stage identifier that touches several components whose union would break a limit
-- These are the shared devices / household e-mails: they are not used for linking at all.
with touches as (
    select * from int_identity_touches
),

component_counts as (
    select * from int_identity_component_counts
),

multi_touch as (
    select
        tc.node_id
    from touches as tc
    group by tc.node_id
    having count(*) >= 2
),

union_counts as (
    select
        tc.node_id,
        cc.type_rank,
        sum(cc.n_values) as n_values
    from touches as tc
    inner join multi_touch as mt
        on mt.node_id = tc.node_id
    inner join component_counts as cc
        on cc.label = tc.label
    group by tc.node_id, cc.type_rank
),

final as (
    select distinct
        uc.node_id
    from union_counts as uc
    -- a null limit means unlimited: the comparison is null and the row is not kept
    where uc.n_values > $type_limits[uc.type_rank]
)

select * from final
