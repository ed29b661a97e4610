-- model: int_stage_transitions
-- grain: stage_model, mode, journey_id, stage_index
-- materialized: table
-- partition: customer
-- publish: false
-- One row per (stage model, mode, journey, stage) reached, with when the journey reached the next stage
-- (next_reached_at, null while it has not): the "reached i, then i + 1" pair that time to next, time
-- budgets and survival all start from.
with

reached as (
    select
        sr.stage_model,
        sr.mode,
        sr.journey_id,
        sr.stage_index,
        sr.reached_at
    from int_journey_stage_reached as sr
),

final as (
    select
        r1.stage_model,
        r1.mode,
        r1.journey_id,
        r1.stage_index,
        r1.reached_at,
        r2.reached_at as next_reached_at
    from reached as r1
    left join reached as r2
        on r2.stage_model = r1.stage_model
        and r2.mode = r1.mode
        and r2.journey_id = r1.journey_id
        and r2.stage_index = r1.stage_index + 1
)

select * from final
