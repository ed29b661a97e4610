-- model: int_identifiers
-- grain: event_id, id_type, id_value
-- materialized: temp
-- partition: none
-- publish: false
-- params: blocked_regex, blocked_values, has_blocked_patterns
-- procedure: identity
-- One row per (event_id, id_type, id_value) for the usable identifiers of an event or of a link row
-- Values are compared to the blocked lists after trim + lower case; blocked values never link anything.
-- A link row (a `kind: links` source) links its identifiers like an event does, under its link_id (which
-- no event shares: both start with their source's name), with no time and is_link set; it never reaches
-- int_event_customers, which starts from `events`.
with source_events as (
    select
        ev.event_id,
        ev.occurred_at,
        ev.identifiers,
        false as is_link
    from events as ev
),

source_links as (
    select
        lk.link_id as event_id,
        null::timestamp as occurred_at,
        lk.identifiers,
        true as is_link
    from links as lk
),

source_rows as (
    select * from source_events
    union all
    select * from source_links
),

exploded as (
    select
        sr.event_id,
        sr.occurred_at,
        sr.is_link,
        unnest(sr.identifiers) as ident
    from source_rows as sr
),

typed as (
    select
        ex.event_id,
        ex.occurred_at,
        ex.is_link,
        ex.ident.id_type,
        ex.ident.id_value,
        lower(trim(ex.ident.id_value)) as norm_value
    from exploded as ex
    where ex.ident.id_type is not null
        and ex.ident.id_value is not null
),

usable as (
    select
        ty.event_id,
        ty.occurred_at,
        ty.is_link,
        ty.id_type,
        ty.id_value
    from typed as ty
    where not list_contains($blocked_values, ty.norm_value)
        -- one alternation of all patterns: a constant pattern is compiled once, a per-row one for every row
        and not ($has_blocked_patterns and regexp_matches(ty.norm_value, $blocked_regex))
),

deduplicated as (
    select
        us.event_id,
        min(us.occurred_at) as occurred_at,
        us.is_link,
        us.id_type,
        us.id_value
    from usable as us
    group by us.event_id, us.is_link, us.id_type, us.id_value
),

final as (
    select
        dd.event_id,
        -- integer event number: cheaper joins than on the varchar id, and independent of input order
        dense_rank() over (order by dd.event_id) as event_no,
        dd.occurred_at,
        dd.is_link,
        dd.id_type,
        dd.id_value
    from deduplicated as dd
)

select * from final
