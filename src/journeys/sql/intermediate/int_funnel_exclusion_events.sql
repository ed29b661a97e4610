-- model: int_funnel_exclusion_events
-- materialized: temp
-- partition: customer
-- publish: false
-- procedure: funnel
-- One row per (funnel partition, exclusion event): an event matching an exclusion of the step after
-- chain step after_step (after_stage translated to the partition's chain steps).
-- An exclusion event applies to every partition of its journey (whatever its hold_value).
with

exclusions as (
    select distinct
        int_funnel_specs.model_no,
        int_funnel_exclusions.after_stage,
        int_funnel_exclusions.event_types,
        int_funnel_exclusions.channels,
        int_funnel_exclusions.touchpoints
    from int_funnel_exclusions
    inner join int_funnel_specs
        on int_funnel_specs.stage_model = int_funnel_exclusions.stage_model
    where int_funnel_specs.family_no is not null
),

partitions as (
    select
        int_funnel_events.funnel_key,
        any_value(int_funnel_events.journey_key) as journey_key,
        any_value(int_funnel_events.model_no) as model_no,
        min(int_funnel_events.stage_index - int_funnel_events.step + 1) as entry_stage
    from int_funnel_events
    where int_funnel_events.model_no in (select exclusions.model_no from exclusions)
    group by int_funnel_events.funnel_key
),

journey_events as (
    select
        int_journey_events.journey_key,
        int_journey_events.event_type,
        int_journey_events.channel,
        int_journey_events.touchpoint,
        epoch_us(int_journey_events.occurred_at) as occurred_us
    from int_journey_events
),

-- An event may match two exclusions of one step: the step is voided once.
final as (
    select distinct
        partitions.funnel_key,
        cast(exclusions.after_stage - partitions.entry_stage + 1 as integer) as after_step,
        journey_events.occurred_us
    from partitions
    inner join exclusions
        on exclusions.model_no = partitions.model_no
    inner join journey_events
        on journey_events.journey_key = partitions.journey_key
        and coalesce(list_contains(exclusions.event_types, journey_events.event_type), true)
        and coalesce(list_contains(exclusions.channels, journey_events.channel), true)
        and coalesce(list_contains(exclusions.touchpoints, journey_events.touchpoint), true)
    where exclusions.after_stage >= partitions.entry_stage
)

select * from final
