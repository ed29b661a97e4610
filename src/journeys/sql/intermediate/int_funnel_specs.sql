-- model: int_funnel_specs
-- grain: stage_model, mode
-- materialized: temp
-- partition: none
-- publish: false
-- params: family_nos, from_prior, hold, model_nos, modes, n_stages, optional_stages, reach_offsets, stage_models, strict_dedup, strict_increase, window_us
-- procedure: funnel
-- One row per (stage_model, mode) requested by the caller. reach_offsets[s] is how many steps above stage s
-- a chain may go next: 1, plus one for each optional stage right after s (which the chain may skip).
with

spec_rows as (
    select
        unnest(cast($stage_models as varchar[])) as stage_model,
        unnest(cast($modes as varchar[])) as mode,
        unnest(cast($model_nos as integer[])) as model_no,
        unnest(cast($family_nos as integer[])) as family_no,
        unnest(cast($n_stages as integer[])) as n_stages,
        unnest(cast($window_us as bigint[])) as window_us,
        unnest(cast($from_prior as boolean[])) as from_prior,
        unnest(cast($strict_increase as boolean[])) as strict_increase,
        unnest(cast($strict_dedup as boolean[])) as strict_dedup,
        unnest(cast($hold as boolean[])) as hold,
        unnest(cast($optional_stages as integer[][])) as optional_stages,
        unnest(cast($reach_offsets as integer[][])) as reach_offsets
),

final as (
    select
        spec_rows.stage_model,
        spec_rows.mode,
        spec_rows.model_no,
        spec_rows.family_no,
        spec_rows.n_stages,
        spec_rows.window_us,
        spec_rows.from_prior,
        spec_rows.strict_increase,
        spec_rows.strict_dedup,
        spec_rows.hold,
        spec_rows.optional_stages,
        spec_rows.reach_offsets
    from spec_rows
)

select * from final
