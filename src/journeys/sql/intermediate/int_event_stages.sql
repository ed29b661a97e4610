-- model: int_event_stages
-- grain: stage_model, event_id
-- materialized: table
-- partition: customer
-- publish: false
-- params: attribute_paths
-- One row per (stage model, event) for events that match a stage of that model.
-- Matching runs on distinct event signatures, not on every event: there are few signatures.
with

journey_events as (
    select
        je.event_id,
        je.event_type,
        je.channel,
        je.touchpoint,
        json_extract_string(je.attributes, $attribute_paths) as attribute_values
    from int_journey_events as je
),

conditions as (
    select * from stage_rule_conditions
),

signatures as (
    select distinct je.event_type, je.channel, je.touchpoint, je.attribute_values
    from journey_events as je
),

condition_hits as (
    select
        s.event_type,
        s.channel,
        s.touchpoint,
        s.attribute_values,
        c.stage_model,
        c.stage_index,
        c.rule_id,
        c.n_conditions
    from signatures as s
    inner join conditions as c
        on case c.field
            when 'event_type' then list_contains(c.accepted, s.event_type)
            when 'channel' then list_contains(c.accepted, s.channel)
            when 'touchpoint' then list_contains(c.accepted, s.touchpoint)
            when 'attribute' then list_contains(c.accepted, s.attribute_values[c.attribute_pos])
        end
),

rule_hits as (
    select
        ch.event_type, ch.channel, ch.touchpoint, ch.attribute_values, ch.stage_model, ch.stage_index
    from condition_hits as ch
    group by
        ch.event_type, ch.channel, ch.touchpoint, ch.attribute_values, ch.stage_model, ch.stage_index, ch.rule_id
    having count(*) = max(ch.n_conditions)
),

-- First matching stage wins.
signature_stages as (
    select
        rh.event_type, rh.channel, rh.touchpoint, rh.attribute_values, rh.stage_model,
        min(rh.stage_index) as stage_index
    from rule_hits as rh
    group by rh.event_type, rh.channel, rh.touchpoint, rh.attribute_values, rh.stage_model
),

final as (
    select
        je.event_id,
        ss.stage_model,
        ss.stage_index
    from journey_events as je
    inner join signature_stages as ss
        on je.event_type is not distinct from ss.event_type
        and je.channel is not distinct from ss.channel
        and je.touchpoint is not distinct from ss.touchpoint
        and je.attribute_values is not distinct from ss.attribute_values
)

select * from final
