-- model: int_identity_stage_edges_kept
-- grain: a, b
-- materialized: temp
-- partition: none
-- publish: false
-- procedure: identity
-- One row per link (a, b) of the stage that is used for linking
-- Inside a tentative component that breaks a limit, only the anchor of a stage node to its single
-- component survives: peer links and multi-component bridges are dropped (the lower-priority link gives way).
with edges as (
    select * from int_identity_stage_edges
),

stage_values as (
    select * from int_identity_stage_values
),

final as (
    select
        ed.a,
        ed.b,
        ed.link_kind
    from edges as ed
    inner join stage_values as sv
        on sv.node_id = ed.b
    where not sv.in_violation
        or (ed.link_kind = 'anchor' and sv.n_touches = 1)
)

select * from final
