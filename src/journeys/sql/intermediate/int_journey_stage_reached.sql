-- model: int_journey_stage_reached
-- grain: stage_model, mode, journey_id, stage_index
-- materialized: table
-- partition: customer
-- publish: false
-- params: has_open
-- procedure: funnel
-- One row per (stage_model, mode, journey_id, stage_index) for every stage the journey reached in
-- that mode (1..furthest_stage; entry_stage..furthest_stage in open mode); reached_at is when the
-- journey first reached that stage.
with

funnel_specs as not materialized (
    select
        int_funnel_specs.stage_model,
        int_funnel_specs.mode,
        int_funnel_specs.model_no,
        int_funnel_specs.family_no
    from int_funnel_specs
),

stage_events as not materialized (
    select
        int_stage_events.journey_id,
        int_stage_events.journey_key,
        int_stage_events.stage_index
    from int_stage_events
),

reached_partitions as not materialized (
    select * from int_funnel_step_reached
),

breaks as not materialized (
    select * from int_funnel_breaks
),

any_order_reached as not materialized (
    select * from int_funnel_any_order_reached
),

-- a step counts only when reached before the partition's scan stopped (strict, strict_deduplication)
mode_steps as not materialized (
    select
        funnel_specs.stage_model,
        funnel_specs.mode,
        reached_partitions.funnel_key < 0 as is_hold,
        reached_partitions.journey_key,
        reached_partitions.step + reached_partitions.entry_stage - 1 as stage_index,
        reached_partitions.reached_us
    from reached_partitions
    inner join funnel_specs
        on funnel_specs.model_no = reached_partitions.model_no
        and funnel_specs.family_no = reached_partitions.family_no
    left join breaks
        on breaks.funnel_key = reached_partitions.funnel_key
    where
        (
            funnel_specs.mode <> 'strict'
            or breaks.strict_break is null
            or reached_partitions.reached_us < breaks.strict_break.break_us
            or (
                reached_partitions.reached_us = breaks.strict_break.break_us
                and reached_partitions.step < breaks.strict_break.break_step
            )
        )
        and (
            breaks.dedup_break is null
            or reached_partitions.reached_us < breaks.dedup_break.break_us
            or (
                reached_partitions.reached_us = breaks.dedup_break.break_us
                and reached_partitions.step <= breaks.dedup_break.break_step
            )
        )
),

-- partitions of one journey (hold_constant) are merged: a stage is reached when any partition reached it
hold_reached as (
    select
        mode_steps.stage_model,
        mode_steps.mode,
        mode_steps.journey_key,
        mode_steps.stage_index,
        min(mode_steps.reached_us) as reached_us
    from mode_steps
    where mode_steps.is_hold
    group by mode_steps.stage_model, mode_steps.mode, mode_steps.journey_key, mode_steps.stage_index
),

chain_reached as (
    select
        mode_steps.stage_model,
        mode_steps.mode,
        mode_steps.journey_key,
        mode_steps.stage_index,
        mode_steps.reached_us
    from mode_steps
    where not mode_steps.is_hold
    union all
    select * from hold_reached
),

journey_ids as (
    -- every journey with a closed chain has a stage-1 event; open chains may start at any stage
    select
        stage_events.journey_key,
        any_value(stage_events.journey_id) as journey_id
    from stage_events
    where stage_events.stage_index = 1 or $has_open
    group by stage_events.journey_key
),

final as (
    select
        chain_reached.stage_model,
        chain_reached.mode,
        journey_ids.journey_id,
        cast(chain_reached.stage_index as integer) as stage_index,
        make_timestamp(chain_reached.reached_us) as reached_at
    from chain_reached
    inner join journey_ids
        on journey_ids.journey_key = chain_reached.journey_key
    union all
    select
        any_order_reached.stage_model,
        'any_order' as mode,
        any_order_reached.journey_id,
        any_order_reached.stage_index,
        any_order_reached.reached_at
    from any_order_reached
)

select * from final
