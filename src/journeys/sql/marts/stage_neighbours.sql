-- model: stage_neighbours
-- grain: stage_model, stage_index, direction, neighbour_stage_index, neighbour_touchpoint
-- materialized: table
-- partition: none
-- publish: true
-- params: top_paths
-- The most frequent steps right before entering and right after leaving each stage (top_paths per stage
-- and direction): a visit is a run of consecutive events of one stage among a journey's events with a
-- stage of the model, in (occurred_at, event_id) order; its neighbours are the steps just before and
-- just after the run, or the journey's start or end (neighbour_stage_index 0).
with

-- The journey's previous and next steps come from int_map_events' one window over the journey.
steps as (
    select
        me.stage_model,
        -- journey_key: the integer twin of journey_id, cheaper to count distinct
        me.journey_key,
        me.stage_index,
        me.previous_stage_index as prev_stage_index,
        me.previous_touchpoint as prev_touchpoint,
        me.next_stage_index,
        me.next_touchpoint
    from int_map_events as me
),

stages as (
    select sd.stage_model, sd.stage_index, sd.stage_name from stage_definitions as sd
),

neighbours as (
    select
        st.stage_model,
        st.stage_index,
        st.journey_key,
        'before' as direction,
        coalesce(st.prev_stage_index, 0) as neighbour_stage_index,
        coalesce(st.prev_touchpoint, '(journey start)') as neighbour_touchpoint
    from steps as st
    where st.prev_stage_index is distinct from st.stage_index
    union all
    select
        st.stage_model,
        st.stage_index,
        st.journey_key,
        'after' as direction,
        coalesce(st.next_stage_index, 0) as neighbour_stage_index,
        coalesce(st.next_touchpoint, '(journey end)') as neighbour_touchpoint
    from steps as st
    where st.next_stage_index is distinct from st.stage_index
),

grouped as (
    select
        n.stage_model,
        n.stage_index,
        n.direction,
        n.neighbour_stage_index,
        n.neighbour_touchpoint,
        count(*) as visits,
        count(distinct n.journey_key) as journeys
    from neighbours as n
    group by n.stage_model, n.stage_index, n.direction, n.neighbour_stage_index, n.neighbour_touchpoint
),

ranked as (
    select
        g.*,
        g.visits / sum(g.visits) over stage_direction as share,
        row_number() over (
            stage_direction order by g.visits desc, g.neighbour_stage_index asc, g.neighbour_touchpoint asc
        ) as neighbour_rank
    from grouped as g
    window stage_direction as (partition by g.stage_model, g.stage_index, g.direction)
),

final as (
    select
        r.stage_model,
        r.stage_index,
        s.stage_name,
        r.direction,
        r.neighbour_rank,
        r.neighbour_stage_index,
        ns.stage_name as neighbour_stage_name,
        r.neighbour_touchpoint,
        r.visits,
        r.journeys,
        r.share
    from ranked as r
    inner join stages as s on s.stage_model = r.stage_model and s.stage_index = r.stage_index
    left join stages as ns on ns.stage_model = r.stage_model and ns.stage_index = r.neighbour_stage_index
    where r.neighbour_rank <= $top_paths
)

select * from final
