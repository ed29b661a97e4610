-- model: int_funnel_step_reached
-- grain: funnel_key, step
-- materialized: temp
-- partition: customer
-- publish: false
-- procedure: funnel
-- One row per (funnel partition, chain step) reached: the step is first reached at its earliest valid
-- chain end; reach_step is the highest step it may precede (see int_funnel_chain_ends). The partition's journey, model, family and entry stage are decoded from funnel_key, except
-- for partitions whose key cannot be decoded arithmetically (hold keys) or that start above stage 1 (open).
with

funnel_events as not materialized (
    select
        int_funnel_events.funnel_key,
        int_funnel_events.journey_key,
        int_funnel_events.model_no,
        int_funnel_events.family_no,
        int_funnel_events.step,
        int_funnel_events.stage_index
    from int_funnel_events
),

chain_ends as not materialized (
    select
        int_funnel_chain_ends.funnel_key,
        int_funnel_chain_ends.step,
        int_funnel_chain_ends.occurred_us,
        int_funnel_chain_ends.reach_step
    from int_funnel_chain_ends
),

step_reached as (
    select
        chain_ends.funnel_key,
        chain_ends.step,
        min(chain_ends.occurred_us) as reached_us,
        -- one value per partition and step: it follows from the step's stage
        max(chain_ends.reach_step) as reach_step
    from chain_ends
    group by chain_ends.funnel_key, chain_ends.step
),

special_partitions as (
    select
        funnel_events.funnel_key,
        any_value(funnel_events.journey_key) as journey_key,
        any_value(funnel_events.model_no) as model_no,
        any_value(funnel_events.family_no) as family_no,
        min(funnel_events.stage_index - funnel_events.step + 1) as entry_stage
    from funnel_events
    where funnel_events.funnel_key < 0 or funnel_events.family_no = 1
    group by funnel_events.funnel_key
),

final as (
    select
        step_reached.funnel_key,
        step_reached.step,
        step_reached.reached_us,
        step_reached.reach_step,
        coalesce(special_partitions.journey_key, step_reached.funnel_key // 2048) as journey_key,
        coalesce(special_partitions.model_no, cast((step_reached.funnel_key % 2048) // 2 as integer))
            as model_no,
        coalesce(special_partitions.family_no, cast(step_reached.funnel_key % 2 as integer)) as family_no,
        coalesce(special_partitions.entry_stage, 1) as entry_stage
    from step_reached
    left join special_partitions
        on special_partitions.funnel_key = step_reached.funnel_key
)

select * from final
