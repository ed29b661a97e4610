-- model: journey_stages
-- grain: stage_model, mode, journey_id
-- materialized: table
-- partition: customer
-- publish: true
-- params: as_of, dropout_timeout_us
-- One row per (stage model, funnel mode, journey): how far the journey got and whether it is over.
-- entry_stage is 1 except in open mode (the journey's lowest stage); stages_over_budget lists the stages
-- i whose time from reaching i to reaching the next stage it reached exceeded stage i's time_budget;
-- stages_skipped the optional stages between entry_stage and furthest_stage it did not reach; conformance_score is the
-- share of the journey's staged events that follow the designed journey (int_map_events.follows_design);
-- overdue_stage flags a journey in progress that has spent longer at its furthest stage than its time_budget.
with

-- Everything but the status is int_journey_stages' (built per customer); the status depends on as_of, so
-- every run computes it anew for every journey, in one pass over that table.
journey_modes as (
    select * from int_journey_stages
),

-- A stage's budget bounds the time to the next stage; the last stage has none.
stage_budgets as (
    select sd.stage_model, sd.stage_index, sd.time_budget_us
    from stage_definitions as sd
    where sd.time_budget_us is not null and sd.stage_index < sd.n_stages
),

status as (
    select
        jm.*,
        (
            jm.furthest_stage = jm.n_stages
            or epoch_us($as_of::timestamp) - epoch_us(jm.ended_at) > $dropout_timeout_us
        ) as is_closed,
        epoch_us($as_of::timestamp) - epoch_us(jm.furthest_reached_at) > sb.time_budget_us as is_past_budget
    from journey_modes as jm
    left join stage_budgets as sb on sb.stage_model = jm.stage_model and sb.stage_index = jm.furthest_stage
),

final as (
    select
        s.stage_model,
        s.stage_model_version,
        s.mode,
        s.journey_id,
        s.customer_key,
        s.bucket,
        s.n_stages,
        s.entry_stage,
        s.furthest_stage,
        s.furthest_stage_name,
        s.entered_at,
        s.furthest_reached_at,
        s.is_closed,
        s.is_converted,
        s.stages_over_budget,
        s.stages_skipped,
        s.stages_skipped_text,
        s.stages_over_budget_text,
        s.conformance_score,
        case when s.is_closed and not s.is_converted and s.furthest_stage >= 1 then s.furthest_stage end
            as dropout_stage,
        -- still in progress, and already longer at its furthest stage than that stage's budget allows
        case when not s.is_closed and s.is_past_budget then s.furthest_stage end as overdue_stage,
        s.started_at,
        s.ended_at,
        s.first_channel,
        s.last_channel,
        s.first_touchpoint,
        s.last_touchpoint,
        s.last_event_id,
        s.last_sentiment,
        s.last_known_sentiment,
        s.breakdown_attribute
    from status as s
)

select * from final
