-- model: stg_links
-- materialized: table
-- partition: none
-- publish: false
-- params: batch_id, ingested_at, source, source_file
-- procedure: ingest
-- one row per data row of ONE landing file of a `kind: links` source (read, not yet de-duplicated): the
-- identifiers the row links, hashed like those of events (by journeys.ingest's mapping), and for rows
-- that fail validation the quarantine field/column/reason. link_id is '<source>:' + sha256 of the sorted
-- identifiers, so a re-export of the same links is a duplicate and a changed one (a new e-mail) is a new link.
with

source_rows as (
    select * from stg_source_rows
),

hashed as (
    select
        sr.source_line,
        sr.reader_error,
        sr.reader_column,
        sr.identifier_reject,
        list_sort(list_filter(sr.src_identifiers, lambda i: i.id_value is not null)) as identifiers
    from source_rows as sr
),

validated as (
    select
        ha.*,
        case
            when ha.reader_error is not null
                then {'field': 'row', 'column': ha.reader_column, 'reason': ha.reader_error}
            -- Set by journeys.ingest for a phone it could not read; the reason never repeats the value.
            when ha.identifier_reject is not null
                then ha.identifier_reject
        end as reject
    from hashed as ha
),

final as (
    select
        $source || ':' || sha256(cast(to_json(va.identifiers) as varchar)) as link_id,
        cast($source as varchar) as source,
        va.identifiers,
        cast($ingested_at as timestamp) as ingested_at,
        cast($batch_id as varchar) as batch_id,
        cast($source_file as varchar) as source_file,
        va.source_line,
        -- One link per row, never skipped: ingest then accounts link rows as it accounts events.
        1 as event_index,
        false as skipped,
        va.reject.field as reject_field,
        va.reject.column as reject_column,
        va.reject.reason as reject_reason
    from validated as va
)

select * from final
