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
    select
        me.stage_model,
        me.journey_key,
        me.journey_id,
        me.event_seq,
        me.stage_index,
        me.touchpoint,
        -- a step repeats when it equals the one before; a missing touchpoint never repeats (nor is repeated)
        coalesce(me.stage_index <> me.previous_stage_index, true) as is_new_stage,
        coalesce(me.touchpoint <> me.previous_touchpoint, true) as is_new_touchpoint
    from int_map_events as me
),

-- Read again rather than from map_events: a CTE read twice is materialized first, which costs more.
map_touchpoints as (
    select mt.touchpoint from int_map_events as mt
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

-- Stages and touchpoints numbered from 1 across the models (a missing touchpoint has no number): lists of
-- integers aggregate and sort several times faster than lists of text, so a step is numbers until the
-- journey's path is built from one list of names.
-- materialized: the steps and the names list must read one numbering
stage_codes as materialized (
    select
        sd.stage_model,
        sd.stage_index,
        sd.stage_name,
        row_number() over (order by sd.stage_model, sd.stage_index) as stage_code
    from stage_definitions as sd
),

touchpoints as (
    select distinct mt.touchpoint
    from map_touchpoints as mt
    where mt.touchpoint is not null
),

touchpoint_codes as (
    select tp.touchpoint, row_number() over (order by tp.touchpoint) as touchpoint_code
    from touchpoints as tp
),

-- One row: a cross join with it is cheap, where a join on the model copied the lists into every journey.
name_lists as (
    select
        (select list(sc.stage_name order by sc.stage_code) from stage_codes as sc) as stage_name_list,
        (select list(tc.touchpoint order by tc.touchpoint_code) from touchpoint_codes as tc) as touchpoint_name_list
),

-- One list of steps per journey, sorted by event_seq after the aggregate: four ordered string_aggs (each
-- sorting every journey's rows apart) and a window for the previous step cost several times more.
journey_steps as (
    select
        me.stage_model,
        any_value(me.journey_id) as journey_id,
        list_sort(
            list({
                'event_seq': me.event_seq,
                'stage_code': sc.stage_code,
                -- 0 for a missing touchpoint: list_select takes no null index, and position 0 gives null
                'touchpoint_code': coalesce(tc.touchpoint_code, 0),
                'is_new_stage': me.is_new_stage,
                'is_new_touchpoint': me.is_new_touchpoint
            })
        ) as steps
    from map_events as me
    inner join stage_codes as sc on sc.stage_model = me.stage_model and sc.stage_index = me.stage_index
    left join touchpoint_codes as tc on tc.touchpoint = me.touchpoint
    -- journey_key: the integer twin of journey_id groups faster
    group by me.stage_model, me.journey_key
),

-- The steps as lists of numbers: stage and touchpoint codes, all steps and the new ones only.
step_lists as (
    select
        jst.stage_model,
        jst.journey_id,
        len(jst.steps) as n_steps,
        list_transform(jst.steps, lambda step: step.stage_code) as stage_codes,
        list_transform(list_filter(jst.steps, lambda step: step.is_new_stage), lambda step: step.stage_code)
            as stage_codes_collapsed,
        list_transform(jst.steps, lambda step: step.touchpoint_code) as touchpoint_codes,
        list_transform(
            list_filter(jst.steps, lambda step: step.is_new_touchpoint), lambda step: step.touchpoint_code
        ) as touchpoint_codes_collapsed
    from journey_steps as jst
),

named as (
    select
        sl.stage_model,
        sl.journey_id,
        sl.n_steps,
        len(sl.stage_codes_collapsed) as n_steps_stage_collapsed,
        len(sl.touchpoint_codes_collapsed) as n_steps_touchpoint_collapsed,
        -- array_to_string skips missing touchpoints (code 0, so no name), as string_agg did
        array_to_string(list_select(nl.stage_name_list, sl.stage_codes), ' > ') as stage_path,
        array_to_string(list_select(nl.stage_name_list, sl.stage_codes_collapsed), ' > ') as stage_path_collapsed,
        array_to_string(list_select(nl.touchpoint_name_list, sl.touchpoint_codes), ' > ') as touchpoint_path,
        array_to_string(list_select(nl.touchpoint_name_list, sl.touchpoint_codes_collapsed), ' > ')
            as touchpoint_path_collapsed
    from step_lists as sl
    cross join name_lists as nl
),

-- Joined once per journey, before the four variants of its path multiply the rows.
journey_paths as (
    select
        n.stage_model,
        js.is_converted,
        js.duration_us,
        n.n_steps,
        n.n_steps_stage_collapsed,
        n.n_steps_touchpoint_collapsed,
        n.stage_path,
        n.stage_path_collapsed,
        n.touchpoint_path,
        n.touchpoint_path_collapsed
    from named as n
    inner join journey_status as js on js.stage_model = n.stage_model and js.journey_id = n.journey_id
),

variants as (
    select
        jp.stage_model, jp.is_converted, jp.duration_us, 'stage' as path_type, false as repeats_collapsed,
        jp.stage_path as step_path, jp.n_steps
    from journey_paths as jp
    union all
    select
        jp.stage_model, jp.is_converted, jp.duration_us, 'stage' as path_type, true as repeats_collapsed,
        jp.stage_path_collapsed, jp.n_steps_stage_collapsed
    from journey_paths as jp
    union all
    select
        jp.stage_model, jp.is_converted, jp.duration_us, 'touchpoint' as path_type, false as repeats_collapsed,
        jp.touchpoint_path, jp.n_steps
    from journey_paths as jp
    union all
    select
        jp.stage_model, jp.is_converted, jp.duration_us, 'touchpoint' as path_type, true as repeats_collapsed,
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
        count(*) filter (where v.is_converted) as journeys_converted,
        median(v.duration_us) / 1e6 as median_duration_s
    from variants as v
    group by v.stage_model, v.path_type, v.repeats_collapsed, v.step_path
),

-- Only a path with at least the top_paths-th largest count can rank among the top_paths: ranking those
-- sorts a few rows instead of every distinct path (most journeys' paths are their own).
variant_totals as (
    select
        g.stage_model,
        g.path_type,
        g.repeats_collapsed,
        sum(g.journeys) as all_journeys,
        list_min(max(g.journeys, $top_paths)) as min_top_journeys
    from grouped as g
    group by g.stage_model, g.path_type, g.repeats_collapsed
),

ranked as (
    select
        g.*,
        g.journeys / vt.all_journeys as share,
        row_number() over (variant order by g.journeys desc, g.step_path asc) as path_rank
    from grouped as g
    inner join variant_totals as vt
        on vt.stage_model = g.stage_model
        and vt.path_type = g.path_type
        and vt.repeats_collapsed = g.repeats_collapsed
    where g.journeys >= vt.min_top_journeys
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
