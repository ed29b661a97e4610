"""Journey, stage and mart models against the hand-worked golden case in tests/golden/small_funnel."""

from datetime import datetime
from pathlib import Path

import pytest
from golden_compare import assert_matches_golden

from journeys import build, db
from journeys.config import Settings, StageModelRef

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "small_funnel"
AS_OF = datetime(2026, 10, 31)


def load_golden_inputs(con) -> None:
    """events, int_event_customers and customers tables from the golden events.csv."""
    db.execute(
        con,
        "create table golden as select * from read_csv($path, header = true, all_varchar = true)",
        {"path": str(GOLDEN / "events.csv")},
    )
    db.execute(
        con,
        """create table events as select event_id, occurred_at::timestamp as occurred_at,
            occurred_at::date as event_date, 'golden' as source, channel, event_type, touchpoint,
            []::struct(id_type varchar, id_value varchar)[] as identifiers, sentiment::double as sentiment,
            null::decimal(18, 2) as revenue, attributes::json as attributes from golden""",
    )
    db.execute(con, "create table int_event_customers as select event_id, customer_key from golden")
    db.execute(con, "create table customers as select distinct customer_key, 0 as bucket from golden")


def build_golden(settings: Settings):
    """A connection holding every model built from the golden inputs with `settings`."""
    con = db.connect()
    load_golden_inputs(con)
    build.build_after_identity(con, build.run_context(settings, AS_OF))
    return con


@pytest.fixture(scope="module")
def built():
    return build_golden(
        Settings(stage_models=[StageModelRef(path="generic_lifecycle", modes=["ordered", "any_order"])])
    )


def test_journeys_match_golden(built):
    assert_matches_golden(built, "small_funnel", "journeys", order_by="journey_id")


def test_stage_conversion_matches_golden(built):
    assert_matches_golden(
        built,
        "small_funnel",
        "stage_conversion",
        where="stage_model = 'generic_lifecycle' and mode = 'ordered' and cohort = 'all' and breakdown = 'none'",
        order_by="stage_index",
    )


def test_cohorts_and_breakdowns_sum_to_the_total(built):
    rows = db.fetch(
        built,
        """select breakdown, cohort_period, stage_index, sum(journeys_entered)
           from stage_conversion where stage_model = 'generic_lifecycle' and mode = 'ordered'
           group by all order by all""",
    )
    totals = {(b, c, s): n for b, c, s, n in rows}
    for (b, c, s), n in totals.items():
        assert n == totals[("none", "all", s)], (b, c, s)
    cohorts = db.fetch(built, "select distinct cohort from stage_conversion where cohort_period = 'month'")
    assert sorted(c for (c,) in cohorts) == ["2026-08-01", "2026-09-01", "2026-10-01"]


def test_any_order_counts_highest_stage_seen(built):
    got = dict(
        db.fetch(
            built,
            "select journey_id, furthest_stage from journey_stages where mode = 'any_order' order by 1",
        )
    )
    # C has consideration and purchase but no awareness: any_order still sees purchase.
    assert got["C/j0001"] == 3
    assert got["E/j0001"] == 3
    assert got["A/j0001"] == 4


def test_stage_dropout_names_the_last_touchpoint_and_owner(built):
    rows = db.fetch(
        built,
        "select stage_index, last_touchpoint, last_channel, journeys_dropped, share_of_stage_dropouts, owner"
        " from stage_dropout where mode = 'ordered'",
    )
    assert rows == [(2, "email:email_click", "email", 3, 1.0, "ecommerce")]


def test_sessions_split_on_gaps_longer_than_the_timeout(built):
    rows = db.fetch(
        built, "select event_id, session_id, event_seq from journey_events where customer_key = 'A' order by 3"
    )
    assert [r[1] for r in rows] == ["A/s000001"] * 3 + ["A/s000002"]


def test_event_stage_mapping_uses_attributes_and_first_match(built):
    stages = dict(db.fetch(built, "select event_id, stage_index from journey_events where stage_index is not null"))
    assert "f2" not in stages  # page_view on the home page matches no stage
    assert stages["a3"] == 3 and stages["d5"] == 5


def test_stage_channel_matrix_flags_designed_channels(built):
    rows = db.fetch(
        built,
        "select channel, is_designed_channel from stage_channel_matrix"
        " where stage_model = 'generic_lifecycle' and stage_index = 3 order by channel",
    )
    assert rows == [("store", True), ("web", True)]


def test_journey_stage_path_collapses_repeats(built):
    path = db.fetch(built, "select stage_path from journeys where journey_id = 'E/j0001'")[0][0]
    assert path == ["purchase", "awareness", "consideration"]


def test_kaplan_meier_matches_hand_computed_curve(built):
    rows = db.fetch(
        built,
        "select stage_index, t_days, journeys_at_risk, journeys_converted, journeys_censored, survival"
        " from stage_survival"
        " where stage_model = 'generic_lifecycle' and mode = 'ordered' and stage_index <= 2 order by 1, 2",
    )
    # Stage 1: D converts at once, A/B1/E/F within a day, B2 is still open after 10d16h (censored at 11).
    # Stage 2: D at once, A within a day; B1, E and F closed without converting, censored at as_of.
    want = [
        (1, 0, 6, 1, 0, 5 / 6),
        (1, 1, 5, 4, 0, 1 / 6),
        (1, 11, 1, 0, 1, 1 / 6),
        (2, 0, 5, 1, 0, 4 / 5),
        (2, 1, 4, 1, 0, 3 / 5),
        (2, 45, 3, 0, 1, 3 / 5),
        (2, 49, 2, 0, 1, 3 / 5),
        (2, 90, 1, 0, 1, 3 / 5),
    ]
    assert [r[:5] for r in rows] == [w[:5] for w in want]
    assert [r[5] for r in rows] == pytest.approx([w[5] for w in want])


def test_survival_follows_every_stage_but_the_last(built):
    # D reached renewal, the last stage: it has no next stage, so no curve (stages 1 to 4 do)
    rows = db.fetch(built, "select distinct stage_index from stage_survival where mode = 'ordered' order by 1")
    assert rows == [(1,), (2,), (3,), (4,)]


def test_time_to_next_histogram_buckets_converters(built):
    rows = db.fetch(
        built,
        "select bucket_label, journeys_converted from stage_time_to_next"
        " where stage_model = 'generic_lifecycle' and mode = 'ordered' and stage_index = 1 order by bucket_index",
    )
    assert rows == [("< 1h", 2), ("1-3d", 3)]


@pytest.fixture(scope="module")
def built_open():
    return build_golden(
        Settings(
            stage_models=[StageModelRef(path="generic_lifecycle", modes=["ordered", "open"], conversion_window="30d")]
        )
    )


def test_open_mode_enters_at_the_lowest_stage(built_open):
    rows = db.fetch(
        built_open,
        "select mode, journey_id, entry_stage, furthest_stage from journey_stages"
        " where journey_id in ('A/j0001', 'C/j0001') order by all",
    )
    # C has consideration and purchase but no awareness: closed never enters, open enters at 2
    assert rows == [
        ("open", "A/j0001", 1, 4),
        ("open", "C/j0001", 2, 3),
        ("ordered", "A/j0001", 1, 4),
        ("ordered", "C/j0001", None, 0),
    ]
    conv = db.fetch(
        built_open,
        "select stage_index, journeys_entered, journeys_converted, conversion_from_start from stage_conversion"
        " where mode = 'open' and cohort = 'all' and breakdown = 'none' order by stage_index",
    )
    # closed counts (6, 5, 2, 2, 1) plus C entering at 2 and converting to 3
    assert [r[:3] for r in conv] == [(1, 6, 5), (2, 6, 3), (3, 3, 2), (4, 2, 1), (5, 1, None)]
    assert conv[1][3] == pytest.approx(6 / 7)


def test_first_touchpoint_breakdown_sums_to_the_total(built_open):
    rows = dict(
        db.fetch(
            built_open,
            "select breakdown, sum(journeys_entered) from stage_conversion"
            " where mode = 'ordered' and cohort = 'all' and stage_index = 1 group by all",
        )
    )
    assert rows["first_touchpoint"] == rows["none"] == 6


def test_time_budget_shares_of_converters(built_open):
    rows = db.fetch(
        built_open,
        "select stage_index, time_budget_s, journeys_converted, journeys_within_budget, share_within_budget"
        " from stage_conversion where mode = 'ordered' and cohort = 'all' and breakdown = 'none'"
        " order by stage_index",
    )
    # every converter of the golden case is within the generic lifecycle's budgets (14d, 14d, 7d, 30d)
    assert rows == [
        (1, 14 * 86400.0, 5, 5, 1.0),
        (2, 14 * 86400.0, 2, 2, 1.0),
        (3, 7 * 86400.0, 2, 2, 1.0),
        (4, 30 * 86400.0, 1, 1, 1.0),
        (5, 30 * 86400.0, None, None, None),
    ]
    over = db.fetch(built_open, "select count(*) from journey_stages where len(stages_over_budget) > 0")
    assert over == [(0,)]


def test_stages_over_budget_lists_slow_transitions():
    settings = Settings(stage_models=[StageModelRef(path="generic_lifecycle")])
    con = db.connect()
    load_golden_inputs(con)
    context = build.run_context(settings, AS_OF)
    # int_journey_stages lists the stages over budget, stage_conversion the budget shares: built after the edit
    after = {"int_journey_stages", *context.catalog.downstream(["int_journey_stages"])}
    build.build_models(con, context, [n for n in build.after_identity(context.catalog) if n not in after])
    # shrink the awareness budget to one hour: B1, E and F took a day from awareness to consideration,
    # A ten minutes and D no time at all
    db.execute(con, "update stage_definitions set time_budget_us = 3600000000 where stage_index = 1")
    build.build_models(con, context, sorted(after))
    rows = db.fetch(con, "select journey_id from journey_stages where list_contains(stages_over_budget, 1) order by 1")
    assert [r[0] for r in rows] == ["B/j0001", "E/j0001", "F/j0001"]
    share = db.fetch(
        con,
        "select share_within_budget from stage_conversion"
        " where stage_index = 1 and cohort = 'all' and breakdown = 'none'",
    )
    assert share == [(2 / 5,)]
