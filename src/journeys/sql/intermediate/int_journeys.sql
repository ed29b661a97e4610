-- model: int_journeys
-- grain: journey_id
-- materialized: table
-- partition: customer
-- publish: false
-- params: breakdown_path
-- One row per journey: its span, size, first and last channel/touchpoint, last sentiment.
with

journey_events as (
    select * from int_journey_events
),

journey_facts as (
    select
        je.journey_id,
        any_value(je.customer_key) as customer_key,
        any_value(je.bucket) as bucket,
        min(je.occurred_at) as started_at,
        max(je.occurred_at) as ended_at,
        count(*) as n_events,
        count(distinct je.session_id) as n_sessions,
        count(distinct je.channel) as n_channels,
        arg_min(je.channel, je.event_seq) as first_channel,
        arg_max(je.channel, je.event_seq) as last_channel,
        arg_min(je.touchpoint, je.event_seq) as first_touchpoint,
        arg_max(je.touchpoint, je.event_seq) as last_touchpoint,
        arg_max(je.event_id, je.event_seq) as last_event_id,
        arg_max_null(je.sentiment, je.event_seq) as last_sentiment,
        arg_max(je.sentiment, je.event_seq) filter (where je.sentiment is not null) as last_known_sentiment,
        arg_min_null(json_extract_string(je.attributes, $breakdown_path), je.event_seq) as breakdown_attribute,
        -- A sum of DECIMAL(18,2) is DECIMAL(38,2), which BI tools read as text or float: money stays (18,2).
        sum(je.revenue)::decimal(18, 2) as revenue
    from journey_events as je
    group by je.journey_id
),

final as (
    select * from journey_facts
)

select * from final
