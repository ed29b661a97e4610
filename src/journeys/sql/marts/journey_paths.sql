-- model: journey_paths
-- grain: stage_model, path_type, repeats_collapsed, step_path
-- materialized: table
-- partition: none
-- publish: true
-- params: map_models, map_modes, top_paths
-- The most frequent paths of journeys (top_paths per stage model, path type and collapsing): the stage
-- names or the touchpoints of a journey's events with a stage of the model, in (occurred_at, event_id)
-- order, joined by ' > '; with repeats_collapsed, consecutive repeats of one step count once. Conversion
-- and duration come from each stage model's first configured funnel mode and the journey's span.
with

map_events as (
    select me.stage_model, me.journey_key, me.journey_id, me.event_seq, me.stage_index, me.touchpoint
    from int_map_events as me
),

map_modes as (
    select
        unnest(cast($map_models as varchar[])) as stage_model,
        unnest(cast($map_modes as varchar[])) as mode
),

journey_status as (
    select
        js.stage_model,
        js.journey_id,
        js.is_converted,
        epoch_us(js.ended_at) - epoch_us(js.started_at) as duration_us
    from journey_stages as js
    inner join map_modes as mm on mm.stage_model = js.stage_model and mm.mode = js.mode
),

stages as (
    select sd.stage_model, sd.stage_index, sd.stage_name from stage_definitions as sd
),

ordered_steps as (
    select
        me.stage_model,
        me.journey_key,
        me.journey_id,
        me.event_seq,
        s.stage_name,
        me.touchpoint,
        lag(s.stage_name) over journey_order as prev_stage_name,
        lag(me.touchpoint) over journey_order as prev_touchpoint
    from map_events as me
    inner join stages as s on s.stage_model = me.stage_model and s.stage_index = me.stage_index
    -- journey_key: the integer twin of journey_id sorts and groups faster
    window journey_order as (partition by me.stage_model, me.journey_key order by me.event_seq)
),

steps as (
    select
        os.*,
        coalesce(os.stage_name <> os.prev_stage_name, true) as is_new_stage,
        coalesce(os.touchpoint <> os.prev_touchpoint, true) as is_new_touchpoint
    from ordered_steps as os
),

journey_paths as (
    select
        st.stage_model,
        any_value(st.journey_id) as journey_id,
        string_agg(st.stage_name, ' > ' order by st.event_seq) as stage_path,
        string_agg(st.stage_name, ' > ' order by st.event_seq) filter (where st.is_new_stage) as stage_path_collapsed,
        string_agg(st.touchpoint, ' > ' order by st.event_seq) as touchpoint_path,
        string_agg(st.touchpoint, ' > ' order by st.event_seq) filter (
            where st.is_new_touchpoint
        ) as touchpoint_path_collapsed,
        count(*) as n_steps,
        count(*) filter (where st.is_new_stage) as n_steps_stage_collapsed,
        count(*) filter (where st.is_new_touchpoint) as n_steps_touchpoint_collapsed
    from steps as st
    group by st.stage_model, st.journey_key
),

variants as (
    select
        jp.stage_model, jp.journey_id, 'stage' as path_type, false as repeats_collapsed, jp.stage_path as step_path,
        jp.n_steps
    from journey_paths as jp
    union all
    select
        jp.stage_model, jp.journey_id, 'stage' as path_type, true as repeats_collapsed, jp.stage_path_collapsed,
        jp.n_steps_stage_collapsed
    from journey_paths as jp
    union all
    select
        jp.stage_model, jp.journey_id, 'touchpoint' as path_type, false as repeats_collapsed, jp.touchpoint_path,
        jp.n_steps
    from journey_paths as jp
    union all
    select
        jp.stage_model, jp.journey_id, 'touchpoint' as path_type, true as repeats_collapsed,
        jp.touchpoint_path_collapsed, jp.n_steps_touchpoint_collapsed
    from journey_paths as jp
),

grouped as (
    select
        v.stage_model,
        v.path_type,
        v.repeats_collapsed,
        v.step_path,
        any_value(v.n_steps) as n_steps,
        count(*) as journeys,
        count(*) filter (where js.is_converted) as journeys_converted,
        median(js.duration_us) / 1e6 as median_duration_s
    from variants as v
    inner join journey_status as js on js.stage_model = v.stage_model and js.journey_id = v.journey_id
    group by v.stage_model, v.path_type, v.repeats_collapsed, v.step_path
),

ranked as (
    select
        g.*,
        g.journeys / sum(g.journeys) over variant as share,
        row_number() over (variant order by g.journeys desc, g.step_path asc) as path_rank
    from grouped as g
    window variant as (partition by g.stage_model, g.path_type, g.repeats_collapsed)
),

final as (
    select
        r.stage_model,
        r.path_type,
        r.repeats_collapsed,
        r.path_rank,
        r.step_path,
        r.n_steps,
        r.journeys,
        r.share,
        r.journeys_converted,
        r.journeys_converted / r.journeys as conversion_rate,
        r.median_duration_s
    from ranked as r
    where r.path_rank <= $top_paths
)

select * from final
