-- model: stage_funnel
-- grain: stage_model, mode, stage_index
-- materialized: table
-- partition: none
-- publish: true
-- One row per (stage model, mode, stage): the headline funnel over every journey, all cohorts and no
-- breakdown. Each journey counts once per stage, so sums over it are sums over journeys: filter on one
-- stage model and mode, and sum(journeys_entered) where stage_index = 1 is the journeys that entered
-- stage 1. The rows of stage_conversion with cohort 'all' and breakdown 'none', counts as BIGINT.
with

conversion as (
    select sc.* from stage_conversion as sc
    where sc.cohort = 'all' and sc.breakdown = 'none'
),

final as (
    select
        conversion.stage_model,
        conversion.mode,
        conversion.stage_index,
        conversion.stage_name,
        conversion.journeys_entered::bigint as journeys_entered,
        conversion.journeys_converted::bigint as journeys_converted,
        conversion.conversion_rate,
        conversion.conversion_from_start,
        conversion.journeys_dropped::bigint as journeys_dropped,
        conversion.journeys_in_progress::bigint as journeys_in_progress,
        conversion.journeys_overdue::bigint as journeys_overdue,
        conversion.mean_time_to_next_s,
        conversion.median_time_to_next_s,
        conversion.p90_time_to_next_s,
        conversion.time_budget_s,
        conversion.journeys_within_budget::bigint as journeys_within_budget,
        conversion.share_within_budget
    from conversion
)

select * from final
