-- model: int_identity_violations
-- grain: label
-- materialized: temp
-- partition: none
-- publish: false
-- params: stage_rank, type_limits
-- procedure: identity
-- One row per tentative component of the stage (label of int_identity_cc_labels) that breaks a limit
-- A tentative component is a union of already-linked components (represented by their labels) and stage nodes.
with tentative as (
    select * from int_identity_cc_labels
),

component_counts as (
    select * from int_identity_component_counts
),

nodes as (
    select * from int_identity_nodes
),

linked_counts as (
    select
        te.label,
        cc.type_rank,
        cc.n_values
    from tentative as te
    inner join component_counts as cc
        on cc.label = te.node_id
),

stage_counts as (
    select
        te.label,
        nd.type_rank,
        count(*) as n_values
    from tentative as te
    inner join nodes as nd
        on nd.node_id = te.node_id
    where nd.type_rank = $stage_rank
    group by te.label, nd.type_rank
),

all_counts as (
    select
        uc.label,
        uc.type_rank,
        sum(uc.n_values) as n_values
    from (
        select * from linked_counts
        union all
        select * from stage_counts
    ) as uc
    group by uc.label, uc.type_rank
),

final as (
    select distinct
        ac.label
    from all_counts as ac
    where ac.n_values > $type_limits[ac.type_rank]
)

select * from final
