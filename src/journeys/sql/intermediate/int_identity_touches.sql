-- model: int_identity_touches
-- grain: node_id, label
-- materialized: temp
-- partition: none
-- publish: false
-- params: stage_rank
-- procedure: identity
-- One row per (node of the stage's identifier type, label of an already-linked component it shares an event with)
with event_nodes as (
    select * from int_identity_event_nodes
),

labels as (
    select * from int_identity_labels
),

stage_on_event as (
    select
        en.event_no,
        en.node_id
    from event_nodes as en
    where en.type_rank = $stage_rank
),

linked_on_event as (
    select
        en.event_no,
        lb.label
    from event_nodes as en
    inner join labels as lb
        on lb.node_id = en.node_id
),

final as (
    select distinct
        so.node_id,
        lo.label
    from stage_on_event as so
    inner join linked_on_event as lo
        on lo.event_no = so.event_no
)

select * from final
