-- model: handoffs
-- grain: stage_model, from_owner, to_owner
-- materialized: table
-- partition: none
-- publish: true
-- params: map_models, map_modes
-- One row per (stage model, owning department, next owning department): handoffs inside journeys, where
-- a journey's owned event (an event with a stage, owned by its touchpoint's owner or else its stage's)
-- is followed by an owned event of another department. A journey that dropped (each stage model's first
-- funnel mode) after an event owned by one department, at a stage whose next stage another department
-- owns, dropped within that pending handoff: the next event never came.
with

-- next_owner, next_owned_at: the journey's next owned event, from int_map_events' one window over the journey
map_events as (
    select
        me.stage_model,
        me.journey_id,
        me.occurred_at,
        me.stage_index,
        me.owner,
        me.next_owner,
        me.next_owned_at as next_at
    from int_map_events as me
    where me.owner is not null
),

map_modes as (
    select
        unnest(cast($map_models as varchar[])) as stage_model,
        unnest(cast($map_modes as varchar[])) as mode
),

dropped as (
    select js.stage_model, js.journey_id
    from journey_stages as js
    inner join map_modes as mm on mm.stage_model = js.stage_model and mm.mode = js.mode
    where js.dropout_stage is not null
),

stages as (
    select sd.stage_model, sd.stage_index, sd.owner from stage_definitions as sd
),

completed as (
    select
        sq.stage_model,
        sq.owner as from_owner,
        sq.next_owner as to_owner,
        count(*) as handoffs,
        count(distinct sq.journey_id) as journeys_handed_off,
        median(epoch_us(sq.next_at) - epoch_us(sq.occurred_at)) / 1e6 as median_delay_s
    from map_events as sq
    where sq.next_owner is not null and sq.next_owner <> sq.owner
    group by sq.stage_model, sq.owner, sq.next_owner
),

-- The last owned event of a dropped journey, handed to the owner of its stage's next stage.
pending as (
    select
        sq.stage_model,
        sq.owner as from_owner,
        ns.owner as to_owner,
        count(distinct sq.journey_id) as journeys_dropped_within
    from map_events as sq
    inner join dropped as d on d.stage_model = sq.stage_model and d.journey_id = sq.journey_id
    inner join stages as ns on ns.stage_model = sq.stage_model and ns.stage_index = sq.stage_index + 1
    where sq.next_owner is null and ns.owner is not null and ns.owner <> sq.owner
    group by sq.stage_model, sq.owner, ns.owner
),

final as (
    select
        coalesce(c.stage_model, p.stage_model) as stage_model,
        coalesce(c.from_owner, p.from_owner) as from_owner,
        coalesce(c.to_owner, p.to_owner) as to_owner,
        coalesce(c.handoffs, 0) as handoffs,
        coalesce(c.journeys_handed_off, 0) as journeys_handed_off,
        c.median_delay_s,
        coalesce(p.journeys_dropped_within, 0) as journeys_dropped_within,
        coalesce(p.journeys_dropped_within, 0)
        / (coalesce(c.journeys_handed_off, 0) + coalesce(p.journeys_dropped_within, 0)) as share_dropped_within
    from completed as c
    full outer join pending as p
        on p.stage_model = c.stage_model and p.from_owner = c.from_owner and p.to_owner = c.to_owner
)

select * from final
