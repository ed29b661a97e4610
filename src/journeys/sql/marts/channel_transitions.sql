-- model: channel_transitions
-- grain: stage_model, stage_index, from_channel, to_channel
-- materialized: table
-- partition: none
-- publish: true
-- One row per (stage model, stage i, channel of the journey's last stage-i event before it moved on,
-- channel of its first stage-(i + 1) event): how journeys switch channels between consecutive stages.
-- A journey moves on from i at its first stage-(i + 1) event after its first stage-i event (in
-- (occurred_at, event_id) order); it counts at most once per stage pair.
with

-- Three narrow reads of the same table, keyed on journey_key (the integer twin of journey_id): one CTE read
-- three times is materialized first, with every column, which costs more than the reads.
stage_events as (
    select se.stage_model, se.journey_key, se.event_seq, se.stage_index from int_map_events as se
),

arrival_events as (
    select ae.stage_model, ae.journey_key, ae.event_seq, ae.occurred_at, ae.channel, ae.stage_index
    from int_map_events as ae
),

departure_events as (
    select de.stage_model, de.journey_key, de.customer_key, de.event_seq, de.occurred_at, de.channel, de.stage_index
    from int_map_events as de
),

stages as (
    select sd.stage_model, sd.stage_index, sd.stage_name from stage_definitions as sd
),

stage_firsts as (
    select se.stage_model, se.journey_key, se.stage_index, min(se.event_seq) as first_seq
    from stage_events as se
    group by se.stage_model, se.journey_key, se.stage_index
),

-- The first event of stage i + 1 after the journey's first event of stage i.
arrivals as (
    select
        sf.stage_model,
        sf.journey_key,
        sf.stage_index,
        min(nx.event_seq) as to_seq,
        arg_min(nx.channel, nx.event_seq) as to_channel,
        arg_min(nx.occurred_at, nx.event_seq) as to_at
    from stage_firsts as sf
    inner join arrival_events as nx
        on nx.stage_model = sf.stage_model
        and nx.journey_key = sf.journey_key
        and nx.stage_index = sf.stage_index + 1
        and nx.event_seq > sf.first_seq
    group by sf.stage_model, sf.journey_key, sf.stage_index
),

-- The last event of stage i before that arrival.
departures as (
    select
        a.stage_model,
        a.journey_key,
        a.stage_index,
        any_value(a.to_channel) as to_channel,
        any_value(a.to_at) as to_at,
        arg_max(me.channel, me.event_seq) as from_channel,
        arg_max(me.occurred_at, me.event_seq) as from_at,
        any_value(me.customer_key) as customer_key
    from arrivals as a
    inner join departure_events as me
        on me.stage_model = a.stage_model
        and me.journey_key = a.journey_key
        and me.stage_index = a.stage_index
        and me.event_seq < a.to_seq
    group by a.stage_model, a.journey_key, a.stage_index
),

grouped as (
    select
        d.stage_model,
        d.stage_index,
        d.from_channel,
        d.to_channel,
        count(*) as journeys,
        count(distinct d.customer_key) as customers,
        median(epoch_us(d.to_at) - epoch_us(d.from_at)) / 1e6 as median_delay_s
    from departures as d
    group by d.stage_model, d.stage_index, d.from_channel, d.to_channel
),

final as (
    select
        g.stage_model,
        g.stage_index,
        s.stage_name,
        ns.stage_name as next_stage_name,
        g.from_channel,
        g.to_channel,
        g.from_channel = g.to_channel as is_same_channel,
        g.journeys,
        g.customers,
        g.journeys / sum(g.journeys) over (partition by g.stage_model, g.stage_index) as share_of_stage_transitions,
        g.median_delay_s
    from grouped as g
    inner join stages as s on s.stage_model = g.stage_model and s.stage_index = g.stage_index
    inner join stages as ns on ns.stage_model = g.stage_model and ns.stage_index = g.stage_index + 1
)

select * from final
