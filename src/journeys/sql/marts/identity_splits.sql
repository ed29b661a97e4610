-- model: identity_splits
-- grain: split_at, previous_key, new_key
-- materialized: table
-- partition: none
-- publish: true
-- params: batch_id, run_at
-- procedure: identity
-- An audit table: rows of earlier runs are kept (state/), each with the batch_id of the run that found it.
-- One row per (previous customer_key, component of this run that took some of its identifiers
-- but does not own the key): a previous customer split in this run
-- A split happens when identifiers a previous run linked to one customer now land in two or more
-- components: a rule changed (a newly blocked value, a lower limit) or new events made a former link a
-- shared bridge. The component owning the previous key (int_identity_key_claims: most of its identifiers,
-- tie smallest label) keeps it as kept_key (or its survivor's key if it also merged); every other component
-- is one row with its own key as new_key. via_* = the highest-priority identifier that moved (smallest node_id).
-- Identifiers that are now shared or blocked belong to no component and are not counted as moved.
with previous as (
    select * from int_identity_previous
),

nodes as (
    select * from int_identity_nodes
),

labels as (
    select * from int_identity_labels
),

claims as (
    select * from int_identity_key_claims
),

component_keys as (
    select * from int_identity_keys
),

previous_members as (
    select
        pv.customer_key as previous_key,
        lb.label,
        nd.node_id
    from previous as pv
    inner join nodes as nd
        on nd.id_type = pv.id_type
        and nd.id_value = pv.id_value
    inner join labels as lb
        on lb.node_id = nd.node_id
),

moved as (
    select
        pm.previous_key,
        pm.label,
        count(*) as n_identifiers_moved,
        min(pm.node_id) as via_node_id
    from previous_members as pm
    -- the owner's component keeps the key; every other component holding its identifiers left it
    anti join claims as cl
        on cl.customer_key = pm.previous_key
        and cl.label = pm.label
    group by pm.previous_key, pm.label
),

final as (
    select
        cast($run_at as timestamp) as split_at,
        cast($batch_id as varchar) as batch_id,
        mv.previous_key,
        kk.customer_key as kept_key,
        nk.customer_key as new_key,
        mv.n_identifiers_moved,
        nd.id_type as via_id_type,
        nd.id_value as via_id_value
    from moved as mv
    -- a previous key with identifiers in some component always has an owner among them
    inner join claims as cl
        on cl.customer_key = mv.previous_key
    inner join component_keys as kk
        on kk.label = cl.label
    inner join component_keys as nk
        on nk.label = mv.label
    inner join nodes as nd
        on nd.node_id = mv.via_node_id
)

select * from final
