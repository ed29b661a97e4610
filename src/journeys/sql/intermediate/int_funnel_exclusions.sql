-- model: int_funnel_exclusions
-- grain: stage_model, after_stage, event_type
-- materialized: temp
-- partition: none
-- publish: false
-- params: ex_after_stages, ex_event_types, ex_models
-- procedure: funnel
-- One row per (stage_model, after_stage, event_type): an event of that type strictly between the
-- chain's stage after_stage and after_stage + 1 step invalidates that step.
with

exclusion_rows as (
    select
        unnest(cast($ex_models as varchar[])) as stage_model,
        unnest(cast($ex_after_stages as integer[])) as after_stage,
        unnest(cast($ex_event_types as varchar[])) as event_type
),

final as (
    select distinct
        exclusion_rows.stage_model,
        exclusion_rows.after_stage,
        exclusion_rows.event_type
    from exclusion_rows
)

select * from final
