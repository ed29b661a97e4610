-- model: int_stage_events
-- grain: stage_model, event_id
-- materialized: table
-- partition: customer
-- publish: false
-- params: hold_models, hold_paths
-- One row per (stage model, event with a stage): the input of the funnel passes.
-- journey_key is int_journey_events' integer twin of journey_id (the funnel passes join on it);
-- hold_value is the event's hold_constant attribute for its model (null when the model holds none).
with

journey_events as (
    select je.event_id, je.journey_id, je.journey_key, je.occurred_at, je.attributes
    from int_journey_events as je
),

event_stages as (
    select es.event_id, es.stage_model, es.stage_index
    from int_event_stages as es
),

hold_attributes as (
    select
        unnest(cast($hold_models as varchar[])) as stage_model,
        unnest(cast($hold_paths as varchar[])) as hold_path
),

final as (
    select
        es.stage_model,
        je.journey_id,
        je.journey_key,
        je.occurred_at,
        je.event_id,
        es.stage_index,
        case when ha.hold_path is not null then json_extract_string(je.attributes, ha.hold_path) end
            as hold_value
    from event_stages as es
    inner join journey_events as je on je.event_id = es.event_id
    left join hold_attributes as ha on ha.stage_model = es.stage_model
)

select * from final
