-- model: stage_conversion
-- grain: stage_model, mode, cohort_period, cohort, breakdown, breakdown_value, stage_index
-- materialized: table
-- partition: none
-- publish: true
-- params: breakdown_attribute, cohort_period
-- One row per (stage model, mode, cohort, breakdown, breakdown value, stage).
-- Cohort = period of the journey's entry (its first stage-1 event; in open mode its entry stage);
-- cohort 'all' sums every period.
-- Breakdowns: none, first_channel, last_channel, first_touchpoint and, when configured, the attribute.
-- Open mode (journeys enter at their lowest stage): entered at i = entry_stage <= i <= furthest_stage;
-- conversion_from_start divides by every journey that entered the funnel (= entered at 1 when closed).
-- Optional stages: a journey entered stage i only if it did not skip it (journey_stages.stages_skipped), and
-- converted from i when it got further than i (furthest_stage > i), whichever later stage came next.
-- Time budget: journeys_within_budget counts converters of stage i whose time to the next stage they reached was within
-- stage i's time_budget; share_within_budget = that / converters (null without a budget); journeys_overdue counts
-- the journeys in progress at stage i that are already past its budget (journey_stages.overdue_stage).
with

entered_journeys as (
    select
        js.stage_model,
        js.mode,
        js.journey_id,
        js.entry_stage,
        js.furthest_stage,
        js.stages_skipped,
        js.is_closed,
        js.is_converted,
        js.overdue_stage,
        -- Every (cohort, breakdown) group the journey counts in, as one list: the counts and the timing below
        -- both expand it, the timing after its join, so no expanded copy of the journeys is joined or kept.
        flatten(list_transform(
            [
                {'cohort_period': 'all', 'cohort': 'all'},
                {
                    'cohort_period': $cohort_period,
                    'cohort': strftime(date_trunc($cohort_period, js.entered_at), '%Y-%m-%d')
                }
            ],
            lambda c: list_transform(
                [
                    {'breakdown': 'none', 'breakdown_value': 'all'},
                    {'breakdown': 'first_channel', 'breakdown_value': coalesce(js.first_channel, '(none)')},
                    {'breakdown': 'last_channel', 'breakdown_value': coalesce(js.last_channel, '(none)')},
                    {'breakdown': 'first_touchpoint', 'breakdown_value': coalesce(js.first_touchpoint, '(none)')}
                ]
                || case
                    when $breakdown_attribute is null then []
                    else
                        [{
                            'breakdown': 'attribute:' || $breakdown_attribute,
                            'breakdown_value': coalesce(js.breakdown_attribute, '(none)')
                        }]
                end,
                lambda b: {
                    'cohort_period': c.cohort_period,
                    'cohort': c.cohort,
                    'breakdown': b.breakdown,
                    'breakdown_value': b.breakdown_value
                }
            )
        )) as journey_groups
    from journey_stages as js
    where js.furthest_stage >= 1
),

stage_transitions as (
    select * from int_stage_transitions
),

stages as (
    select sd.stage_model, sd.stage_index, sd.stage_name, sd.n_stages from stage_definitions as sd
),

journey_groups as (
    select
        ej.stage_model,
        ej.mode,
        ej.entry_stage,
        ej.furthest_stage,
        ej.stages_skipped,
        ej.is_closed,
        ej.is_converted,
        ej.overdue_stage,
        -- a recursive unnest expands each struct into its own named columns (cohort_period ... breakdown_value)
        unnest(ej.journey_groups, recursive := true)  -- noqa: AL03
    from entered_journeys as ej
),

outcome_counts as (
    select
        jg.stage_model, jg.mode, jg.cohort_period, jg.cohort, jg.breakdown, jg.breakdown_value,
        jg.entry_stage,
        jg.furthest_stage,
        jg.stages_skipped,
        count(*) as n_journeys,
        count(*) filter (where jg.is_closed and not jg.is_converted) as n_dropped,
        count(*) filter (where not jg.is_closed) as n_in_progress,
        count(*) filter (where jg.overdue_stage is not null) as n_overdue
    from journey_groups as jg
    group by all
),

stage_grid as (
    select g.*, s.stage_index, s.stage_name, s.n_stages
    from (
        select distinct oc.stage_model, oc.mode, oc.cohort_period, oc.cohort, oc.breakdown, oc.breakdown_value
        from outcome_counts as oc
    ) as g
    inner join stages as s on s.stage_model = g.stage_model
),

stage_counts as (
    select
        sg.stage_model, sg.mode, sg.cohort_period, sg.cohort, sg.breakdown, sg.breakdown_value,
        sg.stage_index, sg.stage_name, sg.n_stages,
        coalesce(sum(oc.n_journeys), 0) as journeys_in_funnel,
        coalesce(sum(oc.n_journeys) filter (
            where oc.entry_stage <= sg.stage_index and oc.furthest_stage >= sg.stage_index
            and not list_contains(oc.stages_skipped, sg.stage_index)
        ), 0) as journeys_entered,
        coalesce(sum(oc.n_journeys) filter (
            where oc.entry_stage <= sg.stage_index and oc.furthest_stage > sg.stage_index
            and not list_contains(oc.stages_skipped, sg.stage_index)
        ), 0) as journeys_converted,
        coalesce(sum(oc.n_dropped) filter (where oc.furthest_stage = sg.stage_index), 0) as journeys_dropped,
        coalesce(sum(oc.n_in_progress) filter (where oc.furthest_stage = sg.stage_index), 0)
            as journeys_in_progress,
        -- a journey is overdue at its furthest stage (journey_stages.overdue_stage)
        coalesce(sum(oc.n_overdue) filter (where oc.furthest_stage = sg.stage_index), 0) as journeys_overdue
    from stage_grid as sg
    left join outcome_counts as oc
        on oc.stage_model = sg.stage_model and oc.mode = sg.mode and oc.cohort_period = sg.cohort_period
        and oc.cohort = sg.cohort and oc.breakdown = sg.breakdown and oc.breakdown_value = sg.breakdown_value
    group by all
),

budgets as (
    select sd.stage_model, sd.stage_index, sd.time_budget_us from stage_definitions as sd
),

transitions as (
    select
        r1.stage_model, r1.mode, r1.journey_id, r1.stage_index,
        epoch(r1.next_reached_at) - epoch(r1.reached_at) as seconds_to_next,
        case
            when b.time_budget_us is not null
                then epoch_us(r1.next_reached_at) - epoch_us(r1.reached_at) <= b.time_budget_us
        end as within_budget
    from stage_transitions as r1
    left join budgets as b on b.stage_model = r1.stage_model and b.stage_index = r1.stage_index
    where r1.next_reached_at is not null
),

transition_groups as (
    select
        t.stage_index,
        t.seconds_to_next,
        t.within_budget,
        ej.stage_model,
        ej.mode,
        -- a recursive unnest expands each struct into its own named columns (cohort_period ... breakdown_value)
        unnest(ej.journey_groups, recursive := true)  -- noqa: AL03
    from transitions as t
    inner join entered_journeys as ej
        on ej.journey_id = t.journey_id and ej.stage_model = t.stage_model and ej.mode = t.mode
),

timing as (
    select
        tg.stage_model, tg.mode, tg.cohort_period, tg.cohort, tg.breakdown, tg.breakdown_value, tg.stage_index,
        avg(tg.seconds_to_next) as mean_time_to_next_s,
        quantile_cont(tg.seconds_to_next, 0.5) as median_time_to_next_s,
        quantile_cont(tg.seconds_to_next, 0.9) as p90_time_to_next_s,
        count(*) filter (where tg.within_budget) as journeys_within_budget,
        count(*) filter (where tg.within_budget is not null) as converters_with_budget
    from transition_groups as tg
    group by all
),

final as (
    select
        sc.stage_model,
        sc.mode,
        sc.cohort_period,
        sc.cohort,
        sc.breakdown,
        sc.breakdown_value,
        sc.stage_index,
        sc.stage_name,
        -- sums of counts are HUGEINT, which JavaScript clients and Parquet readers mishandle
        sc.journeys_entered::bigint as journeys_entered,
        case when sc.stage_index < sc.n_stages then sc.journeys_converted::bigint end as journeys_converted,
        case
            when sc.stage_index < sc.n_stages and sc.journeys_entered > 0
                then sc.journeys_converted / sc.journeys_entered
        end as conversion_rate,
        sc.journeys_entered / nullif(sc.journeys_in_funnel, 0) as conversion_from_start,
        sc.journeys_dropped::bigint as journeys_dropped,
        sc.journeys_in_progress::bigint as journeys_in_progress,
        case
            when b.time_budget_us is not null and sc.stage_index < sc.n_stages then sc.journeys_overdue::bigint
        end as journeys_overdue,
        t.mean_time_to_next_s,
        t.median_time_to_next_s,
        t.p90_time_to_next_s,
        b.time_budget_us / 1e6 as time_budget_s,
        case
            when b.time_budget_us is not null and sc.stage_index < sc.n_stages
                then coalesce(t.journeys_within_budget, 0)
        end as journeys_within_budget,
        case
            when b.time_budget_us is not null
                then t.journeys_within_budget / nullif(t.converters_with_budget, 0)
        end as share_within_budget
    from stage_counts as sc
    left join budgets as b on b.stage_model = sc.stage_model and b.stage_index = sc.stage_index
    left join timing as t
        on t.stage_model = sc.stage_model and t.mode = sc.mode and t.cohort_period = sc.cohort_period
        and t.cohort = sc.cohort and t.breakdown = sc.breakdown and t.breakdown_value = sc.breakdown_value
        and t.stage_index = sc.stage_index
)

select * from final
