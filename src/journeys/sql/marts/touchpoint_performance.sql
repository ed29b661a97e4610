-- model: touchpoint_performance
-- grain: stage_model, stage_index, touchpoint
-- materialized: table
-- partition: none
-- publish: true
-- params: map_models, map_modes
-- One row per (stage model, stage, touchpoint) over the events of that touchpoint mapped to that stage:
-- reach, owner, sentiment, how often journeys ended or dropped right after it, dropped at its stage,
-- reached the next stage after it, and the time to the journey's next event. Dropout and closure come
-- from each stage model's first configured funnel mode.
with

-- Three narrow reads of the same table: one CTE read three times is materialized first, with every column.
touch_events as (
    select
        te.stage_model,
        te.stage_index,
        te.touchpoint,
        te.journey_key,
        te.journey_id,
        te.customer_key,
        te.next_event_at,
        te.moved_on
    from int_map_events as te
),

channel_events as (
    select ce.stage_model, ce.stage_index, ce.touchpoint, ce.channel from int_map_events as ce
),

map_events as (
    select
        me.stage_model,
        me.stage_index,
        me.touchpoint,
        me.owner,
        me.sentiment,
        me.moved_on,
        me.occurred_at,
        me.next_event_at
    from int_map_events as me
),

map_modes as (
    select
        unnest(cast($map_models as varchar[])) as stage_model,
        unnest(cast($map_modes as varchar[])) as mode
),

journey_status as (
    select js.stage_model, js.journey_id, js.is_closed, js.dropout_stage
    from journey_stages as js
    inner join map_modes as mm on mm.stage_model = js.stage_model and mm.mode = js.mode
),

stages as (
    select sd.stage_model, sd.stage_index, sd.stage_name from stage_definitions as sd
),

-- One row per (touchpoint at a stage, journey): what the journey did there. Counting these rows instead of
-- distinct journey ids over the events is the same count at a fraction of the cost. The journey's last
-- event is the one with no next event; its status (closed, dropped) is joined per journey, not per event
-- (journey_stages has a row for every journey and mode, so the event counts need no join).
journey_touches as (
    select
        me.stage_model,
        me.stage_index,
        me.touchpoint,
        me.journey_key,
        any_value(me.journey_id) as journey_id,
        any_value(me.customer_key) as customer_key,
        bool_or(me.next_event_at is null) as has_last_event,
        bool_or(me.moved_on) as reached_next
    from touch_events as me
    group by me.stage_model, me.stage_index, me.touchpoint, me.journey_key
),

journey_outcomes as (
    select
        jt.stage_model,
        jt.stage_index,
        jt.touchpoint,
        jt.customer_key,
        jt.has_last_event and js.is_closed as ended_after,
        jt.has_last_event and js.dropout_stage is not null as dropped_after,
        js.dropout_stage = jt.stage_index as dropped_at_stage,
        jt.reached_next
    from journey_touches as jt
    inner join journey_status as js on js.stage_model = jt.stage_model and js.journey_id = jt.journey_id
),

journey_counts as (
    select
        jt.stage_model,
        jt.stage_index,
        jt.touchpoint,
        count(*) as journeys_reached,
        count(distinct jt.customer_key) as customers_reached,
        count(*) filter (where jt.ended_after) as journeys_ended_after,
        count(*) filter (where jt.dropped_after) as journeys_dropped_after,
        count(*) filter (where jt.dropped_at_stage) as journeys_dropped_at_stage,
        count(*) filter (where jt.reached_next) as journeys_reached_next
    from journey_outcomes as jt
    group by jt.stage_model, jt.stage_index, jt.touchpoint
),

channel_counts as (
    select e.stage_model, e.stage_index, e.touchpoint, e.channel, count(*) as n_channel_events
    from channel_events as e
    group by e.stage_model, e.stage_index, e.touchpoint, e.channel
),

main_channels as (
    select
        cc.stage_model,
        cc.stage_index,
        cc.touchpoint,
        first(cc.channel order by cc.n_channel_events desc, cc.channel asc) as main_channel
    from channel_counts as cc
    group by cc.stage_model, cc.stage_index, cc.touchpoint
),

event_counts as (
    select
        e.stage_model,
        e.stage_index,
        e.touchpoint,
        any_value(e.owner) as owner,
        count(*) as n_events,
        count(e.sentiment) as n_sentiment,
        -- Decimal sums are exact, so the mean does not depend on how threads split the rows.
        avg(e.sentiment::decimal(18, 6))::double as mean_sentiment,
        count(*) filter (where e.sentiment < 0) as n_negative,
        count(*) filter (where e.sentiment = 0) as n_neutral,
        count(*) filter (where e.sentiment > 0) as n_positive,
        bool_or(e.moved_on is not null) as has_next_stage,
        median(epoch_us(e.next_event_at) - epoch_us(e.occurred_at)) / 1e6 as median_time_to_next_event_s
    from map_events as e
    group by e.stage_model, e.stage_index, e.touchpoint
),

grouped as (
    select
        ec.*,
        mc.main_channel,
        jc.journeys_reached,
        jc.customers_reached,
        jc.journeys_ended_after,
        jc.journeys_dropped_after,
        jc.journeys_dropped_at_stage,
        jc.journeys_reached_next
    from event_counts as ec
    inner join journey_counts as jc
        on jc.stage_model = ec.stage_model
        and jc.stage_index = ec.stage_index
        and jc.touchpoint is not distinct from ec.touchpoint
    inner join main_channels as mc
        on mc.stage_model = ec.stage_model
        and mc.stage_index = ec.stage_index
        and mc.touchpoint is not distinct from ec.touchpoint
),

final as (
    select
        g.stage_model,
        g.stage_index,
        s.stage_name,
        g.touchpoint,
        g.main_channel,
        g.owner,
        g.n_events,
        g.journeys_reached,
        g.customers_reached,
        g.n_sentiment,
        g.mean_sentiment,
        g.n_negative,
        g.n_neutral,
        g.n_positive,
        g.n_negative / nullif(g.n_sentiment, 0) as share_negative,
        g.journeys_ended_after,
        g.journeys_ended_after / g.journeys_reached as share_ended_after,
        g.journeys_dropped_after,
        g.journeys_dropped_after / g.journeys_reached as share_dropped_after,
        g.journeys_dropped_at_stage,
        g.journeys_dropped_at_stage / g.journeys_reached as share_dropped_at_stage,
        case when g.has_next_stage then g.journeys_reached_next end as journeys_reached_next,
        case when g.has_next_stage then g.journeys_reached_next / g.journeys_reached end as share_reached_next,
        g.median_time_to_next_event_s
    from grouped as g
    inner join stages as s on s.stage_model = g.stage_model and s.stage_index = g.stage_index
)

select * from final
