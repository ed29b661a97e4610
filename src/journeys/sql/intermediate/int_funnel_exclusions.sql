-- model: int_funnel_exclusions
-- grain: stage_model, after_stage, exclusion_no
-- materialized: temp
-- partition: none
-- publish: false
-- params: ex_after_stages, ex_channels, ex_event_types, ex_models, ex_nos, ex_touchpoints
-- procedure: funnel
-- One row per (stage_model, after_stage, exclusion): an event matching every condition of the exclusion
-- (event_types, channels, touchpoints; null = any value) strictly between the chain's stage after_stage and
-- after_stage + 1 step invalidates that step.
with

exclusion_rows as (
    select
        unnest(cast($ex_models as varchar[])) as stage_model,
        unnest(cast($ex_after_stages as integer[])) as after_stage,
        unnest(cast($ex_nos as integer[])) as exclusion_no,
        unnest(cast($ex_event_types as varchar[][])) as event_types,
        unnest(cast($ex_channels as varchar[][])) as channels,
        unnest(cast($ex_touchpoints as varchar[][])) as touchpoints
),

final as (
    select
        exclusion_rows.stage_model,
        exclusion_rows.after_stage,
        exclusion_rows.exclusion_no,
        exclusion_rows.event_types,
        exclusion_rows.channels,
        exclusion_rows.touchpoints
    from exclusion_rows
)

select * from final
