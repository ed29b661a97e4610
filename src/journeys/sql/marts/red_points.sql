-- model: red_points
-- grain: stage_model, unit_type, stage_index, unit, metric
-- materialized: table
-- partition: none
-- publish: true
-- params: map_models, map_modes, red_min_count, red_min_lift, red_z
-- One row per red point: a touchpoint (touchpoint_performance) or a CxC matrix cell (stage, channel)
-- whose dropout share or negative-sentiment share is significantly above its stage's: at least
-- red_points.min_count journeys (dropout) or readings (sentiment), the Wilson interval's lower bound
-- above the stage's share and a lift of at least red_points.min_lift. Ranked per stage model by the
-- journeys lost (or negative readings) above the stage's norm. Dropout is each stage model's first
-- funnel mode's: journeys present at the stage that dropped there.
with

map_events as (
    select me.stage_model, me.journey_key, me.journey_id, me.stage_index, me.channel, me.sentiment
    from int_map_events as me
),

touchpoints as (
    select * from touchpoint_performance
),

matrix as (
    select scm.stage_model, scm.stage_index, scm.channel, scm.owner from stage_channel_matrix as scm
),

map_modes as (
    select
        unnest(cast($map_models as varchar[])) as stage_model,
        unnest(cast($map_modes as varchar[])) as mode
),

journey_status as (
    select js.stage_model, js.journey_id, js.dropout_stage
    from journey_stages as js
    inner join map_modes as mm on mm.stage_model = js.stage_model and mm.mode = js.mode
),

-- One row per (cell, journey): counting these rows instead of distinct journey ids over the events is the
-- same count at a fraction of the cost, and the journey's dropout is joined per journey, not per event.
journey_cells as (
    select
        me.stage_model,
        me.stage_index,
        me.channel,
        me.journey_key,
        any_value(me.journey_id) as journey_id,
        count(me.sentiment) as n_sentiment,
        count(*) filter (where me.sentiment < 0) as n_negative
    from map_events as me
    group by me.stage_model, me.stage_index, me.channel, me.journey_key
),

journey_cell_status as (
    select
        jc.*,
        js.dropout_stage = jc.stage_index as dropped_here
    from journey_cells as jc
    inner join journey_status as js on js.stage_model = jc.stage_model and js.journey_id = jc.journey_id
),

cells as (
    select
        jcs.stage_model,
        jcs.stage_index,
        jcs.channel,
        count(*) as n_journeys,
        count(*) filter (where jcs.dropped_here) as n_dropped,
        sum(jcs.n_sentiment)::bigint as n_sentiment,
        sum(jcs.n_negative)::bigint as n_negative
    from journey_cell_status as jcs
    group by jcs.stage_model, jcs.stage_index, jcs.channel
),

-- One row per (stage, journey) present at it; dropped_here is the journey's, the same in each of its cells.
journey_stages_present as (
    select jcs.stage_model, jcs.stage_index, jcs.journey_key, bool_or(jcs.dropped_here) as dropped_here
    from journey_cell_status as jcs
    group by jcs.stage_model, jcs.stage_index, jcs.journey_key
),

stage_readings as (
    select
        c.stage_model,
        c.stage_index,
        sum(c.n_sentiment)::bigint as n_sentiment,
        sum(c.n_negative)::bigint as n_negative
    from cells as c
    group by c.stage_model, c.stage_index
),

stage_norms as (
    select
        jsp.stage_model,
        jsp.stage_index,
        count(*) as n_journeys,
        count(*) filter (where jsp.dropped_here) as n_dropped,
        any_value(sr.n_sentiment) as n_sentiment,
        any_value(sr.n_negative) as n_negative
    from journey_stages_present as jsp
    inner join stage_readings as sr on sr.stage_model = jsp.stage_model and sr.stage_index = jsp.stage_index
    group by jsp.stage_model, jsp.stage_index
),

candidates as (
    select
        t.stage_model, 'touchpoint' as unit_type, t.stage_index, t.touchpoint as unit, t.touchpoint,
        t.main_channel as channel, t.owner, 'dropout' as metric, t.journeys_reached as n,
        t.journeys_dropped_at_stage as k
    from touchpoints as t
    union all
    select
        t.stage_model, 'touchpoint' as unit_type, t.stage_index, t.touchpoint as unit, t.touchpoint,
        t.main_channel as channel, t.owner, 'negative_sentiment' as metric, t.n_sentiment as n, t.n_negative as k
    from touchpoints as t
    union all
    select
        c.stage_model, 'cell' as unit_type, c.stage_index, c.channel as unit, null as touchpoint,
        c.channel, m.owner, 'dropout' as metric, c.n_journeys as n, c.n_dropped as k
    from cells as c
    inner join matrix as m on m.stage_model = c.stage_model and m.stage_index = c.stage_index and m.channel = c.channel
    union all
    select
        c.stage_model, 'cell' as unit_type, c.stage_index, c.channel as unit, null as touchpoint,
        c.channel, m.owner, 'negative_sentiment' as metric, c.n_sentiment as n, c.n_negative as k
    from cells as c
    inner join matrix as m on m.stage_model = c.stage_model and m.stage_index = c.stage_index and m.channel = c.channel
),

scored as (
    select
        ca.*,
        ca.k / ca.n as share,
        case ca.metric when 'dropout' then sn.n_dropped / sn.n_journeys else sn.n_negative / sn.n_sentiment end
            as stage_share,
        -- Wilson score interval of k successes in n at z
        (
            ca.k / ca.n + $red_z * $red_z / (2 * ca.n)
            - $red_z * sqrt(ca.k / ca.n * (1 - ca.k / ca.n) / ca.n + $red_z * $red_z / (4 * ca.n * ca.n))
        ) / (1 + $red_z * $red_z / ca.n) as share_low,
        (
            ca.k / ca.n + $red_z * $red_z / (2 * ca.n)
            + $red_z * sqrt(ca.k / ca.n * (1 - ca.k / ca.n) / ca.n + $red_z * $red_z / (4 * ca.n * ca.n))
        ) / (1 + $red_z * $red_z / ca.n) as share_high
    from candidates as ca
    inner join stage_norms as sn on sn.stage_model = ca.stage_model and sn.stage_index = ca.stage_index
    where ca.n >= $red_min_count
),

flagged as (
    select
        sc.*,
        sc.share / nullif(sc.stage_share, 0) as lift,
        sc.k - sc.n * sc.stage_share as excess_over_norm
    from scored as sc
    where sc.share > sc.stage_share
        and sc.share_low > sc.stage_share
        and (sc.stage_share = 0 or sc.share / sc.stage_share >= $red_min_lift)
),

stages as (
    select sd.stage_model, sd.stage_index, sd.stage_name from stage_definitions as sd
),

final as (
    select
        f.stage_model,
        row_number() over (
            partition by f.stage_model
            order by
                f.excess_over_norm desc, f.unit_type = 'cell' asc, f.metric asc, f.stage_index asc, f.unit asc
        ) as red_rank,
        f.unit_type,
        f.stage_index,
        s.stage_name,
        f.unit,
        f.touchpoint,
        f.channel,
        f.owner,
        f.metric,
        f.n,
        f.k,
        f.share,
        f.share_low,
        f.share_high,
        f.stage_share,
        f.lift,
        f.excess_over_norm
    from flagged as f
    inner join stages as s on s.stage_model = f.stage_model and s.stage_index = f.stage_index
)

select * from final
