-- model: int_identity_rows
-- grain: event_no
-- materialized: temp
-- partition: none
-- publish: false
-- procedure: identity
-- One row per event_id of `events` and link_id of `links`, numbered: the one place the rows' ids are numbered
-- event_no is the integer the identity models join and group by instead of the varchar id, numbered over the
-- distinct ids rather than over every (row, identifier) pair; the rows' times are kept so that no later model
-- reads `events` again (int_event_customers, customers). An id no event carries (a link row's) has
-- n_event_rows 0 and no times.
with source_events as (
    select
        ev.event_id,
        ev.occurred_at,
        false as is_link
    from events as ev
),

source_links as (
    select
        lk.link_id as event_id,
        null::timestamp as occurred_at,
        true as is_link
    from links as lk
),

source_rows as (
    select * from source_events
    union all
    select * from source_links
),

per_id as (
    select
        sr.event_id,
        count(*) filter (where not sr.is_link) as n_event_rows,
        min(sr.occurred_at) as first_occurred_at,
        max(sr.occurred_at) as last_occurred_at
    from source_rows as sr
    group by sr.event_id
),

final as (
    select
        -- independent of input order, like every number the identity models compare
        row_number() over (order by pi.event_id) as event_no,
        pi.event_id,
        pi.n_event_rows,
        pi.first_occurred_at,
        pi.last_occurred_at
    from per_id as pi
)

select * from final
