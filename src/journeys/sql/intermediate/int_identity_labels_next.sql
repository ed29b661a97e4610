-- model: int_identity_labels_next
-- grain: node_id
-- materialized: temp
-- partition: none
-- publish: false
-- procedure: identity
-- One row per linked identifier node (types up to the stage, not shared) with its component label
-- Labels are the smallest node_id of the component, i.e. its highest-priority identifier.
with labels as (
    select * from int_identity_labels
),

stage_values as (
    select * from int_identity_stage_values
),

stage_shared as (
    select * from int_identity_stage_shared
),

components as (
    select * from int_identity_cc_labels
),

relabelled as (
    select
        lb.node_id,
        coalesce(co.label, lb.label) as label
    from labels as lb
    left join components as co
        on co.node_id = lb.label
),

stage_linked as (
    select
        sv.node_id,
        coalesce(co.label, sv.node_id) as label
    from stage_values as sv
    left join components as co
        on co.node_id = sv.node_id
    anti join stage_shared as ss
        on ss.node_id = sv.node_id
),

final as (
    select * from relabelled
    union all
    select * from stage_linked
)

select * from final
