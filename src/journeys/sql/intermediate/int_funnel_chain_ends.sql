-- model: int_funnel_chain_ends
-- materialized: temp
-- partition: customer
-- publish: false
-- params: level
-- procedure: funnel
-- One row per valid step-$level chain end: an event at chain step $level that completes a chain of
-- steps 1..$level (in (occurred_at, stage) order) within its model's window, per funnel partition.
-- deadline_us is the latest time the next step may have; prev_us the time of the step before; reach_step the
-- highest step this end may precede (the next, or a later one when only optional stages lie between).
with

level_events as (
    select
        int_funnel_events.funnel_key,
        int_funnel_events.model_no,
        int_funnel_events.occurred_us,
        int_funnel_events.reach_step
    from int_funnel_events
    where int_funnel_events.step = $level
),

model_windows as (
    select distinct
        int_funnel_specs.model_no,
        coalesce(int_funnel_specs.window_us, 9223372036854775807) as window_us,
        case when int_funnel_specs.from_prior then int_funnel_specs.window_us end as step_window_us,
        int_funnel_specs.strict_increase
    from int_funnel_specs
    where int_funnel_specs.family_no is not null
),

previous_ends as (
    -- the ends this step may follow: the previous step's, and an earlier step's across optional stages
    select
        int_funnel_chain_ends.funnel_key,
        int_funnel_chain_ends.occurred_us,
        int_funnel_chain_ends.deadline_us,
        int_funnel_chain_ends.step_window_us,
        int_funnel_chain_ends.strict_increase
    from int_funnel_chain_ends
    where int_funnel_chain_ends.step < $level and int_funnel_chain_ends.reach_step >= $level
),

exclusion_events as (
    select
        int_funnel_exclusion_events.funnel_key,
        int_funnel_exclusion_events.occurred_us
    from int_funnel_exclusion_events
    where int_funnel_exclusion_events.after_step = $level - 1
),

first_steps as (
    -- a step-1 event starts (and ends) a chain by itself
    select
        level_events.funnel_key,
        level_events.occurred_us,
        cast(null as bigint) as prev_us,
        case
            when model_windows.window_us > 9223372036854775807 - level_events.occurred_us
                then 9223372036854775807
            else level_events.occurred_us + model_windows.window_us
        end as deadline_us,
        model_windows.step_window_us,
        model_windows.strict_increase,
        level_events.reach_step
    from level_events
    inner join model_windows
        on model_windows.model_no = level_events.model_no
    where $level = 1
),

next_steps as (
    -- The latest previous end at or before this event (ties on occurred_at go to the lower stage, so a
    -- previous-step end at the same instant precedes this event: hence >=) carries the latest start and
    -- the latest time, which is the best for the window, exclusions and strict_increase alike; it is
    -- also the one ClickHouse's scan holds when it meets this event. Across optional stages the latest end of
    -- any step this one may follow is still the best: an end's deadline never falls as its time rises.
    select
        level_events.funnel_key,
        level_events.occurred_us,
        previous_ends.occurred_us as prev_us,
        coalesce(level_events.occurred_us + previous_ends.step_window_us, previous_ends.deadline_us)
            as deadline_us,
        previous_ends.step_window_us,
        previous_ends.strict_increase,
        level_events.reach_step
    from level_events
    asof inner join previous_ends
        on previous_ends.funnel_key = level_events.funnel_key
        -- an asof join's inequality is written probe side first, as DuckDB documents it
        and level_events.occurred_us >= previous_ends.occurred_us  -- noqa: ST09
    where $level > 1
        and level_events.occurred_us <= previous_ends.deadline_us
        and (not previous_ends.strict_increase or previous_ends.occurred_us < level_events.occurred_us)
),

unexcluded_next_steps as (
    select next_steps.*
    from next_steps
    where
        not exists (
            select 1
            from exclusion_events
            where exclusion_events.funnel_key = next_steps.funnel_key
                and exclusion_events.occurred_us > next_steps.prev_us
                and exclusion_events.occurred_us < next_steps.occurred_us
        )
),

final as (
    select
        first_steps.funnel_key,
        cast($level as integer) as step,
        first_steps.occurred_us,
        first_steps.prev_us,
        first_steps.deadline_us,
        first_steps.step_window_us,
        first_steps.strict_increase,
        first_steps.reach_step
    from first_steps
    union all
    select
        unexcluded_next_steps.funnel_key,
        cast($level as integer) as step,
        unexcluded_next_steps.occurred_us,
        unexcluded_next_steps.prev_us,
        unexcluded_next_steps.deadline_us,
        unexcluded_next_steps.step_window_us,
        unexcluded_next_steps.strict_increase,
        unexcluded_next_steps.reach_step
    from unexcluded_next_steps
)

select * from final
