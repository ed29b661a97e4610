-- model: int_funnel_events
-- materialized: temp
-- partition: customer
-- publish: false
-- procedure: funnel
-- One row per (funnel partition, stage event) of the ordered/strict (closed) and open chain families;
-- a partition is (stage model, family, journey) or, when the model holds an attribute constant,
-- (stage model, family, journey, hold_value). step is the event's position in the chain: its stage in
-- closed chains; stage - entry_stage + 1 in open chains (entry_stage = the journey's lowest stage).
-- funnel_key: journey_key * 2048 + model_no * 2 + family_no (no hold), or a negative dense rank over
-- (journey_key, model_no, family_no, hold_value) (hold); one integer key per partition.
-- reach_step: the highest step a chain end at this event may precede (step + 1, more when optional stages follow).
with

funnel_families as (
    select distinct
        int_funnel_specs.stage_model,
        int_funnel_specs.model_no,
        int_funnel_specs.family_no,
        int_funnel_specs.n_stages,
        int_funnel_specs.hold,
        int_funnel_specs.reach_offsets
    from int_funnel_specs
    where int_funnel_specs.family_no is not null
),

int_stage_events as not materialized (
    select
        int_stage_events.stage_model,
        int_stage_events.journey_key,
        int_stage_events.occurred_at,
        int_stage_events.stage_index,
        int_stage_events.hold_value
    from int_stage_events
),

family_events as not materialized (
    select
        int_stage_events.journey_key,
        funnel_families.model_no,
        funnel_families.family_no,
        funnel_families.hold,
        int_stage_events.hold_value,
        int_stage_events.stage_index,
        epoch_us(int_stage_events.occurred_at) as occurred_us,
        funnel_families.reach_offsets[int_stage_events.stage_index] as reach_offset
    from int_stage_events
    inner join funnel_families
        on funnel_families.stage_model = int_stage_events.stage_model
    where int_stage_events.stage_index between 1 and funnel_families.n_stages
),

closed_steps as (
    select
        family_events.*,
        family_events.stage_index as step
    from family_events
    where family_events.family_no = 0
),

open_steps as (
    select
        family_events.*,
        family_events.stage_index - min(family_events.stage_index) over (
            partition by family_events.model_no, family_events.journey_key
        ) + 1 as step
    from family_events
    where family_events.family_no = 1
),

stepped as not materialized (
    select * from closed_steps
    union all
    select * from open_steps
),

plain_keys as (
    select
        stepped.journey_key * 2048 + stepped.model_no * 2 + stepped.family_no as funnel_key,
        stepped.journey_key,
        stepped.model_no,
        stepped.family_no,
        stepped.step,
        stepped.stage_index,
        stepped.occurred_us,
        stepped.step + stepped.reach_offset as reach_step
    from stepped
    where not stepped.hold
),

hold_keys as (
    select
        -dense_rank() over (
            order by stepped.journey_key, stepped.model_no, stepped.family_no, stepped.hold_value
        ) as funnel_key,
        stepped.journey_key,
        stepped.model_no,
        stepped.family_no,
        stepped.step,
        stepped.stage_index,
        stepped.occurred_us,
        stepped.step + stepped.reach_offset as reach_step
    from stepped
    where stepped.hold
),

final as (
    select * from plain_keys
    union all
    select * from hold_keys
)

select * from final
