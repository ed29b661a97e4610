-- model: int_stage_transitions
-- grain: stage_model, mode, journey_id, stage_index
-- materialized: table
-- partition: customer
-- publish: false
-- One row per (stage model, mode, journey, stage) reached, with when the journey reached the next stage
-- (next_reached_at, null while it has not): the "reached i, then i + 1" pair that time to next, time
-- budgets and survival all start from. Across an optional stage the next stage is the first later stage the
-- journey reached (i + 2 when it skipped i + 1); a journey that took an optional stage only after it had
-- reached a later one was past it at once (next_reached_at = reached_at).
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

later_reached as (
    select
        r1.stage_model,
        r1.mode,
        r1.journey_id,
        r1.stage_index,
        r1.reached_at,
        -- without optional stages reached_at rises with the stage, so this is reached_at of stage i + 1
        min(r1.reached_at) over (
            partition by r1.stage_model, r1.mode, r1.journey_id
            order by r1.stage_index
            rows between 1 following and unbounded following
        ) as first_later_at
    from reached as r1
),

final as (
    select
        lr.stage_model,
        lr.mode,
        lr.journey_id,
        lr.stage_index,
        lr.reached_at,
        case when lr.first_later_at is not null then greatest(lr.first_later_at, lr.reached_at) end
            as next_reached_at
    from later_reached as lr
)

select * from final
