-- model: int_journey_paths
-- grain: journey_id
-- materialized: table
-- partition: customer
-- publish: false
-- params: primary_model
-- One row per journey with a staged event: its stage path in the primary stage model (the stages its events
-- map to, in event order, repeats collapsed). Kept apart from `journeys`, which every run rebuilds for the
-- as_of-dependent status, so that only the affected customers' paths are computed again.
with

-- Stage path: the stages the journey's events map to, in event order, repeats collapsed.
staged_events as (
    select
        je.journey_id,
        je.event_seq,
        sd.stage_name,
        lag(es.stage_index) over (partition by je.journey_id order by je.event_seq) as previous_stage,
        es.stage_index
    from int_journey_events as je
    inner join int_event_stages as es on es.event_id = je.event_id and es.stage_model = $primary_model
    inner join stage_definitions as sd on sd.stage_model = es.stage_model and sd.stage_index = es.stage_index
),

stage_paths as (
    select
        se.journey_id,
        list(se.stage_name order by se.event_seq) as stage_path
    from staged_events as se
    where se.previous_stage is null or se.previous_stage <> se.stage_index
    group by se.journey_id
),

final as (
    select * from stage_paths
)

select * from final
