-- model: journey_gaps
-- grain: stage_model, stage_index
-- materialized: table
-- partition: none
-- publish: true
-- params: map_models, map_modes
-- One row per (stage model, stage): how far real journeys are from the designed one at that stage:
-- journeys that skipped it (reached a later stage before any event of it), went back to it after a
-- later stage, used a channel not designed for it, or overran its time budget (each stage model's first
-- funnel mode). Stages are the events' stages (first matching rule), in (occurred_at, event_id) order.
-- A skip of an optional stage (is_optional) is counted too: it is by design, so filter on it to see the gaps.
with

map_events as (
    select me.stage_model, me.journey_key, me.event_seq, me.stage_index, me.is_designed_channel
    from int_map_events as me
),

map_modes as (
    select
        unnest(cast($map_models as varchar[])) as stage_model,
        unnest(cast($map_modes as varchar[])) as mode
),

transitions as (
    select st.stage_model, st.journey_id, st.stage_index, st.reached_at, st.next_reached_at
    from int_stage_transitions as st
    inner join map_modes as mm on mm.stage_model = st.stage_model and mm.mode = st.mode
),

stages as (
    select
        sd.stage_model,
        sd.stage_index,
        sd.stage_name,
        sd.optional as is_optional,
        sd.designed_channels,
        -- the last stage has no next stage to reach within a budget
        case when sd.stage_index < sd.n_stages then sd.time_budget_us end as time_budget_us
    from stage_definitions as sd
),

-- Per journey and stage it has events at: its first and last event there, and whether one of them used a
-- channel not designed for the stage.
journey_stage_spans as (
    select
        me.stage_model,
        me.journey_key,
        me.stage_index,
        min(me.event_seq) as first_seq,
        max(me.event_seq) as last_seq,
        bool_or(not me.is_designed_channel) as used_off_design
    from map_events as me
    group by me.stage_model, me.journey_key, me.stage_index
),

-- The first event of any later stage and the journey's furthest stage, from a window over the journey's few
-- stage rows: joining every event to every earlier stage multiplied the rows by the number of stages.
spans as (
    select
        jss.*,
        min(jss.first_seq) over (
            partition by jss.stage_model, jss.journey_key
            order by jss.stage_index
            rows between 1 following and unbounded following
        ) as first_later_seq,
        max(jss.stage_index) over (partition by jss.stage_model, jss.journey_key) as furthest_stage_index
    from journey_stage_spans as jss
),

at_stage as (
    select
        sp.stage_model,
        sp.stage_index,
        count(*) as journeys_at_stage,
        -- at the stage before any later one: the journeys that reached a later stage and did not skip it
        count(*) filter (where sp.first_seq < sp.first_later_seq) as journeys_in_order,
        count(*) filter (where sp.last_seq > sp.first_later_seq) as journeys_went_back,
        count(*) filter (where sp.used_off_design) as journeys_off_design_channel
    from spans as sp
    group by sp.stage_model, sp.stage_index
),

furthest_stages as (
    select sp.stage_model, sp.furthest_stage_index, count(*) as journeys
    from spans as sp
    where sp.stage_index = sp.furthest_stage_index
    group by sp.stage_model, sp.furthest_stage_index
),

-- A journey reached a stage later than i when its furthest stage is above i.
reached_later as (
    select s.stage_model, s.stage_index, sum(fs.journeys)::bigint as journeys_reached_later
    from stages as s
    inner join furthest_stages as fs on fs.stage_model = s.stage_model and fs.furthest_stage_index > s.stage_index
    group by s.stage_model, s.stage_index
),

-- Skipped: reached a later stage without an event of this one before it.
gaps as (
    select
        s.stage_model,
        s.stage_index,
        ast.journeys_at_stage,
        rl.journeys_reached_later,
        rl.journeys_reached_later - coalesce(ast.journeys_in_order, 0) as journeys_skipped,
        ast.journeys_went_back,
        ast.journeys_off_design_channel
    from stages as s
    left join at_stage as ast on ast.stage_model = s.stage_model and ast.stage_index = s.stage_index
    left join reached_later as rl on rl.stage_model = s.stage_model and rl.stage_index = s.stage_index
),

budgets as (
    select
        t.stage_model,
        t.stage_index,
        count(*) filter (where t.next_reached_at is not null) as journeys_converted,
        count(*) filter (
            where epoch_us(t.next_reached_at) - epoch_us(t.reached_at) > s.time_budget_us
        ) as journeys_over_budget
    from transitions as t
    inner join stages as s on s.stage_model = t.stage_model and s.stage_index = t.stage_index
    group by t.stage_model, t.stage_index
),

final as (
    select
        s.stage_model,
        s.stage_index,
        s.stage_name,
        s.is_optional,
        coalesce(g.journeys_at_stage, 0) as journeys_at_stage,
        coalesce(g.journeys_reached_later, 0) as journeys_reached_later,
        coalesce(g.journeys_skipped, 0) as journeys_skipped,
        g.journeys_skipped / nullif(g.journeys_reached_later, 0) as share_skipped,
        coalesce(g.journeys_went_back, 0) as journeys_went_back,
        g.journeys_went_back / nullif(g.journeys_at_stage, 0) as share_went_back,
        case when len(s.designed_channels) > 0 then coalesce(g.journeys_off_design_channel, 0) end
            as journeys_off_design_channel,
        case when len(s.designed_channels) > 0 then g.journeys_off_design_channel / nullif(g.journeys_at_stage, 0) end
            as share_off_design_channel,
        case when s.time_budget_us is not null then coalesce(b.journeys_converted, 0) end as journeys_converted,
        case when s.time_budget_us is not null then coalesce(b.journeys_over_budget, 0) end as journeys_over_budget,
        case when s.time_budget_us is not null then b.journeys_over_budget / nullif(b.journeys_converted, 0) end
            as share_over_budget
    from stages as s
    left join gaps as g on g.stage_model = s.stage_model and g.stage_index = s.stage_index
    left join budgets as b on b.stage_model = s.stage_model and b.stage_index = s.stage_index
)

select * from final
