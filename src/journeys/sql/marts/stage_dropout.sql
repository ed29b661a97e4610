-- model: stage_dropout
-- grain: stage_model, mode, stage_index, last_touchpoint, last_channel
-- materialized: table
-- partition: none
-- publish: true
-- One row per (stage model, mode, dropout stage, last touchpoint, last channel), over closed
-- journeys that ended at that stage without converting: where customers are lost.
with

dropped as (
    select js.*
    from journey_stages as js
    where js.dropout_stage is not null
),

stages as (
    select sd.stage_model, sd.stage_index, sd.stage_name, sd.owner from stage_definitions as sd
),

touchpoint_owners as (
    select tpo.stage_model, tpo.touchpoint, tpo.owner from stage_touchpoint_owners as tpo
),

grouped as (
    select
        d.stage_model,
        d.mode,
        d.dropout_stage as stage_index,
        d.last_touchpoint,
        d.last_channel,
        count(*) as journeys_dropped,
        -- Decimal sums are exact, so the means do not depend on how threads split the rows.
        avg(d.last_sentiment::decimal(18, 6))::double as mean_last_sentiment,
        avg(d.last_known_sentiment::decimal(18, 6))::double as mean_last_known_sentiment
    from dropped as d
    group by all
),

final as (
    select
        g.stage_model,
        g.mode,
        g.stage_index,
        s.stage_name,
        g.last_touchpoint,
        g.last_channel,
        g.journeys_dropped,
        g.journeys_dropped / sum(g.journeys_dropped) over (partition by g.stage_model, g.mode, g.stage_index)
            as share_of_stage_dropouts,
        g.mean_last_sentiment,
        g.mean_last_known_sentiment,
        coalesce(tpo.owner, s.owner) as owner
    from grouped as g
    inner join stages as s on s.stage_model = g.stage_model and s.stage_index = g.stage_index
    left join touchpoint_owners as tpo
        on tpo.stage_model = g.stage_model and tpo.touchpoint = g.last_touchpoint
)

select * from final
