-- grain: one row per (stage_model, mode, journey_id, stage_index) for every level 1..furthest_stage
--   the journey reached in that mode; reached_at is when the journey first reached that level.
-- reads: stage_events, int_funnel_specs, int_funnel_chain_ends (all levels, from the passes).
with

funnel_specs as (
    select
        int_funnel_specs.stage_model,
        int_funnel_specs.mode,
        int_funnel_specs.n_stages
    from int_funnel_specs
),

stage_events as (
    select
        stage_events.stage_model,
        stage_events.journey_id,
        stage_events.occurred_at,
        stage_events.stage_index
    from stage_events
),

chain_ends as (
    select
        int_funnel_chain_ends.stage_model,
        int_funnel_chain_ends.journey_id,
        int_funnel_chain_ends.stage_index,
        int_funnel_chain_ends.occurred_at
    from int_funnel_chain_ends
),

-- ordered: level L is first reached at the earliest valid level-L chain end
ordered_reached as (
    select
        chain_ends.stage_model,
        chain_ends.journey_id,
        chain_ends.stage_index,
        min(chain_ends.occurred_at) as reached_at
    from chain_ends
    group by chain_ends.stage_model, chain_ends.journey_id, chain_ends.stage_index
),

strict_models as (
    select
        funnel_specs.stage_model,
        funnel_specs.n_stages
    from funnel_specs
    where funnel_specs.mode = 'strict'
),

first_stage_one as (
    select
        ordered_reached.stage_model,
        ordered_reached.journey_id,
        ordered_reached.reached_at as first_at
    from ordered_reached
    inner join strict_models
        on strict_models.stage_model = ordered_reached.stage_model
    where ordered_reached.stage_index = 1
),

-- strict_order stops at the first stage event, after the first stage-1 event, whose previous
-- stage has not been reached yet; ties order by stage, so "before" compares (occurred_at, stage)
strict_break_candidates as (
    select
        stage_events.stage_model,
        stage_events.journey_id,
        stage_events.occurred_at,
        stage_events.stage_index
    from stage_events
    inner join strict_models
        on strict_models.stage_model = stage_events.stage_model
    inner join first_stage_one
        on first_stage_one.stage_model = stage_events.stage_model
        and first_stage_one.journey_id = stage_events.journey_id
    left join ordered_reached as previous_level
        on previous_level.stage_model = stage_events.stage_model
        and previous_level.journey_id = stage_events.journey_id
        and previous_level.stage_index = stage_events.stage_index - 1
    where stage_events.stage_index between 2 and strict_models.n_stages
        and stage_events.occurred_at >= first_stage_one.first_at
        and (previous_level.reached_at is null or stage_events.occurred_at < previous_level.reached_at)
),

strict_breaks as (
    select
        strict_break_candidates.stage_model,
        strict_break_candidates.journey_id,
        min(struct_pack(
            break_at := strict_break_candidates.occurred_at,
            break_stage := strict_break_candidates.stage_index
        )) as break_point
    from strict_break_candidates
    group by strict_break_candidates.stage_model, strict_break_candidates.journey_id
),

strict_reached as (
    select
        ordered_reached.stage_model,
        ordered_reached.journey_id,
        ordered_reached.stage_index,
        ordered_reached.reached_at
    from ordered_reached
    inner join strict_models
        on strict_models.stage_model = ordered_reached.stage_model
    left join strict_breaks
        on strict_breaks.stage_model = ordered_reached.stage_model
        and strict_breaks.journey_id = ordered_reached.journey_id
    where strict_breaks.break_point is null
        or ordered_reached.reached_at < strict_breaks.break_point.break_at
        or (
            ordered_reached.reached_at = strict_breaks.break_point.break_at
            and ordered_reached.stage_index < strict_breaks.break_point.break_stage
        )
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

ordered_rows as (
    select
        ordered_reached.stage_model,
        'ordered' as mode,
        ordered_reached.journey_id,
        ordered_reached.stage_index,
        ordered_reached.reached_at
    from ordered_reached
    where ordered_reached.stage_model in (
        select funnel_specs.stage_model from funnel_specs where funnel_specs.mode = 'ordered'
    )
),

final as (
    select * from ordered_rows
    union all
    select
        strict_reached.stage_model,
        'strict' as mode,
        strict_reached.journey_id,
        strict_reached.stage_index,
        strict_reached.reached_at
    from strict_reached
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
