-- grain: one row per (stage_model, mode) requested by the caller.
-- reads: bound list parameters only, zipped by position: $stage_models, $modes, $model_nos, $family_nos
--   (0 = closed chains for ordered/strict, 1 = open chains, null = any_order), $n_stages, $window_us
--   (null = unbounded), $from_prior (window from the prior step), $strict_increase, $strict_dedup,
--   $hold (the model holds an attribute constant: chains run per (journey, hold_value)).
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
        unnest(cast($hold as boolean[])) as hold
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
        spec_rows.hold
    from spec_rows
)

select * from final
