-- model: identity_merges
-- grain: merged_at, merged_key, survivor_key
-- materialized: table
-- partition: none
-- publish: true
-- params: batch_id, run_at
-- procedure: identity
-- An audit table: rows of earlier runs are kept (state/), each with the batch_id of the run that found it.
-- One row per previous customer_key merged into another (survivor) in this run
-- via_* = the highest-priority identifier of the component that shares an event with one of the merged
-- customer's previous identifiers without being one of them: the link that bridged the two.
with claims as (
    select * from int_identity_key_claims
),

previous as (
    select * from int_identity_previous
),

nodes as (
    select * from int_identity_nodes
),

labels as (
    select * from int_identity_labels
),

event_nodes as (
    select * from int_identity_event_nodes
),

survivors as (
    select
        cl.label,
        cl.customer_key as survivor_key
    from claims as cl
    where cl.survivor_rank = 1
),

merged as (
    select
        cl.label,
        cl.customer_key as merged_key
    from claims as cl
    where cl.survivor_rank > 1
),

merged_nodes as (
    select
        mg.merged_key,
        mg.label,
        nd.node_id
    from merged as mg
    inner join previous as pv
        on pv.customer_key = mg.merged_key
    inner join nodes as nd
        on nd.id_type = pv.id_type
        and nd.id_value = pv.id_value
    inner join labels as lb
        on lb.node_id = nd.node_id
        and lb.label = mg.label
),

bridging as (
    select
        mn.merged_key,
        min(other.node_id) as via_node_id
    from merged_nodes as mn
    inner join event_nodes as own
        on own.node_id = mn.node_id
    inner join event_nodes as other
        on other.event_no = own.event_no
    inner join labels as olb
        on olb.node_id = other.node_id
        and olb.label = mn.label
    anti join merged_nodes as same
        on same.merged_key = mn.merged_key
        and same.node_id = other.node_id
    group by mn.merged_key
),

final as (
    select
        cast($run_at as timestamp) as merged_at,
        cast($batch_id as varchar) as batch_id,
        sv.survivor_key,
        mg.merged_key,
        nd.id_type as via_id_type,
        nd.id_value as via_id_value
    from merged as mg
    inner join survivors as sv
        on sv.label = mg.label
    left join bridging as br
        on br.merged_key = mg.merged_key
    left join nodes as nd
        on nd.node_id = br.via_node_id
)

select * from final
