-- model: int_funnel_any_order_reached
-- grain: stage_model, journey_id, stage_index
-- materialized: temp
-- partition: customer
-- publish: false
-- procedure: funnel
-- One row per (stage model, journey, stage) reached in `any_order` mode: level L is reached once any
-- event of a stage >= L has occurred (no order, no window); an optional stage only by its own events, at its
-- first one.
with

any_order_models as (
    select
        int_funnel_specs.stage_model,
        int_funnel_specs.n_stages,
        int_funnel_specs.optional_stages
    from int_funnel_specs
    where int_funnel_specs.mode = 'any_order'
),

stage_first_seen as (
    select
        int_stage_events.stage_model,
        int_stage_events.journey_id,
        int_stage_events.stage_index,
        any_value(any_order_models.optional_stages) as optional_stages,
        min(int_stage_events.occurred_at) as first_at
    from int_stage_events
    inner join any_order_models
        on any_order_models.stage_model = int_stage_events.stage_model
    where int_stage_events.stage_index between 1 and any_order_models.n_stages
    group by int_stage_events.stage_model, int_stage_events.journey_id, int_stage_events.stage_index
),

seen_stage_spans as (
    -- each seen stage covers the levels down to the next lower seen stage
    select
        stage_first_seen.stage_model,
        stage_first_seen.journey_id,
        stage_first_seen.stage_index,
        stage_first_seen.optional_stages,
        stage_first_seen.first_at,
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

covered_stages as (
    select
        seen_stage_spans.stage_model,
        seen_stage_spans.journey_id,
        seen_stage_spans.stage_index as seen_stage,
        seen_stage_spans.optional_stages,
        seen_stage_spans.first_at,
        seen_stage_spans.reached_at,
        cast(
            unnest(range(seen_stage_spans.lower_seen_stage + 1, seen_stage_spans.stage_index + 1)) as integer
        ) as stage_index
    from seen_stage_spans
),

final as (
    select
        covered_stages.stage_model,
        covered_stages.journey_id,
        covered_stages.stage_index,
        case
            when list_contains(covered_stages.optional_stages, covered_stages.stage_index) then covered_stages.first_at
            else covered_stages.reached_at
        end as reached_at
    from covered_stages
    -- an optional stage below the seen one was skipped, not reached
    where
        covered_stages.stage_index = covered_stages.seen_stage
        or not list_contains(covered_stages.optional_stages, covered_stages.stage_index)
)

select * from final
