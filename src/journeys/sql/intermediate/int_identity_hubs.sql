-- model: int_identity_hubs
-- grain: node_id
-- materialized: temp
-- partition: none
-- publish: false
-- params: max_links_per_value
-- procedure: identity
-- One row per identifier that shares events with more distinct other identifiers than one person could hold
-- A hub (a call centre's own number typed into hundreds of visitors' web forms, a shop's till e-mail) would
-- fuse everyone it touches; it is held back from linking whatever its type's priority. The per-type limits
-- cannot see it: linked first, a high-priority hub keeps its place and the lower-priority values give way.
-- A null limit turns the check off.
with event_nodes as (
    select * from int_identity_event_nodes
),

event_sizes as (
    select
        en.event_no,
        count(*) as n_nodes
    from event_nodes as en
    where $max_links_per_value is not null
    group by en.event_no
    having count(*) >= 2
),

candidates as (
    -- an upper bound of a node's distinct links (its rows' other identifiers, repeats counted): only a node
    -- whose bound reaches the limit can pass it, so the distinct pairs are built for those few alone
    select
        en.node_id
    from event_nodes as en
    inner join event_sizes as es
        on es.event_no = en.event_no
    group by en.node_id
    having sum(es.n_nodes - 1) >= $max_links_per_value
),

links as (
    select distinct
        en.node_id,
        ot.node_id as other_node_id
    from event_nodes as en
    semi join candidates as ca
        on ca.node_id = en.node_id
    inner join event_nodes as ot
        on ot.event_no = en.event_no
        and ot.node_id <> en.node_id
),

per_node as (
    select
        lk.node_id,
        count(*) as n_links
    from links as lk
    group by lk.node_id
),

final as (
    select
        pn.node_id,
        pn.n_links
    from per_node as pn
    where pn.n_links > $max_links_per_value
)

select * from final
