-- Grain: one row per (stage model, event with a stage): the input of the funnel passes.
-- Reads: int_journey_events, int_event_stages.
with

journey_events as (
    select je.event_id, je.journey_id, je.occurred_at
    from int_journey_events as je
),

event_stages as (
    select es.event_id, es.stage_model, es.stage_index
    from int_event_stages as es
),

final as (
    select
        es.stage_model,
        je.journey_id,
        je.occurred_at,
        je.event_id,
        es.stage_index
    from event_stages as es
    inner join journey_events as je on je.event_id = es.event_id
)

select * from final
