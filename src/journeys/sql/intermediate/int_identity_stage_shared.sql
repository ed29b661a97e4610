-- model: int_identity_stage_shared
-- grain: node_id
-- materialized: temp
-- partition: none
-- publish: false
-- params: stage_rank, type_limits
-- procedure: identity
-- One row per identifier of the stage's type that is not used for linking
-- Reasons: 'bridge' (would join components beyond a limit), 'hub' (shares events with more distinct identifiers
-- than identity.max_links_per_value), 'limit' (its component already holds the type's maximum of
-- better-supported values: most events first, then smallest value).
with stage_values as (
    select * from int_identity_stage_values
),

components as (
    select * from int_identity_cc_labels
),

bridges as (
    select
        sv.node_id,
        coalesce(sv.bridge_reason, 'bridge') as reason
    from stage_values as sv
    where sv.is_bridge
        or (sv.in_violation and sv.n_touches >= 2)
),

ranked_members as (
    select
        sv.node_id,
        row_number() over (
            partition by co.label
            order by sv.n_events desc, sv.id_value asc
        ) as support_rank
    from stage_values as sv
    inner join components as co
        on co.node_id = sv.node_id
    anti join bridges as br
        on br.node_id = sv.node_id
),

over_limit as (
    select
        rm.node_id,
        'limit' as reason
    from ranked_members as rm
    -- list_extract rather than $type_limits[$stage_rank]: sqlglot (tools/sql_mutants.py) would read `$a[$`
    -- as the opening of a dollar-quoted string.
    where rm.support_rank > list_extract($type_limits, $stage_rank)
),

final as (
    select * from bridges
    union all
    select * from over_limit
)

select * from final
