-- model: int_journey_stages
-- grain: stage_model, mode, journey_id
-- materialized: table
-- partition: customer
-- publish: false
-- journey_stages without what depends on the run's as_of (is_closed, dropout_stage): a customer's rows change
-- only with its events, so an incremental run rebuilds them for the affected customers alone and
-- journey_stages adds the status to every row in one pass.
-- entry_stage is 1 except in open mode (the journey's lowest stage); stages_over_budget lists the stages
-- i whose time from reaching i to reaching the next stage it reached exceeded stage i's time_budget;
-- stages_skipped the optional stages between entry_stage and furthest_stage it did not reach; conformance_score is the
-- share of the journey's staged events that follow the designed journey (int_map_events.follows_design).
with

journeys as (
    select * from int_journeys
),

stage_models as (
    select distinct sd.stage_model, sd.n_stages, sd.stage_model_version from stage_definitions as sd
),

model_modes as (
    select fm.stage_model, fm.mode, sm.n_stages, sm.stage_model_version
    from stage_funnel_modes as fm
    inner join stage_models as sm on sm.stage_model = fm.stage_model
),

reached as (
    select
        sr.stage_model,
        sr.mode,
        sr.journey_id,
        min(sr.stage_index) as entry_stage,
        max(sr.stage_index) as furthest_stage,
        min(sr.reached_at) as entered_at,
        max(sr.reached_at) as furthest_reached_at
    from int_journey_stage_reached as sr
    group by sr.stage_model, sr.mode, sr.journey_id
),

-- only optional stages can be skipped, so models without them join nothing here
skipped as (
    select
        r.stage_model,
        r.mode,
        r.journey_id,
        list(sd.stage_index order by sd.stage_index) as stages_skipped
    from reached as r
    inner join stage_definitions as sd
        on sd.stage_model = r.stage_model
        and sd.optional
        and sd.stage_index > r.entry_stage
        and sd.stage_index < r.furthest_stage
    where
        not exists (
            select 1
            from int_journey_stage_reached as sr
            where sr.stage_model = r.stage_model
                and sr.mode = r.mode
                and sr.journey_id = r.journey_id
                and sr.stage_index = sd.stage_index
        )
    group by r.stage_model, r.mode, r.journey_id
),

stage_budgets as (
    select sd.stage_model, sd.stage_index, sd.time_budget_us
    from stage_definitions as sd
    where sd.time_budget_us is not null
),

over_budget as (
    select
        r1.stage_model,
        r1.mode,
        r1.journey_id,
        list(r1.stage_index order by r1.stage_index) as stages_over_budget
    from int_stage_transitions as r1
    inner join stage_budgets as sb on sb.stage_model = r1.stage_model and sb.stage_index = r1.stage_index
    where epoch_us(r1.next_reached_at) - epoch_us(r1.reached_at) > sb.time_budget_us
    group by r1.stage_model, r1.mode, r1.journey_id
),

conformance as (
    select
        me.stage_model,
        me.journey_id,
        avg(me.follows_design::integer) as conformance_score
    from int_map_events as me
    group by me.stage_model, me.journey_id
),

journey_modes as (
    select
        mm.stage_model,
        mm.stage_model_version,
        mm.mode,
        mm.n_stages,
        j.journey_id,
        j.customer_key,
        j.bucket,
        j.started_at,
        j.ended_at,
        j.first_channel,
        j.last_channel,
        j.first_touchpoint,
        j.last_touchpoint,
        j.last_event_id,
        j.last_sentiment,
        j.last_known_sentiment,
        j.breakdown_attribute,
        r.entry_stage,
        coalesce(r.furthest_stage, 0) as furthest_stage,
        r.entered_at,
        r.furthest_reached_at,
        coalesce(ob.stages_over_budget, []::integer[]) as stages_over_budget,
        coalesce(sk.stages_skipped, []::integer[]) as stages_skipped,
        cf.conformance_score
    from journeys as j
    cross join model_modes as mm
    left join reached as r
        on r.journey_id = j.journey_id and r.stage_model = mm.stage_model and r.mode = mm.mode
    left join over_budget as ob
        on ob.journey_id = j.journey_id and ob.stage_model = mm.stage_model and ob.mode = mm.mode
    left join skipped as sk
        on sk.journey_id = j.journey_id and sk.stage_model = mm.stage_model and sk.mode = mm.mode
    left join conformance as cf
        on cf.journey_id = j.journey_id and cf.stage_model = mm.stage_model
),

journey_status as (
    select
        jm.*,
        jm.furthest_stage = jm.n_stages as is_converted
    from journey_modes as jm
),

stage_names as (
    select sd.stage_model, sd.stage_index, sd.stage_name
    from stage_definitions as sd
),

final as (
    select
        s.stage_model,
        s.stage_model_version,
        s.mode,
        s.journey_id,
        s.customer_key,
        s.bucket,
        s.n_stages,
        s.entry_stage,
        s.furthest_stage,
        sn.stage_name as furthest_stage_name,
        s.entered_at,
        s.furthest_reached_at,
        s.is_converted,
        s.stages_over_budget,
        s.stages_skipped,
        -- Most BI tools cannot show a list: the same stage indexes as text.
        array_to_string(s.stages_skipped, ',') as stages_skipped_text,
        array_to_string(s.stages_over_budget, ',') as stages_over_budget_text,
        s.conformance_score,
        s.started_at,
        s.ended_at,
        s.first_channel,
        s.last_channel,
        s.first_touchpoint,
        s.last_touchpoint,
        s.last_event_id,
        s.last_sentiment,
        s.last_known_sentiment,
        s.breakdown_attribute
    from journey_status as s
    left join stage_names as sn on sn.stage_model = s.stage_model and sn.stage_index = s.furthest_stage
)

select * from final
