-- model: stage_survival
-- grain: stage_model, mode, stage_index, t_days
-- materialized: table
-- partition: none
-- publish: true
-- params: as_of
-- One row per (stage model, mode, stage, day t) at which a journey that reached the stage either
-- reached the next stage or was last observed: the Kaplan-Meier estimate of reaching the next stage
-- within t days, honest about journeys that are still open (right-censored at as_of).
-- Time is in whole days, rounded up (a conversion after 2 hours happened "within 1 day"); at a tie,
-- conversions are counted before censorings, the usual Kaplan-Meier convention.
with

reached as (
    select * from int_stage_transitions
),

stages as (
    select sd.stage_model, sd.stage_index, sd.stage_name, sd.n_stages from stage_definitions as sd
),

-- Every journey that reached stage i (< last stage) is followed from reached_at(i).
subjects as (
    select
        r1.stage_model,
        r1.mode,
        r1.journey_id,
        r1.stage_index,
        r1.next_reached_at is not null as converted,
        ceil(
            (epoch(coalesce(r1.next_reached_at, $as_of::timestamp)) - epoch(r1.reached_at)) / 86400.0
        )::integer as t_days
    from reached as r1
    inner join stages as s on s.stage_model = r1.stage_model and s.stage_index = r1.stage_index
    where r1.stage_index < s.n_stages
),

per_time as (
    select
        su.stage_model,
        su.mode,
        su.stage_index,
        su.t_days,
        count(*) filter (where su.converted) as journeys_converted,
        count(*) filter (where not su.converted) as journeys_censored
    from subjects as su
    group by all
),

at_risk as (
    select
        pt.*,
        sum(pt.journeys_converted + pt.journeys_censored) over (
            partition by pt.stage_model, pt.mode, pt.stage_index
            order by pt.t_days desc rows between unbounded preceding and current row
        ) as journeys_at_risk
    from per_time as pt
),

survival as (
    select
        ar.*,
        product(1.0 - ar.journeys_converted / ar.journeys_at_risk) over (
            partition by ar.stage_model, ar.mode, ar.stage_index
            order by ar.t_days rows between unbounded preceding and current row
        ) as survival
    from at_risk as ar
),

final as (
    select
        sv.stage_model,
        sv.mode,
        sv.stage_index,
        s.stage_name,
        sv.t_days,
        -- a windowed sum of counts is HUGEINT, which JavaScript clients and Parquet readers mishandle
        sv.journeys_at_risk::bigint as journeys_at_risk,
        sv.journeys_converted,
        sv.journeys_censored,
        sv.survival,
        1.0 - sv.survival as p_reached_next
    from survival as sv
    inner join stages as s on s.stage_model = sv.stage_model and s.stage_index = sv.stage_index
)

select * from final
