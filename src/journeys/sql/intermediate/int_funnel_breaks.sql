-- model: int_funnel_breaks
-- grain: funnel_key
-- materialized: temp
-- partition: customer
-- publish: false
-- procedure: funnel
-- One row per funnel partition whose scan stops early, with the (time, step) where it stops:
-- strict_break for `strict` (the first stage event, after the first step-1 event, before which no step it may
-- follow has been reached: the previous step, or an earlier one when only optional stages lie between; ties
-- order by stage, so "before" compares (occurred_at, step)), dedup_break for
-- `strict_deduplication` (the first event of a step >= 2 that was already reached; a second event of that
-- step at the very instant it was reached counts).
with

funnel_specs as not materialized (
    select
        int_funnel_specs.mode,
        int_funnel_specs.model_no,
        int_funnel_specs.family_no,
        int_funnel_specs.strict_dedup
    from int_funnel_specs
),

funnel_events as not materialized (
    select
        int_funnel_events.funnel_key,
        int_funnel_events.model_no,
        int_funnel_events.family_no,
        int_funnel_events.step,
        int_funnel_events.occurred_us
    from int_funnel_events
),

step_reached as not materialized (
    select
        int_funnel_step_reached.funnel_key,
        int_funnel_step_reached.model_no,
        int_funnel_step_reached.family_no,
        int_funnel_step_reached.step,
        int_funnel_step_reached.reached_us,
        int_funnel_step_reached.reach_step
    from int_funnel_step_reached
),

strict_models as (
    select distinct funnel_specs.model_no
    from funnel_specs
    where funnel_specs.mode = 'strict'
),

followed_steps as (
    -- each reached step of a strict partition, once for every later step that may follow it
    select
        step_reached.funnel_key,
        unnest(range(step_reached.step + 1, step_reached.reach_step + 1)) as step,
        step_reached.reached_us
    from step_reached
    where step_reached.family_no = 0
        and step_reached.model_no in (select strict_models.model_no from strict_models)
),

previous_reached as (
    select
        followed_steps.funnel_key,
        followed_steps.step,
        min(followed_steps.reached_us) as reached_us
    from followed_steps
    group by followed_steps.funnel_key, followed_steps.step
),

strict_break_candidates as (
    select
        funnel_events.funnel_key,
        funnel_events.occurred_us,
        funnel_events.step
    from funnel_events
    inner join step_reached as first_step
        on first_step.funnel_key = funnel_events.funnel_key
        and first_step.step = 1
    left join previous_reached as previous_step
        on previous_step.funnel_key = funnel_events.funnel_key
        and previous_step.step = funnel_events.step
    where funnel_events.family_no = 0
        and funnel_events.model_no in (select strict_models.model_no from strict_models)
        and funnel_events.step >= 2
        and funnel_events.occurred_us >= first_step.reached_us
        and (previous_step.reached_us is null or funnel_events.occurred_us < previous_step.reached_us)
),

strict_breaks as (
    select
        strict_break_candidates.funnel_key,
        min(struct_pack(
            break_us := strict_break_candidates.occurred_us,
            break_step := strict_break_candidates.step
        )) as break_point
    from strict_break_candidates
    group by strict_break_candidates.funnel_key
),

dedup_models as (
    select distinct funnel_specs.model_no
    from funnel_specs
    where funnel_specs.strict_dedup and funnel_specs.family_no is not null
),

dedup_candidates as (
    select
        funnel_events.funnel_key,
        funnel_events.step,
        case
            when count(*) filter (where funnel_events.occurred_us = step_reached.reached_us) >= 2
                then step_reached.reached_us
            else min(funnel_events.occurred_us) filter (where funnel_events.occurred_us > step_reached.reached_us)
        end as break_us
    from funnel_events
    inner join step_reached
        on step_reached.funnel_key = funnel_events.funnel_key
        and step_reached.step = funnel_events.step
    where funnel_events.model_no in (select dedup_models.model_no from dedup_models)
        and funnel_events.step >= 2
        and funnel_events.occurred_us >= step_reached.reached_us
    group by funnel_events.funnel_key, funnel_events.step, step_reached.reached_us
),

dedup_breaks as (
    select
        dedup_candidates.funnel_key,
        min(struct_pack(
            break_us := dedup_candidates.break_us,
            break_step := dedup_candidates.step
        )) as break_point
    from dedup_candidates
    where dedup_candidates.break_us is not null
    group by dedup_candidates.funnel_key
),

all_breaks as (
    select
        strict_breaks.funnel_key,
        'strict' as break_kind,
        strict_breaks.break_point
    from strict_breaks
    union all
    select
        dedup_breaks.funnel_key,
        'dedup' as break_kind,
        dedup_breaks.break_point
    from dedup_breaks
),

final as (
    select
        all_breaks.funnel_key,
        min(all_breaks.break_point) filter (where all_breaks.break_kind = 'strict') as strict_break,
        min(all_breaks.break_point) filter (where all_breaks.break_kind = 'dedup') as dedup_break
    from all_breaks
    group by all_breaks.funnel_key
)

select * from final
