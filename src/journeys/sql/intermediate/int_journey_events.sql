-- model: int_journey_events
-- grain: event_id
-- materialized: table
-- partition: customer
-- publish: false
-- params: bucket, customer_keys, journey_start_events, journey_timeout_us, session_timeout_us
-- One row per event whose customer is known, with its journey and session.
-- The root of the customer partition: $bucket or $customer_keys (null = every customer) select whose
-- journeys a run builds, and every `partition: customer` model downstream follows.
with

-- The windows below sort what they carry: only the keys and the columns that decide journeys and sessions;
-- the event's other columns are joined after them.
lake_events as (
    select ev.event_id, ev.occurred_at, ev.event_type
    from events as ev
),

event_details as (
    select
        ed.event_id,
        ed.source,
        ed.channel,
        ed.touchpoint,
        ed.sentiment,
        ed.revenue,
        ed.attributes
    from events as ed
),

resolved_customers as (
    select ec.event_id, ec.customer_key
    from int_event_customers as ec
    where ec.customer_key is not null
),

customer_buckets as (
    -- customer_no: 64 bits of sha256(customer_key), as unique as the key itself (keys are 64-bit hashes), and
    -- independent of other customers, so an incremental run's journey keys agree with a full rebuild's.
    select cu.customer_key, cu.bucket, ('0x' || left(sha256(cu.customer_key), 16))::ubigint::hugeint as customer_no
    from customers as cu
),

resolved as (
    select
        le.*,
        rc.customer_key,
        cb.bucket,
        cb.customer_no
    from lake_events as le
    inner join resolved_customers as rc on rc.event_id = le.event_id
    inner join customer_buckets as cb on cb.customer_key = rc.customer_key
    where ($bucket::integer is null or cb.bucket = $bucket::integer)
        -- IN over the unnested list plans as a hash semi-join: an incremental run may name many customers.
        and (
            $customer_keys::varchar[] is null
            or rc.customer_key in (select unnest($customer_keys::varchar[]) as ck)
        )
),

gaps as (
    select
        r.*,
        row_number() over customer_order as customer_seq,
        epoch_us(r.occurred_at) - epoch_us(lag(r.occurred_at) over customer_order) as gap_us
    from resolved as r
    window customer_order as (partition by r.customer_key order by r.occurred_at, r.event_id)
),

breaks as (
    select
        g.*,
        -- A journey-start event (a stage model's journey_start_events) opens a new journey whatever the gap.
        coalesce(g.gap_us > $journey_timeout_us, true)
        or list_contains(cast($journey_start_events as varchar[]), g.event_type) as starts_journey,
        coalesce(g.gap_us > $session_timeout_us, true) as starts_session
    from gaps as g
),

-- Journeys are runs of a customer's events, so one more pass in the same order numbers the events inside
-- them and finds each one's next: no second sort by journey.
numbered as (
    select
        b.*,
        sum(b.starts_journey::integer) over customer_order as journey_no,
        sum(b.starts_session::integer) over customer_order as session_no,
        b.customer_seq - max(case when b.starts_journey then b.customer_seq end) over customer_order + 1 as event_seq,
        case
            when lead(b.starts_journey) over customer_order then null else lead(b.occurred_at) over customer_order
        end as next_event_at
    from breaks as b
    window customer_order as (
        partition by b.customer_key order by b.occurred_at, b.event_id rows unbounded preceding
    )
),

final as (
    select
        n.event_id,
        n.customer_key,
        n.bucket,
        n.customer_key || '/j' || lpad(n.journey_no::varchar, 4, '0') as journey_id,
        -- journey_key: an integer (HUGEINT) twin of journey_id, cheaper to join on; 2^24 journeys per customer
        case when n.journey_no < 16777216 then n.customer_no * 16777216 + n.journey_no
            else error('more than 2^24 journeys for one customer: journey_key would collide') end::hugeint
            as journey_key,
        n.customer_key || '/s' || lpad(n.session_no::varchar, 6, '0') as session_id,
        n.event_seq,
        n.next_event_at,
        n.occurred_at,
        n.occurred_at::date as event_date,
        ed.source,
        ed.channel,
        n.event_type,
        ed.touchpoint,
        ed.sentiment,
        ed.revenue,
        ed.attributes
    from numbered as n
    inner join event_details as ed on ed.event_id = n.event_id
)

select * from final
