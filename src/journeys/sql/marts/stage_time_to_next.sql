-- model: stage_time_to_next
-- grain: stage_model, mode, stage_index, bucket_index
-- materialized: table
-- partition: none
-- publish: true
-- One row per (stage model, mode, stage, time bucket): how long converters took from reaching a
-- stage to reaching the next, as a histogram with fixed, labelled buckets.
with

reached as (
    select * from int_stage_transitions
),

buckets as (
    select b.*
    from (
        values
        (1, '< 1h', 0, 3600),
        (2, '1h-1d', 3600, 86400),
        (3, '1-3d', 86400, 259200),
        (4, '3-7d', 259200, 604800),
        (5, '7-14d', 604800, 1209600),
        (6, '14-30d', 1209600, 2592000),
        (7, '>= 30d', 2592000, null)
    ) as b (bucket_index, bucket_label, lower_s, upper_s)
),

transitions as (
    select
        r1.stage_model,
        r1.mode,
        r1.stage_index,
        epoch(r1.next_reached_at) - epoch(r1.reached_at) as seconds_to_next
    from reached as r1
    where r1.next_reached_at is not null
),

bucketed as (
    select
        t.stage_model,
        t.mode,
        t.stage_index,
        b.bucket_index,
        b.bucket_label,
        b.lower_s,
        b.upper_s,
        count(*) as journeys_converted
    from transitions as t
    inner join buckets as b
        on b.lower_s <= t.seconds_to_next and (b.upper_s is null or b.upper_s > t.seconds_to_next)
    group by all
),

final as (
    select
        bk.stage_model,
        bk.mode,
        bk.stage_index,
        sd.stage_name,
        bk.bucket_index,
        bk.bucket_label,
        bk.lower_s,
        bk.upper_s,
        bk.journeys_converted,
        bk.journeys_converted / sum(bk.journeys_converted) over (
            partition by bk.stage_model, bk.mode, bk.stage_index
        ) as share
    from bucketed as bk
    inner join stage_definitions as sd on sd.stage_model = bk.stage_model and sd.stage_index = bk.stage_index
)

select * from final
