-- model: int_identity_stage_edges
-- grain: a, b
-- materialized: temp
-- partition: none
-- publish: false
-- params: stage_rank
-- procedure: identity
-- One row per candidate link (a, b) of the stage; b is always a node of the stage's type.
-- anchor: component label -> stage node sharing an event with it
-- peer:   smallest stage node of an event -> every other stage node of that event (a star keeps connectivity)
with event_nodes as (
    select * from int_identity_event_nodes
),

touches as (
    select * from int_identity_touches
),

bridges as (
    select * from int_identity_bridges
),

stage_on_event as (
    select
        en.event_no,
        en.node_id
    from event_nodes as en
    anti join bridges as br
        on br.node_id = en.node_id
    where en.type_rank = $stage_rank
),

anchors as (
    select
        tc.label as a,
        tc.node_id as b,
        'anchor' as link_kind
    from touches as tc
    anti join bridges as br
        on br.node_id = tc.node_id
),

event_min as (
    select
        so.event_no,
        min(so.node_id) as min_node
    from stage_on_event as so
    group by so.event_no
),

peers as (
    select distinct
        em.min_node as a,
        so.node_id as b,
        'peer' as link_kind
    from stage_on_event as so
    inner join event_min as em
        on em.event_no = so.event_no
    where so.node_id <> em.min_node
),

final as (
    select * from anchors
    union all
    select * from peers
)

select * from final
