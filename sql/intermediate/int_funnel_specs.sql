-- grain: one row per (stage_model, mode) requested by the caller.
-- reads: bound list parameters only ($stage_models, $modes, $n_stages, $window_us), zipped by position.
with

spec_rows as (
    select
        unnest(cast($stage_models as varchar[])) as stage_model,
        unnest(cast($modes as varchar[])) as mode,
        unnest(cast($n_stages as integer[])) as n_stages,
        unnest(cast($window_us as bigint[])) as window_us
),

final as (
    select
        spec_rows.stage_model,
        spec_rows.mode,
        spec_rows.n_stages,
        spec_rows.window_us
    from spec_rows
)

select * from final
