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
with

map_events as (
    select me.stage_model, me.journey_id, me.event_seq, me.stage_index, me.is_designed_channel
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
        sd.designed_channels,
        -- the last stage has no next stage to reach within a budget
        case when sd.stage_index < sd.n_stages then sd.time_budget_us end as time_budget_us
    from stage_definitions as sd
),

-- Per journey and stage: first and last event of the stage, first and last event of any later stage.
journey_stage_spans as (
    select
        s.stage_model,
        s.stage_index,
        me.journey_id,
        min(me.event_seq) filter (where me.stage_index = s.stage_index) as first_seq,
        max(me.event_seq) filter (where me.stage_index = s.stage_index) as last_seq,
        min(me.event_seq) filter (where me.stage_index > s.stage_index) as first_later_seq,
        bool_or(not me.is_designed_channel) filter (where me.stage_index = s.stage_index) as used_off_design
    from stages as s
    inner join map_events as me on me.stage_model = s.stage_model and me.stage_index >= s.stage_index
    group by s.stage_model, s.stage_index, me.journey_id
),

gaps as (
    select
        jss.stage_model,
        jss.stage_index,
        count(*) filter (where jss.first_seq is not null) as journeys_at_stage,
        count(*) filter (where jss.first_later_seq is not null) as journeys_reached_later,
        count(*) filter (
            where jss.first_later_seq is not null and (jss.first_seq is null or jss.first_seq > jss.first_later_seq)
        ) as journeys_skipped,
        count(*) filter (where jss.last_seq > jss.first_later_seq) as journeys_went_back,
        count(*) filter (where jss.used_off_design) as journeys_off_design_channel
    from journey_stage_spans as jss
    group by jss.stage_model, jss.stage_index
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
