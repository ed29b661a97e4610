-- model: journey_events
-- grain: journey_id, event_seq
-- materialized: table
-- partition: customer
-- publish: true
-- params: primary_model
-- One row per resolved event: its customer, journey, position, session and primary-model stage.
with

journey_events as (
    select * from int_journey_events
),

primary_stages as (
    select es.event_id, es.stage_index, sd.stage_name
    from int_event_stages as es
    inner join stage_definitions as sd on sd.stage_model = es.stage_model and sd.stage_index = es.stage_index
    where es.stage_model = $primary_model
),

final as (
    select
        je.event_id,
        je.customer_key,
        je.journey_id,
        je.event_seq,
        je.session_id,
        je.occurred_at,
        je.event_date,
        je.source,
        je.channel,
        je.event_type,
        je.touchpoint,
        je.sentiment,
        je.revenue,
        ps.stage_index,
        ps.stage_name,
        je.bucket
    from journey_events as je
    left join primary_stages as ps on ps.event_id = je.event_id
)

select * from final
