-- model: int_identity_stage_values
-- grain: node_id
-- materialized: temp
-- partition: none
-- publish: false
-- params: stage_rank
-- procedure: identity
-- One row per identifier node of the stage's type
-- is_bridge: not used for linking (bridge_reason: 'bridge', it touches components whose union breaks a limit, or
-- 'hub'). in_violation: its tentative component breaks a limit.
with nodes as (
    select * from int_identity_nodes
),

touches as (
    select * from int_identity_touches
),

bridges as (
    select * from int_identity_bridges
),

tentative as (
    select * from int_identity_cc_labels
),

violations as (
    select * from int_identity_violations
),

touch_counts as (
    select
        tc.node_id,
        count(*) as n_touches
    from touches as tc
    group by tc.node_id
),

final as (
    select
        nd.node_id,
        nd.id_value,
        nd.n_events,
        coalesce(tch.n_touches, 0) as n_touches,
        br.node_id is not null as is_bridge,
        br.reason as bridge_reason,
        vi.label is not null as in_violation
    from nodes as nd
    left join touch_counts as tch
        on tch.node_id = nd.node_id
    left join bridges as br
        on br.node_id = nd.node_id
    left join tentative as te
        on te.node_id = nd.node_id
    left join violations as vi
        on vi.label = te.label
    where nd.type_rank = $stage_rank
)

select * from final
