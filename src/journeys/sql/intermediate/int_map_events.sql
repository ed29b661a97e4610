-- model: int_map_events
-- grain: stage_model, event_id
-- materialized: table
-- partition: customer
-- publish: false
-- One row per (stage model, event with a stage of that model), with what the journey map needs of it:
-- its owner, whether the journey moved on to the next stage after it, whether the journey reached the
-- purchase stage from it, and when the journey's next event came. "After" is (occurred_at, event_id)
-- order inside the journey (event_seq), so events at one instant are ordered too. follows_design: the event's
-- channel is designed for its stage (or the stage designs none) and its stage is the previous staged
-- event's stage or the next one (the journey's first staged event: stage 1).
with

journey_events as (
    select
        je.event_id,
        je.journey_id,
        je.journey_key,
        je.customer_key,
        je.event_seq,
        je.occurred_at,
        je.channel,
        je.touchpoint,
        je.sentiment,
        je.revenue,
        je.next_event_at
    from int_journey_events as je
),

event_stages as (
    select es.stage_model, es.journey_key, es.event_seq, es.stage_index from int_event_stages as es
),

stages as (
    select sd.stage_model, sd.stage_index, sd.n_stages, sd.purchase_stage_index, sd.owner, sd.designed_channels
    from stage_definitions as sd
),

touchpoint_owners as (
    select tpo.stage_model, tpo.touchpoint, tpo.owner from stage_touchpoint_owners as tpo
),

staged as (
    select
        es.stage_model,
        je.event_id,
        je.journey_id,
        je.journey_key,
        je.customer_key,
        je.event_seq,
        je.occurred_at,
        je.next_event_at,
        je.channel,
        je.touchpoint,
        je.sentiment,
        je.revenue,
        es.stage_index,
        s.n_stages,
        s.purchase_stage_index,
        tpo.owner as touchpoint_owner,
        coalesce(tpo.owner, s.owner) as owner,
        len(s.designed_channels) = 0 or list_contains(s.designed_channels, je.channel) as is_designed_channel
    from event_stages as es
    -- (journey_key, event_seq): two integers join faster than the event_id text
    inner join journey_events as je on je.journey_key = es.journey_key and je.event_seq = es.event_seq
    inner join stages as s on s.stage_model = es.stage_model and s.stage_index = es.stage_index
    left join touchpoint_owners as tpo on tpo.stage_model = es.stage_model and tpo.touchpoint = je.touchpoint
),

-- Per (stage model, journey, stage): the last position of an event of that stage.
stage_last as (
    select st.stage_model, st.journey_key, st.stage_index, max(st.event_seq) as last_seq
    from staged as st
    group by st.stage_model, st.journey_key, st.stage_index
),

journey_last as (
    select st.stage_model, st.journey_key, max(st.event_seq) as last_staged_seq
    from staged as st
    group by st.stage_model, st.journey_key
),

final as (
    select
        st.stage_model,
        st.event_id,
        st.journey_id,
        st.journey_key,
        st.customer_key,
        st.event_seq,
        st.occurred_at,
        st.next_event_at,
        st.channel,
        st.touchpoint,
        st.sentiment,
        st.revenue,
        st.stage_index,
        st.n_stages,
        st.touchpoint_owner,
        st.owner,
        -- null at the last stage: there is no next stage to move on to
        case when st.stage_index < st.n_stages then coalesce(nxt.last_seq > st.event_seq, false) end as moved_on,
        -- null when the model names no purchase stage; after the purchase stage any purchase in the journey counts
        case
            when st.purchase_stage_index is null then null
            when st.stage_index > st.purchase_stage_index then pur.last_seq is not null
            else coalesce(pur.last_seq >= st.event_seq, false)
        end as reached_purchase,
        st.event_seq = jl.last_staged_seq as is_last_staged,
        st.is_designed_channel,
        st.is_designed_channel
        and coalesce(
            st.stage_index - lag(st.stage_index) over journey_order in (0, 1),
            st.stage_index = 1
        ) as follows_design
    from staged as st
    inner join journey_last as jl on jl.stage_model = st.stage_model and jl.journey_key = st.journey_key
    left join stage_last as nxt
        on nxt.stage_model = st.stage_model
        and nxt.journey_key = st.journey_key
        and nxt.stage_index = st.stage_index + 1
    left join stage_last as pur
        on pur.stage_model = st.stage_model
        and pur.journey_key = st.journey_key
        and pur.stage_index = st.purchase_stage_index
    window journey_order as (partition by st.stage_model, st.journey_key order by st.event_seq)
)

select * from final
