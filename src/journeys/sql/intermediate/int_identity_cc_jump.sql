-- model: int_identity_cc_jump
-- grain: node_id
-- materialized: temp
-- partition: none
-- publish: false
-- procedure: identity
-- One row per node of int_identity_cc_labels, each pointed at its label's label (pointer jumping)
with labels as (
    select * from int_identity_cc_labels
),

final as (
    select
        lb.node_id,
        pa.label
    from labels as lb
    inner join labels as pa
        on pa.node_id = lb.label
)

select * from final
