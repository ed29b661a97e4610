-- model: int_identity_cc_hook
-- grain: node_id
-- materialized: temp
-- partition: none
-- publish: false
-- procedure: identity
-- One row per node of int_identity_cc_labels, after one hooking pass
-- For every edge whose ends carry different labels: each end may take the other's smaller label
-- (propagation), and the larger label itself is pointed at the smaller one (hooking). Hooking the
-- labels, not only the nodes, is what lets pointer jumping collapse long chains in O(log n) passes.
-- Labels only ever decrease and always name a node of the same component.
with edges as (
    select * from int_identity_cc_edges
),

labels as (
    select * from int_identity_cc_labels
),

edge_labels as (
    select
        ed.a,
        ed.b,
        la.label as label_a,
        lb.label as label_b
    from edges as ed
    inner join labels as la
        on la.node_id = ed.a
    inner join labels as lb
        on lb.node_id = ed.b
    where la.label <> lb.label
),

proposals as (
    select el.a as node_id, el.label_b as label
    from edge_labels as el
    where el.label_b < el.label_a
    union all
    select el.b as node_id, el.label_a as label
    from edge_labels as el
    where el.label_a < el.label_b
    union all
    select greatest(el.label_a, el.label_b) as node_id, least(el.label_a, el.label_b) as label
    from edge_labels as el
),

best as (
    select
        pr.node_id,
        min(pr.label) as label
    from proposals as pr
    group by pr.node_id
),

final as (
    select
        lb.node_id,
        least(lb.label, coalesce(bs.label, lb.label)) as label
    from labels as lb
    left join best as bs
        on bs.node_id = lb.node_id
)

select * from final
