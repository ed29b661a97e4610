-- model: stage_funnel_by_breakdown
-- grain: stage_model, mode, breakdown, breakdown_value, stage_index
-- materialized: table
-- partition: none
-- publish: true
-- One row per (stage model, mode, breakdown, breakdown value, stage) over every cohort. Each breakdown
-- splits all journeys once, so filter on one breakdown before summing: a count summed over the values
-- of one breakdown gives that count of stage_funnel; summed over every breakdown it counts each journey
-- once per breakdown. The rows of stage_conversion with cohort 'all' and a breakdown other than 'none',
-- counts as BIGINT.
with

conversion as (
    select sc.* from stage_conversion as sc
    where sc.cohort = 'all' and sc.breakdown != 'none'
),

final as (
    select
        conversion.stage_model,
        conversion.mode,
        conversion.breakdown,
        conversion.breakdown_value,
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
