-- model: int_identity_component_counts
-- grain: label, type_rank
-- materialized: temp
-- partition: none
-- publish: false
-- procedure: identity
-- One row per (component label, identifier type rank): how many values of that type the component holds
with labels as (
    select * from int_identity_labels
),

nodes as (
    select * from int_identity_nodes
),

final as (
    select
        lb.label,
        nd.type_rank,
        count(*) as n_values
    from labels as lb
    inner join nodes as nd
        on nd.node_id = lb.node_id
    group by lb.label, nd.type_rank
)

select * from final
