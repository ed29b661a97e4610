-- model: int_identity_event_components
-- grain: event_id
-- materialized: table
-- partition: none
-- publish: false
-- procedure: identity
-- One row per event or link row with a usable identifier, with the component its identifiers are in
-- Kept in the build so that the next incremental run knows which component a row that has left the lake
-- (a landing file delivered again, changed) was in, without the row.
-- column event_id: The event's event_id, or the link row's link_id.
-- column component: Component of the row's identifiers (int_identity_components; all of a row's are in one).
with row_numbers as (
    select * from int_identity_rows
),

event_nodes as (
    select * from int_identity_event_nodes
),

node_components as (
    select * from int_identity_node_components
),

row_nodes as (
    select
        en.event_no,
        min(en.node_id) as node_id
    from event_nodes as en
    group by en.event_no
),

final as (
    select
        rn.event_id,
        nc.component
    from row_numbers as rn
    inner join row_nodes as rnd
        on rnd.event_no = rn.event_no
    inner join node_components as nc
        on nc.node_id = rnd.node_id
)

select * from final
