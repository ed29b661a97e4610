-- model: stage_channel_matrix
-- grain: stage_model, stage_index, channel
-- materialized: table
-- partition: none
-- publish: true
-- One row per (stage model, stage, channel): where each stage actually happens,
-- against the channels designed for it.
with

event_stages as (
    select * from int_event_stages
),

journey_events as (
    select je.event_id, je.journey_id, je.customer_key, je.channel, je.sentiment, je.revenue
    from int_journey_events as je
),

stages as (
    select sd.stage_model, sd.stage_index, sd.stage_name, sd.designed_channels from stage_definitions as sd
),

cells as (
    select
        es.stage_model,
        es.stage_index,
        je.channel,
        count(*) as events_in_cell,
        count(distinct je.journey_id) as journeys_in_cell,
        count(distinct je.customer_key) as customers_in_cell,
        -- Decimal sums are exact, so the mean does not depend on how threads split the rows.
        avg(je.sentiment::decimal(18, 6))::double as mean_sentiment,
        sum(je.revenue) as revenue
    from event_stages as es
    inner join journey_events as je on je.event_id = es.event_id
    group by all
),

final as (
    select
        c.stage_model,
        c.stage_index,
        s.stage_name,
        c.channel,
        c.events_in_cell,
        c.events_in_cell / sum(c.events_in_cell) over (
            partition by c.stage_model, c.stage_index
        ) as share_of_stage_events,
        c.journeys_in_cell,
        c.customers_in_cell,
        list_contains(s.designed_channels, c.channel) as is_designed_channel,
        c.mean_sentiment,
        c.revenue
    from cells as c
    inner join stages as s on s.stage_model = c.stage_model and s.stage_index = c.stage_index
)

select * from final
