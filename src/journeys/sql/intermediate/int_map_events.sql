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
-- event's stage, the next one, or a later one across optional stages only (the journey's first staged event:
-- stage 1).
with

journey_events as (
    select
        je.event_id,
        je.journey_id,
        je.journey_key,
        je.customer_key,
        je.event_seq,
        je.channel,
        je.sentiment,
        je.revenue,
        je.next_event_at
    from int_journey_events as je
),

event_stages as (
    select es.stage_model, es.journey_key, es.event_seq, es.stage_index from int_event_stages as es
),

-- Read again rather than from event_stages: a CTE read twice is materialized first, which costs more.
stage_positions as (
    select sp.stage_model, sp.journey_key, sp.event_seq, sp.stage_index from int_event_stages as sp
),

stages as (
    select
        sd.stage_model,
        sd.stage_index,
        sd.n_stages,
        sd.purchase_stage_index,
        sd.owner,
        sd.designed_channels,
        -- the lowest stage a designed step into this one may come from: the last required stage before it
        -- (only optional stages may be skipped; stage 1 is never optional)
        coalesce(
            max(case when not sd.optional then sd.stage_index end) over (
                partition by sd.stage_model order by sd.stage_index rows between unbounded preceding and 1 preceding
            ),
            sd.stage_index
        ) as design_from_index
    from stage_definitions as sd
),

touchpoint_owners as (
    select tpo.stage_model, tpo.touchpoint, tpo.owner from stage_touchpoint_owners as tpo
),

-- A second, narrow read of the same table: a CTE read twice is materialized first, with every column.
event_touchpoints as (
    select et.journey_key, et.event_seq, et.touchpoint, et.occurred_at from int_journey_events as et
),

-- What the window below needs of each staged event, and nothing more: a window sorts every column it
-- carries, so the event's other columns are joined after it.
staged as (
    select
        es.stage_model,
        es.journey_key,
        es.event_seq,
        es.stage_index,
        et.touchpoint,
        et.occurred_at,
        tpo.owner as touchpoint_owner,
        coalesce(tpo.owner, s.owner) as owner
    from event_stages as es
    -- (journey_key, event_seq): two integers join faster than the event_id text
    inner join event_touchpoints as et on et.journey_key = es.journey_key and et.event_seq = es.event_seq
    inner join stages as s on s.stage_model = es.stage_model and s.stage_index = es.stage_index
    left join touchpoint_owners as tpo on tpo.stage_model = es.stage_model and tpo.touchpoint = et.touchpoint
),

-- The journey's previous and next staged events (and next owned event), in one window that every mart of
-- the map reads instead of sorting the journey's events again: each sort of all events costs more than
-- the marts' aggregates together.
sequenced as (
    select
        st.*,
        lag(st.stage_index) over journey_order as previous_stage_index,
        lag(st.touchpoint) over journey_order as previous_touchpoint,
        lead(st.stage_index) over journey_order as next_stage_index,
        lead(st.touchpoint) over journey_order as next_touchpoint,
        lead(st.owner ignore nulls) over journey_order as next_owner,
        lead(case when st.owner is not null then st.occurred_at end ignore nulls) over journey_order as next_owned_at
    from staged as st
    window journey_order as (partition by st.stage_model, st.journey_key order by st.event_seq)
),

-- Per (stage model, journey, stage): the last position of an event of that stage.
stage_last as (
    select sp.stage_model, sp.journey_key, sp.stage_index, max(sp.event_seq) as last_seq
    from stage_positions as sp
    group by sp.stage_model, sp.journey_key, sp.stage_index
),

final as (
    select
        st.stage_model,
        je.event_id,
        je.journey_id,
        st.journey_key,
        je.customer_key,
        st.event_seq,
        st.occurred_at,
        je.next_event_at,
        je.channel,
        st.touchpoint,
        je.sentiment,
        je.revenue,
        st.stage_index,
        s.n_stages,
        st.touchpoint_owner,
        st.owner,
        st.previous_stage_index,
        st.previous_touchpoint,
        st.next_stage_index,
        st.next_touchpoint,
        st.next_owner,
        st.next_owned_at,
        -- null at the last stage: there is no next stage to move on to
        case when st.stage_index < s.n_stages then coalesce(nxt.last_seq > st.event_seq, false) end as moved_on,
        -- null when the model names no purchase stage; after the purchase stage any purchase in the journey counts
        case
            when s.purchase_stage_index is null then null
            when st.stage_index > s.purchase_stage_index then pur.last_seq is not null
            else coalesce(pur.last_seq >= st.event_seq, false)
        end as reached_purchase,
        -- every staged event has a stage: no next stage index means no later staged event
        st.next_stage_index is null as is_last_staged,
        len(s.designed_channels) = 0 or list_contains(s.designed_channels, je.channel) as is_designed_channel,
        (len(s.designed_channels) = 0 or list_contains(s.designed_channels, je.channel))
        and coalesce(
            st.previous_stage_index between s.design_from_index and st.stage_index, st.stage_index = 1
        ) as follows_design
    from sequenced as st
    inner join journey_events as je on je.journey_key = st.journey_key and je.event_seq = st.event_seq
    inner join stages as s on s.stage_model = st.stage_model and s.stage_index = st.stage_index
    left join stage_last as nxt
        on nxt.stage_model = st.stage_model
        and nxt.journey_key = st.journey_key
        and nxt.stage_index = st.stage_index + 1
    left join stage_last as pur
        on pur.stage_model = st.stage_model
        and pur.journey_key = st.journey_key
        and pur.stage_index = s.purchase_stage_index
)

select * from final
