-- model: int_identity_bridges
-- grain: node_id
-- materialized: temp
-- partition: none
-- publish: false
-- params: stage_rank, type_limits
-- procedure: identity
-- One row per stage identifier not used for linking at all, with its reason
-- 'bridge': touches several components whose union would break a limit (shared devices, household e-mails);
-- 'hub': of the stage's type and in int_identity_hubs (shares events with too many other identifiers).
with touches as (
    select * from int_identity_touches
),

hubs as (
    select * from int_identity_hubs
),

nodes as (
    select * from int_identity_nodes
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

limit_bridges as (
    select distinct
        uc.node_id
    from union_counts as uc
    -- a null limit means unlimited: the comparison is null and the row is not kept
    where uc.n_values > $type_limits[uc.type_rank]
),

stage_hubs as (
    select
        hb.node_id,
        'hub' as reason
    from hubs as hb
    inner join nodes as nd
        on nd.node_id = hb.node_id
    where nd.type_rank = $stage_rank
),

final as (
    select * from stage_hubs
    union all
    select
        lb.node_id,
        'bridge' as reason
    from limit_bridges as lb
    anti join stage_hubs as sh
        on sh.node_id = lb.node_id
)

select * from final
