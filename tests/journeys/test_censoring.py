"""Censoring: journeys still open at as_of are in progress, never dropouts."""

from datetime import datetime

from journeys import build, db
from journeys.config import Settings, StageModelRef

AS_OF = datetime(2026, 11, 1)


def build_recent_and_old(n: int):
    """n journeys reach consideration: half two days before as_of, half sixty days before."""
    con = db.connect()
    db.execute(
        con,
        """create table events as
           with j as (select range as i, case when range % 2 = 0 then 2 else 60 end as days_ago from range($n))
           select 'e' || i || '-' || k as event_id,
                  $as_of::timestamp - to_days(days_ago) + to_minutes(k) as occurred_at,
                  null::date as event_date, 'test' as source,
                  case k when 0 then 'ads' else 'email' end as channel,
                  case k when 0 then 'ad_click' else 'email_click' end as event_type,
                  case k when 0 then 'ads:ad_click' else 'email:email_click' end as touchpoint,
                  []::struct(id_type varchar, id_value varchar)[] as identifiers,
                  null::double as sentiment, null::decimal(18, 2) as revenue, '{}'::json as attributes,
                  'c' || i as customer_key
           from j, range(2) as r(k)""",
        {"n": n, "as_of": AS_OF},
    )
    db.execute(con, "create table int_event_customers as select event_id, customer_key from events")
    db.execute(con, "create table customers as select distinct customer_key, 0 as bucket from events")
    settings = Settings(stage_models=[StageModelRef(path="generic_lifecycle")])
    build.build_after_identity(con, build.run_context(settings, AS_OF))
    return con


def test_recent_journeys_are_in_progress_not_dropped():
    con = build_recent_and_old(200)
    row = db.fetch(
        con,
        "select journeys_entered, journeys_dropped, journeys_in_progress, journeys_converted"
        " from stage_conversion where stage_model = 'generic_lifecycle' and cohort = 'all'"
        " and breakdown = 'none' and stage_index = 2",
    )[0]
    assert row == (200, 100, 100, 0)
    closed = db.fetch(con, "select sum(journeys_dropped) from stage_dropout where stage_index = 2")[0][0]
    assert closed == 100
    survival = db.fetch(
        con,
        "select min(journeys_at_risk), max(journeys_at_risk), sum(journeys_converted), sum(journeys_censored)"
        " from stage_survival"
        " where stage_model = 'generic_lifecycle' and stage_index = 2",
    )[0]
    # Nobody converted: everyone is censored at as_of, the recent half after 2 days, the rest after 60.
    assert survival == (100, 200, 0, 200)


def test_a_journey_closed_at_stage_one_drops_out_at_stage_one():
    con = db.connect()
    db.execute(
        con,
        """create table events as
           select 'x1' as event_id, timestamp '2026-09-01 10:00' as occurred_at, date '2026-09-01' as event_date,
                  'test' as source, 'ads' as channel, 'ad_click' as event_type, 'ads:ad_click' as touchpoint,
                  []::struct(id_type varchar, id_value varchar)[] as identifiers, null::double as sentiment,
                  null::decimal(18, 2) as revenue, '{}'::json as attributes, 'X' as customer_key""",
    )
    db.execute(con, "create table int_event_customers as select event_id, customer_key from events")
    db.execute(con, "create table customers as select distinct customer_key, 0 as bucket from events")
    settings = Settings(stage_models=[StageModelRef(path="generic_lifecycle")])
    build.build_after_identity(con, build.run_context(settings, AS_OF))
    # idle 61 days at as_of (> 30d): closed at awareness without converting
    assert db.fetch(con, "select furthest_stage, is_closed, dropout_stage from journey_stages") == [(1, True, 1)]
    rows = db.fetch(con, "select stage_index, last_touchpoint, journeys_dropped, owner from stage_dropout")
    assert rows == [(1, "ads:ad_click", 1, "marketing")]
