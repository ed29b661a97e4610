"""int_journeys on inline rows: the last event's sentiment and the first event's attribute, nulls included."""

from datetime import datetime

from journeys import build, db
from journeys.config import Settings, StageModelRef

AS_OF = datetime(2026, 11, 1)


def test_last_sentiment_is_the_last_events_even_when_null_and_breakdown_the_first_events(make_settings):
    con = db.connect()
    db.execute(
        con,
        """create table events as
           select * from (values
               ('e0', timestamp '2026-10-01 09:00', 'web', 'page_view', -1.0, '{"plan": "basic"}'),
               ('e1', timestamp '2026-10-01 10:00', 'web', 'page_view', 0.5, '{}'),
               ('e2', timestamp '2026-10-01 11:00', 'web', 'page_view', null, '{}'),
               ('f1', timestamp '2026-10-02 10:00', 'web', 'page_view', null, '{}'),
               ('f2', timestamp '2026-10-02 11:00', 'call_centre', 'call', -0.5, '{"plan": "pro"}')
           ) as v(event_id, occurred_at, channel, event_type, sentiment, attributes)""",
    )
    db.execute(
        con,
        """create or replace table events as
           select event_id, occurred_at, occurred_at::date as event_date, 'test' as source, channel, event_type,
                  channel || ':' || event_type as touchpoint,
                  []::struct(id_type varchar, id_value varchar)[] as identifiers, sentiment::double as sentiment,
                  null::decimal(18, 2) as revenue, attributes::json as attributes,
                  case when event_id like 'e%' then 'E' else 'F' end as customer_key
           from events""",
    )
    db.execute(con, "create table int_event_customers as select event_id, customer_key from events")
    db.execute(con, "create table customers as select distinct customer_key, 0 as bucket from events")
    settings = make_settings(stage_models=[StageModelRef(path="generic_lifecycle")], breakdown_attribute="plan")
    assert isinstance(settings, Settings)
    build.build_models(con, build.run_context(settings, AS_OF), ["int_journey_events", "int_journeys"])
    rows = db.fetch(
        con,
        "select customer_key, last_sentiment, last_known_sentiment, breakdown_attribute from int_journeys order by 1",
    )
    # E's last event has no sentiment: last_sentiment is null, the last known one is e1's 0.5 (not e0's -1.0).
    # F's first event has no plan: its breakdown value is null, not the later event's 'pro'.
    assert rows == [("E", None, 0.5, "basic"), ("F", -0.5, -0.5, None)]


def test_a_journey_start_event_opens_a_new_journey_whatever_the_gap(make_settings, tmp_path):
    con = db.connect()
    db.execute(
        con,
        """create table events as
           select event_id, occurred_at, occurred_at::date as event_date, 'test' as source, 'web' as channel,
                  event_type, 'web:' || event_type as touchpoint,
                  []::struct(id_type varchar, id_value varchar)[] as identifiers, null::double as sentiment,
                  null::decimal(18, 2) as revenue, '{}'::json as attributes, 'T' as customer_key
           from (values
               ('t1', timestamp '2026-10-01 10:00', 'destination_search'),
               ('t2', timestamp '2026-10-01 11:00', 'page_view'),
               ('t3', timestamp '2026-10-01 12:00', 'destination_search'),
               ('t4', timestamp '2026-10-01 12:30', 'page_view')
           ) as v(event_id, occurred_at, event_type)""",
    )
    db.execute(con, "create table int_event_customers as select event_id, customer_key from events")
    db.execute(con, "create table customers as select distinct customer_key, 0 as bucket from events")
    for models_, want in (
        (["generic_lifecycle"], ["T/j0001"] * 4),  # no start events: one journey (gaps of an hour)
        (["generic_lifecycle", "travel"], ["T/j0001", "T/j0001", "T/j0002", "T/j0002"]),
    ):
        settings = make_settings(stage_models=[StageModelRef(path=m) for m in models_])
        build.build_models(con, build.run_context(settings, AS_OF), ["int_journey_events"])
        assert [r[0] for r in db.fetch(con, "select journey_id from int_journey_events order by event_id")] == want


def test_event_seq_and_next_event_stay_inside_each_journey(make_settings):
    # E has two journeys (a 61-day gap, over the 30-day journey_timeout); e2 and e3 share an instant (ties go
    # by event_id). Each journey numbers its own events from 1, and its last event has no next one.
    con = db.connect()
    db.execute(
        con,
        """create table events as
           select event_id, occurred_at, occurred_at::date as event_date, 'test' as source, 'web' as channel,
                  'page_view' as event_type, 'web:page_view' as touchpoint,
                  []::struct(id_type varchar, id_value varchar)[] as identifiers, null::double as sentiment,
                  null::decimal(18, 2) as revenue, '{}'::json as attributes, 'E' as customer_key
           from (values
               ('e1', timestamp '2026-08-01 10:00'),
               ('e3', timestamp '2026-08-01 11:00'),
               ('e2', timestamp '2026-08-01 11:00'),
               ('e4', timestamp '2026-10-01 10:00'),
               ('e5', timestamp '2026-10-01 12:00')
           ) as v(event_id, occurred_at)""",
    )
    db.execute(con, "create table int_event_customers as select event_id, customer_key from events")
    db.execute(con, "create table customers as select distinct customer_key, 0 as bucket from events")
    build.build_models(con, build.run_context(make_settings(), AS_OF), ["int_journey_events"])
    rows = db.fetch(
        con, "select event_id, journey_id, event_seq, next_event_at from int_journey_events order by event_id"
    )
    assert rows == [
        ("e1", "E/j0001", 1, datetime(2026, 8, 1, 11)),
        ("e2", "E/j0001", 2, datetime(2026, 8, 1, 11)),
        ("e3", "E/j0001", 3, None),
        ("e4", "E/j0002", 1, datetime(2026, 10, 1, 12)),
        ("e5", "E/j0002", 2, None),
    ]
