-- grain: one row per (stage_model, mode, journey_id, stage_index) for every stage the journey reached in
--   that mode (1..furthest_stage; entry_stage..furthest_stage in open mode); reached_at is when the
--   journey first reached that stage.
-- reads: stage_events (any_order, journey ids), int_funnel_specs, int_funnel_events, int_funnel_chain_ends
--   (every step, from the passes).
-- params: $has_open (some model computes the open mode).
with

funnel_specs as not materialized (
    select
        int_funnel_specs.stage_model,
        int_funnel_specs.mode,
        int_funnel_specs.model_no,
        int_funnel_specs.family_no,
        int_funnel_specs.n_stages,
        int_funnel_specs.strict_dedup
    from int_funnel_specs
),

stage_events as not materialized (
    select
        stage_events.stage_model,
        stage_events.journey_id,
        stage_events.journey_key,
        stage_events.occurred_at,
        stage_events.stage_index
    from stage_events
),

funnel_events as not materialized (
    select
        int_funnel_events.funnel_key,
        int_funnel_events.journey_key,
        int_funnel_events.model_no,
        int_funnel_events.family_no,
        int_funnel_events.step,
        int_funnel_events.stage_index,
        int_funnel_events.occurred_us
    from int_funnel_events
),

chain_ends as not materialized (
    select
        int_funnel_chain_ends.funnel_key,
        int_funnel_chain_ends.step,
        int_funnel_chain_ends.occurred_us
    from int_funnel_chain_ends
),

-- every chain mode: step s of a partition is first reached at its earliest valid step-s chain end
step_reached as (
    select
        chain_ends.funnel_key,
        chain_ends.step,
        min(chain_ends.occurred_us) as reached_us
    from chain_ends
    group by chain_ends.funnel_key, chain_ends.step
),

-- partitions whose key cannot be decoded arithmetically (hold keys) or that start above stage 1 (open)
special_partitions as (
    select
        funnel_events.funnel_key,
        any_value(funnel_events.journey_key) as journey_key,
        any_value(funnel_events.model_no) as model_no,
        any_value(funnel_events.family_no) as family_no,
        min(funnel_events.stage_index - funnel_events.step + 1) as entry_stage
    from funnel_events
    where funnel_events.funnel_key < 0 or funnel_events.family_no = 1
    group by funnel_events.funnel_key
),

reached_partitions as (
    select
        step_reached.funnel_key,
        step_reached.step,
        step_reached.reached_us,
        coalesce(special_partitions.journey_key, step_reached.funnel_key // 2048) as journey_key,
        coalesce(special_partitions.model_no, cast((step_reached.funnel_key % 2048) // 2 as integer))
            as model_no,
        coalesce(special_partitions.family_no, cast(step_reached.funnel_key % 2 as integer)) as family_no,
        coalesce(special_partitions.entry_stage, 1) as entry_stage
    from step_reached
    left join special_partitions
        on special_partitions.funnel_key = step_reached.funnel_key
),

-- strict: the scan stops at the first stage event, after the first step-1 event, whose previous step
-- has not been reached yet; ties order by stage, so "before" compares (occurred_at, step)
strict_models as (
    select distinct funnel_specs.model_no
    from funnel_specs
    where funnel_specs.mode = 'strict'
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
    left join step_reached as previous_step
        on previous_step.funnel_key = funnel_events.funnel_key
        and previous_step.step = funnel_events.step - 1
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

-- strict_deduplication: the scan stops at the first event of a step >= 2 that was already reached
-- (a second event of that step at the very instant it was reached counts); steps reached before it,
-- including at that instant, count
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
    left join strict_breaks
        on funnel_specs.mode = 'strict'
        and strict_breaks.funnel_key = reached_partitions.funnel_key
    left join dedup_breaks
        on dedup_breaks.funnel_key = reached_partitions.funnel_key
    where (
            strict_breaks.break_point is null
            or reached_partitions.reached_us < strict_breaks.break_point.break_us
            or (
                reached_partitions.reached_us = strict_breaks.break_point.break_us
                and reached_partitions.step < strict_breaks.break_point.break_step
            )
        )
        and (
            dedup_breaks.break_point is null
            or reached_partitions.reached_us < dedup_breaks.break_point.break_us
            or (
                reached_partitions.reached_us = dedup_breaks.break_point.break_us
                and reached_partitions.step <= dedup_breaks.break_point.break_step
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

-- any_order: level L is reached once any event of stage >= L has occurred (no order, no window)
any_order_models as (
    select
        funnel_specs.stage_model,
        funnel_specs.n_stages
    from funnel_specs
    where funnel_specs.mode = 'any_order'
),

stage_first_seen as (
    select
        stage_events.stage_model,
        stage_events.journey_id,
        stage_events.stage_index,
        min(stage_events.occurred_at) as first_at
    from stage_events
    inner join any_order_models
        on any_order_models.stage_model = stage_events.stage_model
    where stage_events.stage_index between 1 and any_order_models.n_stages
    group by stage_events.stage_model, stage_events.journey_id, stage_events.stage_index
),

seen_stage_spans as (
    -- each seen stage covers the levels down to the next lower seen stage
    select
        stage_first_seen.stage_model,
        stage_first_seen.journey_id,
        stage_first_seen.stage_index,
        min(stage_first_seen.first_at) over (
            stages_from_top rows between unbounded preceding and current row
        ) as reached_at,
        coalesce(lead(stage_first_seen.stage_index) over stages_from_top, 0) as lower_seen_stage
    from stage_first_seen
    window stages_from_top as (
        partition by stage_first_seen.stage_model, stage_first_seen.journey_id
        order by stage_first_seen.stage_index desc
    )
),

any_order_reached as (
    select
        seen_stage_spans.stage_model,
        seen_stage_spans.journey_id,
        cast(unnest(range(seen_stage_spans.lower_seen_stage + 1, seen_stage_spans.stage_index + 1))
            as integer) as stage_index,
        seen_stage_spans.reached_at
    from seen_stage_spans
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
