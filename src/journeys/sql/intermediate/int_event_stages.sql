-- model: int_event_stages
-- grain: stage_model, event_id
-- materialized: table
-- partition: customer
-- publish: false
-- params: attribute_paths
-- One row per (stage model, event) for events that match a stage of that model.
-- Matching runs on distinct event signatures, not on every event: there are few signatures. Only rules
-- with an `occurrence` need the events themselves (a count per journey and rule), so only the events
-- whose signature meets such a rule are counted.
with

journey_events as (
    select
        je.event_id,
        je.journey_id,
        je.journey_key,
        je.event_seq,
        je.occurred_at,
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
        c.n_conditions,
        c.occurrence,
        c.occurrence_and_later
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
        ch.event_type,
        ch.channel,
        ch.touchpoint,
        ch.attribute_values,
        ch.stage_model,
        ch.stage_index,
        ch.rule_id,
        max(ch.occurrence) as occurrence,
        bool_or(ch.occurrence_and_later) as occurrence_and_later
    from condition_hits as ch
    group by
        ch.event_type, ch.channel, ch.touchpoint, ch.attribute_values, ch.stage_model, ch.stage_index, ch.rule_id
    having count(*) = max(ch.n_conditions)
),

-- First matching stage wins. plain_stage_index is the first stage matched by a rule without occurrence;
-- an occurrence rule's stage is settled per event below.
signature_stages as (
    select
        rh.event_type,
        rh.channel,
        rh.touchpoint,
        rh.attribute_values,
        rh.stage_model,
        min(rh.stage_index) filter (where rh.occurrence is null) as plain_stage_index
    from rule_hits as rh
    group by rh.event_type, rh.channel, rh.touchpoint, rh.attribute_values, rh.stage_model
),

-- Every event that meets an occurrence rule's conditions counts as an occurrence, whatever stage it takes.
occurrence_rule_events as (
    select
        je.event_id,
        rh.stage_model,
        rh.stage_index,
        rh.occurrence,
        rh.occurrence_and_later,
        row_number() over (
            partition by je.journey_id, rh.stage_model, rh.stage_index, rh.rule_id
            order by je.occurred_at, je.event_id
        ) as occurrence_no
    from journey_events as je
    inner join rule_hits as rh
        on je.event_type is not distinct from rh.event_type
        and je.channel is not distinct from rh.channel
        and je.touchpoint is not distinct from rh.touchpoint
        and je.attribute_values is not distinct from rh.attribute_values
    where rh.occurrence is not null
),

occurrence_stages as (
    select
        oe.event_id,
        oe.stage_model,
        min(oe.stage_index) as stage_index
    from occurrence_rule_events as oe
    where
        oe.occurrence_no = oe.occurrence
        or (oe.occurrence_and_later and oe.occurrence_no > oe.occurrence)
    group by oe.event_id, oe.stage_model
),

event_signature_stages as (
    select
        je.event_id,
        je.journey_key,
        je.event_seq,
        ss.stage_model,
        ss.plain_stage_index
    from journey_events as je
    inner join signature_stages as ss
        on je.event_type is not distinct from ss.event_type
        and je.channel is not distinct from ss.channel
        and je.touchpoint is not distinct from ss.touchpoint
        and je.attribute_values is not distinct from ss.attribute_values
),

final as (
    select
        es.event_id,
        -- the event's place in its journey: later models join events on these integers, not on event_id
        es.journey_key,
        es.event_seq,
        es.stage_model,
        -- least() skips nulls: the earlier of the plain stage and the occurrence stage, whichever exist.
        least(es.plain_stage_index, os.stage_index) as stage_index
    from event_signature_stages as es
    left join occurrence_stages as os
        on os.event_id = es.event_id
        and os.stage_model = es.stage_model
    where coalesce(es.plain_stage_index, os.stage_index) is not null
)

select * from final
