-- model: journeys
-- grain: journey_id
-- materialized: table
-- partition: customer
-- publish: true
-- params: primary_mode, primary_model
-- One row per journey, with the stage outcome of the primary stage model and mode.
with

journeys as (
    select * from int_journeys
),

primary_stages as (
    select js.*
    from journey_stages as js
    where js.stage_model = $primary_model and js.mode = $primary_mode
),

any_order_stages as (
    select js.journey_id, js.furthest_stage
    from journey_stages as js
    where js.stage_model = $primary_model and js.mode = 'any_order'
),

stage_paths as (
    select jp.journey_id, jp.stage_path from int_journey_paths as jp
),

final as (
    select
        j.journey_id,
        j.customer_key,
        j.bucket,
        j.started_at,
        j.ended_at,
        j.first_channel,
        j.last_channel,
        j.first_touchpoint,
        j.last_touchpoint,
        j.n_events,
        j.n_sessions,
        j.n_channels,
        j.revenue,
        ps.stage_model,
        ps.mode,
        ps.furthest_stage,
        ps.furthest_stage_name,
        ao.furthest_stage as furthest_stage_any_order,
        ps.is_closed,
        ps.is_converted,
        ps.dropout_stage,
        ps.overdue_stage,
        coalesce(sp.stage_path, []::varchar[]) as stage_path,
        -- Most BI tools cannot show a list: the same path as text, joined as journey_paths joins steps.
        array_to_string(coalesce(sp.stage_path, []::varchar[]), ' > ') as stage_path_text
    from journeys as j
    inner join primary_stages as ps on ps.journey_id = j.journey_id
    left join any_order_stages as ao on ao.journey_id = j.journey_id
    left join stage_paths as sp on sp.journey_id = j.journey_id
)

select * from final
