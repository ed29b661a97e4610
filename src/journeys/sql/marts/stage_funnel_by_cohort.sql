-- model: stage_funnel_by_cohort
-- grain: stage_model, mode, cohort, stage_index
-- materialized: table
-- partition: none
-- publish: true
-- One row per (stage model, mode, cohort, stage): the funnel of the journeys that entered in one period
-- (cohort_period). Each journey is in exactly one cohort, so summing a count over the cohorts of one
-- stage model, mode and stage gives that count of stage_funnel. The rows of stage_conversion with a
-- cohort other than 'all' and breakdown 'none', counts as BIGINT.
with

conversion as (
    select sc.* from stage_conversion as sc
    where sc.cohort != 'all' and sc.breakdown = 'none'
),

final as (
    select
        conversion.stage_model,
        conversion.mode,
        conversion.cohort_period,
        conversion.cohort,
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
