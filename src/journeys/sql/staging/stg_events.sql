-- model: stg_events
-- materialized: table
-- partition: none
-- publish: false
-- params: batch_id, channel_keys, channel_values, event_id_column, event_type_keys, event_type_values, ingested_at, max_occurred_at, min_occurred_at, revenue_column, sentiment_column, sentiment_scale, source, source_file, timestamp_format, timezone, touchpoint_keys, touchpoint_values
-- procedure: ingest
-- one row per event of each data row of ONE landing file (read, not yet de-duplicated; one event per row
-- unless the source lists several `events`), carrying the canonical event columns, whether an optional
-- event was skipped (empty time), for events that fail validation the quarantine field/column/reason,
-- and held_back for a valid event later than the run's limit (as_of + max_future).
-- Macro journeys_snake comes from journeys.ingest, journeys_redact from journeys.pii (static SQL, no
-- values): a reason may quote a safe column's value, never an e-mail or phone in it. Identifier values
-- arrive normalised and hashed (journeys.ingest's mapping, macro journeys_identifier): empty ones are dropped.
with

source_rows as (
    select * from stg_source_rows
),

texts as (
    select
        *,
        nullif(trim(src_event_id), '') as event_id_text,
        nullif(trim(src_occurred_at), '') as occurred_text,
        nullif(trim(src_revenue), '') as revenue_text,
        nullif(trim(src_sentiment), '') as sentiment_text,
        -- An optional event with no time did not happen: skipped, neither loaded nor quarantined.
        reader_error is null and event_optional and nullif(trim(src_occurred_at), '') is null as is_skipped
    from source_rows
),

timestamps as (
    select
        *,
        -- A declared format is applied first; its result (naive or offset-aware) is rendered back to
        -- text so that both paths below share one time-zone rule. A native Parquet timestamp needs none.
        case
            when $timestamp_format is null or occurred_native then occurred_text
            else cast(try_strptime(occurred_text, $timestamp_format) as varchar)
        end as occurred_iso
    from texts
),

converted as (
    select
        *,
        case
            -- DuckDB accepts any two-digit offset (+99:99); no real one is more than 14 hours.
            when regexp_matches(
                    occurred_iso, '\d:\d{2}(:\d{2}(\.\d+)?)?\s*[+-]((1[5-9]|[2-9]\d)(:?\d{2})?|\d{2}:?[6-9]\d)$'
                )
                then null
            -- An offset, or a zone name (America/New_York, EST): a plain timestamp cast would drop the
            -- name and read the time in the source's zone; an unknown name gives null (quarantined).
            when regexp_matches(
                    occurred_iso,
                    '\d:\d{2}(:\d{2}(\.\d+)?)?\s*([zZ]|UTC|[+-]\d{2}(:?\d{2})?'
                    || '|\s[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*)$'
                )
                then timezone('UTC', try_cast(occurred_iso as timestamptz))
            -- Naive times are wall-clock times in the source's zone.
            else timezone('UTC', timezone($timezone, try_cast(occurred_iso as timestamp)))
        end as occurred_utc,
        try_cast(revenue_text as decimal(18, 2)) as revenue_value,
        try_cast(sentiment_text as double) as sentiment_raw
    from timestamps
),

mapped as (
    select
        *,
        coalesce(
            list_extract(
                cast($channel_values as varchar[]),
                list_position(cast($channel_keys as varchar[]), trim(src_channel))
            ),
            list_extract(
                cast($channel_values as varchar[]),
                list_position(cast($channel_keys as varchar[]), journeys_snake(src_channel))
            ),
            nullif(journeys_snake(src_channel), '')
        ) as channel_value,
        coalesce(
            list_extract(
                cast($event_type_values as varchar[]),
                list_position(cast($event_type_keys as varchar[]), trim(src_event_type))
            ),
            list_extract(
                cast($event_type_values as varchar[]),
                list_position(cast($event_type_keys as varchar[]), journeys_snake(src_event_type))
            ),
            nullif(journeys_snake(src_event_type), '')
        ) as event_type_value,
        coalesce(
            list_extract(
                cast($touchpoint_values as varchar[]),
                list_position(cast($touchpoint_keys as varchar[]), trim(src_touchpoint))
            ),
            list_extract(
                cast($touchpoint_values as varchar[]),
                list_position(cast($touchpoint_keys as varchar[]), journeys_snake(src_touchpoint))
            ),
            nullif(journeys_snake(src_touchpoint), '')
        ) as touchpoint_value,
        case coalesce($sentiment_scale, 'unit')
            when 'csat_1_5' then (sentiment_raw - 3) / 2
            when 'stars_1_5' then (sentiment_raw - 3) / 2
            when 'nps_0_10' then (sentiment_raw - 5) / 5
            when 'stars_1_10' then (sentiment_raw - 5.5) / 4.5
            else sentiment_raw
        end as sentiment_value
    from converted
),

validated as (
    select
        *,
        -- First failing check wins; the reason says what was expected and what was found.
        case
            when reader_error is not null
                then {'field': 'row', 'column': reader_column, 'reason': reader_error}
            when $event_id_column is not null and event_id_text is null
                then {
                    'field': 'event_id',
                    'column': $event_id_column,
                    'reason': format(
                        'event_id: expected a value in column ''{}'', got an empty value', $event_id_column
                    )
                }
            when is_skipped
                then null
            when occurred_text is null
                then {
                    'field': 'occurred_at',
                    'column': occurred_column,
                    'reason': format(
                        'occurred_at: expected a timestamp in column ''{}'', got an empty value', occurred_column
                    )
                }
            when occurred_utc is null
                then {
                    'field': 'occurred_at',
                    'column': occurred_column,
                    'reason': format(
                        'occurred_at: expected timestamp ''{}'', got ''{}''',
                        case when occurred_native then 'ISO 8601' else coalesce($timestamp_format, 'ISO 8601') end,
                        journeys_redact(left(occurred_text, 100))
                    )
                }
            when occurred_utc < $min_occurred_at
                then {
                    'field': 'occurred_at',
                    'column': occurred_column,
                    'reason': format(
                        'occurred_at: {} UTC is before the earliest plausible time {}', occurred_utc, $min_occurred_at
                    )
                }
            when channel_value is null
                then {'field': 'channel', 'column': null, 'reason': 'channel: expected a value, got an empty value'}
            when event_type_value is null
                then {
                    'field': 'event_type',
                    'column': null,
                    'reason': 'event_type: expected a value, got an empty value'
                }
            when revenue_text is not null and revenue_value is null
                then {
                    'field': 'revenue',
                    'column': $revenue_column,
                    'reason': format(
                        'revenue: expected a decimal number (18,2), got ''{}''',
                        journeys_redact(left(revenue_text, 100))
                    )
                }
            when sentiment_text is not null and sentiment_raw is null
                then {
                    'field': 'sentiment',
                    'column': $sentiment_column,
                    'reason': format(
                        'sentiment: expected a number, got ''{}''', journeys_redact(left(sentiment_text, 100))
                    )
                }
            when sentiment_value not between -1 and 1
                then {
                    'field': 'sentiment',
                    'column': $sentiment_column,
                    'reason': format(
                        'sentiment: expected a {} score, got ''{}''',
                        coalesce($sentiment_scale, 'unit'),
                        journeys_redact(sentiment_text)
                    )
                }
            -- Set by journeys.ingest for a phone it could not read; the reason never repeats the value.
            when identifier_reject is not null
                then identifier_reject
        end as reject
    from mapped
),

final as (
    select
        -- A row with several events gives each its event type as the id's last part: <source>:<id>:<type>.
        $source || ':' || coalesce(va.event_id_text, va.row_hash) || coalesce(':' || va.event_suffix, '') as event_id,
        va.occurred_utc as occurred_at,
        cast(va.occurred_utc as date) as event_date,
        cast($source as varchar) as source,
        va.channel_value as channel,
        va.event_type_value as event_type,
        coalesce(va.touchpoint_value, va.channel_value || ':' || va.event_type_value) as touchpoint,
        list_filter(va.src_identifiers, lambda i: i.id_value is not null) as identifiers,
        va.sentiment_value as sentiment,
        va.revenue_value as revenue,
        va.attributes,
        cast($ingested_at as timestamp) as ingested_at,
        cast($batch_id as varchar) as batch_id,
        cast($source_file as varchar) as source_file,
        va.source_line,
        va.event_index,
        va.is_skipped as skipped,
        va.reject.field as reject_field,
        va.reject.column as reject_column,
        va.reject.reason as reject_reason,
        -- A valid row later than the run's limit is not wrong, only early: journeys.ingest holds it back
        -- (state/held/) until a run's as_of passes it; it is never quarantined for its time.
        coalesce(va.reject is null and va.occurred_utc > $max_occurred_at, false) as held_back
    from validated as va
)

select * from final
