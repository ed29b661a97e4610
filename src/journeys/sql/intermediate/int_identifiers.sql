-- model: int_identifiers
-- grain: event_id, id_type, id_value
-- materialized: temp
-- partition: none
-- publish: false
-- params: blocked_regex, blocked_values, has_blocked_patterns
-- procedure: identity
-- One row per (event_id, id_type, id_value) for the usable identifiers of an event
-- Values are compared to the blocked lists after trim + lower case; blocked values never link anything.
with source_events as (
    select
        ev.event_id,
        ev.occurred_at,
        ev.identifiers
    from events as ev
),

exploded as (
    select
        se.event_id,
        se.occurred_at,
        unnest(se.identifiers) as ident
    from source_events as se
),

typed as (
    select
        ex.event_id,
        ex.occurred_at,
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
        us.id_type,
        us.id_value
    from usable as us
    group by us.event_id, us.id_type, us.id_value
),

final as (
    select
        dd.event_id,
        -- integer event number: cheaper joins than on the varchar id, and independent of input order
        dense_rank() over (order by dd.event_id) as event_no,
        dd.occurred_at,
        dd.id_type,
        dd.id_value
    from deduplicated as dd
)

select * from final
