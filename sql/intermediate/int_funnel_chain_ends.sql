-- grain: one row per valid level-$level chain end: a stage-$level event that completes a chain of
--   stages 1..$level (in (occurred_at, stage_index) order) within the model's window, per
--   (stage_model, journey_id); start_at is the latest possible start of such a chain.
-- reads: stage_events (stage $level), int_funnel_specs (models with ordered/strict modes),
--   int_funnel_chain_ends (level $level - 1, written by the previous pass).
with

funnel_specs as (
    select
        int_funnel_specs.stage_model,
        int_funnel_specs.mode,
        int_funnel_specs.n_stages,
        int_funnel_specs.window_us
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

previous_chain_ends as (
    select
        int_funnel_chain_ends.stage_model,
        int_funnel_chain_ends.journey_id,
        int_funnel_chain_ends.occurred_at,
        int_funnel_chain_ends.start_at
    from int_funnel_chain_ends
    where int_funnel_chain_ends.stage_index = $level - 1
),

chain_models as (
    -- ordered and strict share the chains; any_order needs none
    select distinct
        funnel_specs.stage_model,
        funnel_specs.window_us
    from funnel_specs
    where funnel_specs.mode in ('ordered', 'strict')
        and funnel_specs.n_stages >= $level
),

level_events as (
    select
        stage_events.stage_model,
        stage_events.journey_id,
        stage_events.occurred_at,
        chain_models.window_us
    from stage_events
    inner join chain_models
        on chain_models.stage_model = stage_events.stage_model
    where stage_events.stage_index = $level
),

level_one_starts as (
    -- a stage-1 event starts (and ends) a level-1 chain by itself
    select
        level_events.stage_model,
        level_events.journey_id,
        level_events.occurred_at,
        level_events.window_us,
        level_events.occurred_at as start_at
    from level_events
    where $level = 1
),

later_level_starts as (
    -- Valid chain starts are non-decreasing in event order, so the latest previous end at or
    -- before this event carries the latest (best) start. Ties on occurred_at go to the lower
    -- stage, so a previous-level end at the same instant precedes this event: hence >=.
    select
        level_events.stage_model,
        level_events.journey_id,
        level_events.occurred_at,
        level_events.window_us,
        previous_chain_ends.start_at
    from level_events
    asof inner join previous_chain_ends
        on previous_chain_ends.stage_model = level_events.stage_model
        and previous_chain_ends.journey_id = level_events.journey_id
        and level_events.occurred_at >= previous_chain_ends.occurred_at
    where $level > 1
),

best_starts as (
    select * from level_one_starts
    union all
    select * from later_level_starts
),

valid_chain_ends as (
    select
        best_starts.stage_model,
        best_starts.journey_id,
        best_starts.occurred_at,
        best_starts.start_at
    from best_starts
    where (
            best_starts.window_us is null
            or epoch_us(best_starts.occurred_at) - epoch_us(best_starts.start_at) <= best_starts.window_us
        )
),

final as (
    select
        valid_chain_ends.stage_model,
        valid_chain_ends.journey_id,
        cast($level as integer) as stage_index,
        valid_chain_ends.occurred_at,
        valid_chain_ends.start_at
    from valid_chain_ends
)

select * from final
