-- model: alerts
-- grain: goal_name
-- materialized: table
-- partition: none
-- publish: true
-- procedure: alerts
-- One row per goal of the config (goals in journeys.yaml) that this run misses: its metric's value is on
-- the wrong side of the threshold ('missed'), or the metric has no value at all ('no_value': no journey
-- entered the stage, the cell or touchpoint had no event, or no reading carried a sentiment). Met goals
-- have no row. Beside the value now: the value in the previous night's published run (its Parquet marts),
-- read by stage name, so a reordered stage model still compares like with like; a rerun of the published
-- night keeps the previous values that night's alerts had, so a rerun that changes nothing changes no row. Values come from stage_funnel
-- (conversion_rate), stage_channel_matrix (flow_rate, monetised_value) and touchpoint_performance
-- (dropout_share = share_dropped_at_stage, mean_sentiment).
-- column goal_name: Name of the goal in the config; one row per goal at most.
-- column stage_model: Stage model of the goal.
-- column metric: 'conversion_rate', 'flow_rate', 'monetised_value', 'dropout_share' or 'mean_sentiment'.
-- column stage_index: Position of the goal's stage in the stage model now, from 1.
-- column stage_name: Stage the metric is read at.
-- column mode: Funnel mode the value comes from: the goal's (default the model's first) for conversion_rate, the model's first for dropout_share; null for the others (no funnel mode applies).
-- column channel: Channel of the cell for flow_rate and monetised_value; null for the other metrics.
-- column touchpoint: Touchpoint for dropout_share and mean_sentiment; null for the other metrics.
-- column owner: Who answers for it: the cell's or touchpoint's owner as in stage_channel_matrix and touchpoint_performance, for conversion_rate (or a unit with no row now) the stage's owner; null when none is set.
-- column direction: 'min' (the value must be at least threshold) or 'max' (at most); equal meets the goal.
-- column threshold: The goal's threshold, in the metric's unit (a share, a sentiment in [-1, 1], or revenue units).
-- column status: 'missed' (metric_value on the wrong side of threshold) or 'no_value' (metric_value is null).
-- column metric_value: The metric's value in this run; null when status is 'no_value'.
-- column miss_by: How far metric_value is on the wrong side: threshold - metric_value for 'min', metric_value - threshold for 'max' (> 0); null for 'no_value'.
-- column previous_value: The metric's value in the previous night's published run (the latest with an earlier as_of); null on a first run or when that run had no value for it.
-- column change_since_previous: metric_value - previous_value; null when either is null.
-- column missed_in_previous: The previous value missed the threshold too (an ongoing alert); false when it met it (a new one); null without a previous value.
-- column previous_batch_id: batch_id of the previous night's published run whose marts gave previous_value; null on a first run.
with

goals as (
    select * from int_goals
),

stages as (
    select sd.stage_model, sd.stage_index, sd.stage_name, sd.owner from stage_definitions as sd
),

previous_run as (
    select pr.batch_id from int_previous_run as pr
),

-- Filled only on a rerun of the published night: the previous values its alerts carried.
carried as (
    select pa.goal_name, pa.previous_value, pa.previous_batch_id from int_previous_alerts as pa
),

funnel as (
    select 'now' as run, sf.stage_model, sf.mode, sf.stage_name, sf.conversion_rate from stage_funnel as sf
    union all
    select 'previous' as run, pf.stage_model, pf.mode, pf.stage_name, pf.conversion_rate
    from int_previous_stage_funnel as pf
),

matrix as (
    select 'now' as run, scm.stage_model, scm.stage_name, scm.channel, scm.flow_rate, scm.monetised_value, scm.owner
    from stage_channel_matrix as scm
    union all
    select
        'previous' as run, pm.stage_model, pm.stage_name, pm.channel, pm.flow_rate, pm.monetised_value,
        null::varchar as owner
    from int_previous_stage_channel_matrix as pm
),

touchpoints as (
    select
        'now' as run, tp.stage_model, tp.stage_name, tp.touchpoint, tp.share_dropped_at_stage, tp.mean_sentiment,
        tp.owner
    from touchpoint_performance as tp
    union all
    select
        'previous' as run, pt.stage_model, pt.stage_name, pt.touchpoint, pt.share_dropped_at_stage,
        pt.mean_sentiment, null::varchar as owner
    from int_previous_touchpoint_performance as pt
),

-- Every measurable value in one shape: (run, metric, keys) -> value, keys null where a metric has none.
metric_values as (
    select
        f.run, 'conversion_rate' as metric, f.stage_model, f.stage_name, f.mode, null::varchar as channel,
        null::varchar as touchpoint, f.conversion_rate as metric_value, null::varchar as owner
    from funnel as f
    union all
    select
        m.run, 'flow_rate' as metric, m.stage_model, m.stage_name, null::varchar as mode, m.channel,
        null::varchar as touchpoint, m.flow_rate as metric_value, m.owner
    from matrix as m
    union all
    select
        m.run, 'monetised_value' as metric, m.stage_model, m.stage_name, null::varchar as mode, m.channel,
        null::varchar as touchpoint, m.monetised_value as metric_value, m.owner
    from matrix as m
    union all
    select
        t.run, 'dropout_share' as metric, t.stage_model, t.stage_name, null::varchar as mode,
        null::varchar as channel, t.touchpoint, t.share_dropped_at_stage as metric_value, t.owner
    from touchpoints as t
    union all
    select
        t.run, 'mean_sentiment' as metric, t.stage_model, t.stage_name, null::varchar as mode,
        null::varchar as channel, t.touchpoint, t.mean_sentiment as metric_value, t.owner
    from touchpoints as t
),

-- A goal's keys match at most one row per run: the marts' grains are unique and stage names are unique per model.
goal_values as (
    select
        g.goal_name,
        max(mv.metric_value) filter (where mv.run = 'now') as metric_value,
        max(mv.metric_value) filter (where mv.run = 'previous') as previous_value,
        max(mv.owner) filter (where mv.run = 'now') as unit_owner
    from goals as g
    left join metric_values as mv
        on mv.metric = g.metric
        and mv.stage_model = g.stage_model
        and mv.stage_name = g.stage_name
        and (g.metric != 'conversion_rate' or mv.mode = g.mode)
        and mv.channel is not distinct from g.channel
        and mv.touchpoint is not distinct from g.touchpoint
    group by g.goal_name
),

judged as (
    select
        g.*,
        gv.metric_value,
        coalesce(gv.previous_value, c.previous_value) as previous_value,
        coalesce((select pr.batch_id from previous_run as pr), c.previous_batch_id) as previous_batch_id,
        coalesce(gv.unit_owner, s.owner) as owner,
        s.stage_index,
        case
            when gv.metric_value is null then 'no_value'
            when g.direction = 'min' and gv.metric_value < g.threshold then 'missed'
            when g.direction = 'max' and gv.metric_value > g.threshold then 'missed'
        end as status,
        case g.direction
            when 'min' then g.threshold - gv.metric_value
            else gv.metric_value - g.threshold
        end as miss_by,
        case g.direction
            when 'min' then coalesce(gv.previous_value, c.previous_value) < g.threshold
            else coalesce(gv.previous_value, c.previous_value) > g.threshold
        end as missed_in_previous
    from goals as g
    inner join goal_values as gv on gv.goal_name = g.goal_name
    left join carried as c on c.goal_name = g.goal_name
    left join stages as s on s.stage_model = g.stage_model and s.stage_name = g.stage_name
),

final as (
    select
        j.goal_name,
        j.stage_model,
        j.metric,
        j.stage_index,
        j.stage_name,
        j.mode,
        j.channel,
        j.touchpoint,
        j.owner,
        j.direction,
        j.threshold,
        j.status,
        j.metric_value,
        j.miss_by,
        j.previous_value,
        j.metric_value - j.previous_value as change_since_previous,
        j.missed_in_previous,
        j.previous_batch_id
    from judged as j
    where j.status is not null
)

select * from final
