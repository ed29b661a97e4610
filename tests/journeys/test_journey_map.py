"""The journey-map marts against the hand-worked golden case in tests/golden/journey_map (see its README)."""

from datetime import datetime
from pathlib import Path

import pytest
from golden_compare import assert_matches_golden

from journeys import build, db
from journeys.config import RedPointsConfig, Settings, StageModelRef

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "journey_map"
AS_OF = datetime(2026, 10, 31)
COSTS = {"call_centre": 6.5, "chat": 2.0, "store": 4.0}


def build_map(events: str = "events.csv", **overrides) -> object:
    """A connection holding every model built from golden events with generic_lifecycle (ordered)."""
    con = db.connect()
    db.execute(
        con,
        "create table golden as select * from read_csv($path, header = true, all_varchar = true)",
        {"path": str(GOLDEN / events)},
    )
    db.execute(
        con,
        """create table events as select event_id, occurred_at::timestamp as occurred_at,
            occurred_at::date as event_date, 'golden' as source, channel, event_type, touchpoint,
            []::struct(id_type varchar, id_value varchar)[] as identifiers, sentiment::double as sentiment,
            revenue::decimal(18, 2) as revenue, attributes::json as attributes from golden""",
    )
    db.execute(con, "create table int_event_customers as select event_id, customer_key from golden")
    db.execute(con, "create table customers as select distinct customer_key, 0 as bucket from golden")
    settings = Settings(stage_models=[StageModelRef(path="generic_lifecycle")], costs=COSTS, **overrides)
    build.build_after_identity(con, build.run_context(settings, AS_OF))
    return con


EVENTS_HEADER = "event_id,customer_key,occurred_at,channel,event_type,touchpoint,sentiment,revenue,attributes"
PRODUCT_PAGE = '"{""page_type"": ""product""}"'
"""The attributes that make a page_view a generic_lifecycle consideration event."""


def events_file(tmp_path: Path, name: str, rows: list[str]) -> str:
    """An events CSV in the golden case's columns, for build_map: `rows` are its lines after the header."""
    path = tmp_path / name
    path.write_text("\n".join([EVENTS_HEADER, *rows]) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def built():
    return build_map()


def test_stage_channel_matrix_flow_and_money_match_the_hand_computation(built):
    assert_matches_golden(
        built,
        "journey_map",
        "stage_channel_matrix",
        where="stage_model = 'generic_lifecycle'",
        order_by="stage_index, channel",
    )


def test_configured_customer_value_replaces_the_mean():
    con = build_map(customer_value=10.0)
    rows = db.fetch(
        con,
        "select avg_customer_value, monetised_value from stage_channel_matrix"
        " where stage_index = 2 and channel = 'chat'",
    )
    # 2 customers x P = 1/2 x 10 - 2 contacts x 2.0
    assert rows == [(10.0, 6.0)]


def test_channel_transitions_match_hand_counted_transitions(built):
    assert_matches_golden(
        built,
        "journey_map",
        "channel_transitions",
        where="stage_model = 'generic_lifecycle'",
        order_by="stage_index, from_channel, to_channel",
    )


def test_a_transition_leaves_from_the_last_event_of_the_stage_before_the_arrival(tmp_path):
    # Two awareness events (ads, then social an hour later) before the first consideration event: the
    # transition leaves from social, the later one, and its delay runs from it.
    events = events_file(
        tmp_path,
        "two_awareness_events.csv",
        [
            "v1,V,2026-09-01 10:00:00,ads,ad_click,ads:ad_click,,,{}",
            "v2,V,2026-09-01 11:00:00,social,social_engagement,social:social_engagement,,,{}",
            f"v3,V,2026-09-01 12:00:00,web,page_view,web:page_view,,,{PRODUCT_PAGE}",
        ],
    )
    con = build_map(events)
    rows = db.fetch(con, "select stage_index, from_channel, to_channel, median_delay_s from channel_transitions")
    assert rows == [(1, "social", "web", 3600.0)]


def test_touchpoint_performance_matches_the_hand_computation(built):
    assert_matches_golden(
        built,
        "journey_map",
        "touchpoint_performance",
        where="stage_model = 'generic_lifecycle'",
        order_by="stage_index, touchpoint",
    )


def test_handoffs_match_the_hand_computation(built):
    assert_matches_golden(
        built, "journey_map", "handoffs", where="stage_model = 'generic_lifecycle'", order_by="from_owner, to_owner"
    )


def test_red_points_match_the_hand_computation():
    # min_count 2 and z 0.5 make the tiny case judgeable; min_lift 1.6 leaves out chat at stage 2 (lift 1.5)
    con = build_map(red_points={"min_count": 2, "z": 0.5, "min_lift": 1.6})
    assert_matches_golden(
        con, "journey_map", "red_points", where="stage_model = 'generic_lifecycle'", order_by="red_rank"
    )


def test_red_points_at_the_default_thresholds_flag_nothing_in_a_tiny_case(built):
    assert db.fetch(built, "select count(*) from red_points") == [(0,)]


def test_demo_summary_prints_the_matrix_with_flow_and_the_red_points(built, capsys):
    from pipelines.cli import print_journey_map

    print_journey_map(built, "generic_lifecycle")
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("channel"))
    assert header.split() == ["channel", "awareness", "consideration", "purchase", "use_service", "renewal"]
    web = next(line for line in out.splitlines() if line.startswith("web "))
    # web: consideration 3 customers, 2 moved on; purchase 2, none moved on; renewal 1 (last stage: no flow)
    assert web.split() == ["web", "3", "(67%)", "2", "(0%)", "1"]
    assert out.rstrip().endswith("none")  # no red point at the default thresholds


def test_journey_gaps_match_the_hand_computation(built):
    assert_matches_golden(
        built, "journey_map", "journey_gaps", where="stage_model = 'generic_lifecycle'", order_by="stage_index"
    )


def test_conformance_score_is_the_share_of_steps_that_follow_the_design(built):
    got = dict(db.fetch(built, "select journey_id, conformance_score from journey_stages order by 1"))
    assert got == pytest.approx(
        {"P/j0001": 1.0, "Q/j0001": 0.75, "R/j0001": 2 / 3, "S/j0001": 1.0, "T/j0001": 1.0, "U/j0001": 0.5}
    )


def test_a_journey_that_buys_before_considering_skips_and_goes_back():
    con = build_map("events_back.csv")
    rows = db.fetch(
        con,
        "select stage_index, journeys_skipped, journeys_went_back from journey_gaps where stage_index <= 2"
        " order by stage_index",
    )
    assert rows == [(1, 0, 0), (2, 1, 1)]
    assert db.fetch(con, "select conformance_score from journey_stages") == [(pytest.approx(1 / 3),)]


def test_journey_paths_match_the_hand_computation(built):
    assert_matches_golden(
        built,
        "journey_map",
        "journey_paths",
        where="stage_model = 'generic_lifecycle' and not (path_type = 'touchpoint' and repeats_collapsed)",
        order_by="path_type, repeats_collapsed, path_rank",
    )
    # no touchpoint repeats back to back in the golden case: collapsing changes nothing
    same = db.fetch(
        built,
        "select count(*) from (select step_path, journeys from journey_paths where path_type = 'touchpoint'"
        " group by all having count(*) = 2)",
    )
    assert same == [(6,)]


def test_a_repeated_touchpoint_is_one_step_of_the_collapsed_touchpoint_path(tmp_path):
    events = events_file(
        tmp_path,
        "repeated_page_view.csv",
        [
            "v1,V,2026-09-01 10:00:00,ads,ad_click,ads:ad_click,,,{}",
            f"v2,V,2026-09-01 11:00:00,web,page_view,web:page_view,,,{PRODUCT_PAGE}",
            f"v3,V,2026-09-01 11:05:00,web,page_view,web:page_view,,,{PRODUCT_PAGE}",
            "v4,V,2026-09-01 11:10:00,web,purchase,web:purchase,,20.00,{}",
        ],
    )
    con = build_map(events)
    rows = db.fetch(
        con,
        "select repeats_collapsed, step_path, n_steps from journey_paths where path_type = 'touchpoint' order by 1",
    )
    assert rows == [
        (False, "ads:ad_click > web:page_view > web:page_view > web:purchase", 4),
        (True, "ads:ad_click > web:page_view > web:purchase", 3),
    ]


def test_journey_paths_and_stage_neighbours_keep_the_top_paths_only():
    con = build_map(top_paths=2)
    rows = db.fetch(con, "select path_type, repeats_collapsed, max(path_rank) from journey_paths group by all")
    assert {r[2] for r in rows} == {2}
    # consideration has four distinct steps before it and three after it (expected_stage_neighbours): two stay
    ranks = db.fetch(
        con,
        "select direction, list(neighbour_rank order by neighbour_rank) from stage_neighbours"
        " where stage_model = 'generic_lifecycle' and stage_index = 2 group by direction order by direction",
    )
    assert [r for _, r in ranks] == [[1, 2], [1, 2]]


def test_stage_neighbours_match_the_hand_computation(built):
    assert_matches_golden(
        built,
        "journey_map",
        "stage_neighbours",
        where="stage_model = 'generic_lifecycle' and stage_index in (2, 3)",
        order_by="stage_index, direction, neighbour_rank",
    )


def test_stage_dropout_owner_is_the_last_touchpoints_before_the_stages(built):
    rows = db.fetch(
        built,
        "select stage_index, last_touchpoint, journeys_dropped, share_of_stage_dropouts, mean_last_sentiment, owner"
        " from stage_dropout where stage_model = 'generic_lifecycle' order by stage_index, last_touchpoint",
    )
    # R's last event r3 is chat:chat_message, owned by sales although consideration is ecommerce's; T's t2,
    # Q's q4 and P's p4 have no touchpoint owner of their own (call_centre:call is customer_service's anyway)
    assert rows == [
        (2, "chat:chat_message", 1, 0.5, 0.0, "sales"),
        (2, "web:add_to_cart", 1, 0.5, None, "ecommerce"),
        (3, "web:renewal_purchase", 1, 1.0, None, "sales"),
        (4, "call_centre:call", 1, 1.0, -0.5, "customer_service"),
    ]


OVERLAP_MODEL = """
name: overlap
version: 1
stages:
  - name: browse
    rules:
      - event_type: [page_view, search]
    touchpoint_owners: {"web:page_view": zeta_team, "web:search": alpha_team}
  - name: buy
    rules:
      - event_type: [page_view, purchase]
    owner: sales
"""


@pytest.fixture(scope="module")
def overlap(tmp_path_factory):
    """A model whose stages both match page_view, whose first stage has no owner, and three events of one journey."""
    model = tmp_path_factory.mktemp("overlap") / "overlap.yaml"
    model.write_text(OVERLAP_MODEL, encoding="utf-8")
    con = db.connect()
    db.execute(
        con,
        """create table events as
           select event_id, occurred_at, occurred_at::date as event_date, 'test' as source, 'web' as channel,
                  event_type, 'web:' || event_type as touchpoint,
                  []::struct(id_type varchar, id_value varchar)[] as identifiers, null::double as sentiment,
                  null::decimal(18, 2) as revenue, '{}'::json as attributes, 'V' as customer_key
           from (values
               ('v1', timestamp '2026-10-01 10:00', 'page_view'),
               ('v2', timestamp '2026-10-01 10:05', 'search'),
               ('v3', timestamp '2026-10-01 10:10', 'purchase')
           ) as v(event_id, occurred_at, event_type)""",
    )
    db.execute(con, "create table int_event_customers as select event_id, customer_key from events")
    db.execute(con, "create table customers as select distinct customer_key, 0 as bucket from events")
    settings = Settings(stage_models=[StageModelRef(path=str(model))])
    build.build_after_identity(con, build.run_context(settings, AS_OF))
    return con


def test_an_event_matching_two_stages_takes_the_first(overlap):
    rows = db.fetch(overlap, "select event_id, stage_index from journey_events order by event_id")
    assert rows == [("v1", 1), ("v2", 1), ("v3", 2)]


def test_a_cell_counts_journeys_once_and_without_a_stage_owner_takes_its_touchpoint_owners(overlap):
    rows = db.fetch(
        overlap,
        "select stage_index, events_in_cell, journeys_in_cell, journeys_moved_on, customers_moved_on, owner"
        " from stage_channel_matrix order by stage_index",
    )
    # browse/web: v1 and v2, one journey that moved on; its owners tie at one event each: the first by name
    assert rows == [(1, 2, 1, 1, 1, "alpha_team"), (2, 1, 1, None, None, "sales")]


def test_a_stage_without_designed_channels_has_no_off_design_figures(overlap):
    # The overlap model designs no channel for either stage: "off design" has no meaning there (null, not 0).
    rows = db.fetch(
        overlap,
        "select stage_index, journeys_at_stage, journeys_off_design_channel, share_off_design_channel"
        " from journey_gaps order by stage_index",
    )
    assert rows == [(1, 1, None, None), (2, 1, None, None)]


def test_a_cell_owner_tie_among_many_owners_goes_to_the_first_by_name(tmp_path):
    # Forty touchpoints of one cell, one event each, owned by forty teams named out of order: the owner is the
    # first name, not whichever tied team the aggregation happens to meet first.
    names = [f"team_{(7 * i) % 40:02}" for i in range(40)]
    owners = ", ".join(f'"web:e{i:02}": {name}' for i, name in enumerate(names))
    model = tmp_path / "many_owners.yaml"
    model.write_text(
        "name: many_owners\nversion: 1\nstages:\n"
        f"  - name: browse\n    rules:\n      - channel: [web]\n    touchpoint_owners: {{{owners}}}\n"
        "  - name: buy\n    rules:\n      - event_type: [purchase]\n    owner: sales\n",
        encoding="utf-8",
    )
    con = db.connect()
    db.execute(
        con,
        """create table events as
           select 'ev' || lpad(i::varchar, 2, '0') as event_id,
                  timestamp '2026-10-01 10:00' + to_minutes(i) as occurred_at,
                  (timestamp '2026-10-01 10:00' + to_minutes(i))::date as event_date, 'test' as source,
                  'web' as channel, 'e' || lpad(i::varchar, 2, '0') as event_type,
                  'web:e' || lpad(i::varchar, 2, '0') as touchpoint,
                  []::struct(id_type varchar, id_value varchar)[] as identifiers, null::double as sentiment,
                  null::decimal(18, 2) as revenue, '{}'::json as attributes, 'C' || (i % 7)::varchar as customer_key
           from range(40) as r(i)""",
    )
    db.execute(con, "create table int_event_customers as select event_id, customer_key from events")
    db.execute(con, "create table customers as select distinct customer_key, 0 as bucket from events")
    build.build_after_identity(con, build.run_context(Settings(stage_models=[StageModelRef(path=str(model))]), AS_OF))
    assert db.fetch(con, "select stage_index, events_in_cell, owner from stage_channel_matrix") == [(1, 40, "team_00")]


def test_negative_sentiment_red_points_count_only_negative_readings_and_tie_on_the_unit(tmp_path):
    # Stage 2 (consideration, product page views) in 50 touchpoints of 10 readings each: 30 chat touchpoints
    # all negative, 20 web ones all neutral (0, not negative). The stage's negative share is 300/500 = 0.6;
    # each chat touchpoint is 10/10 (Wilson low 0.72 > 0.6, lift 1.67): 30 red points that tie on everything
    # but their name, ranked by it.
    names = [f"chat:tp{(17 * i) % 30:02}" for i in range(30)]
    rows = []
    for t, (channel, touchpoint, sentiment) in enumerate(
        [("chat", n, -0.5) for n in names] + [("web", f"web:tp{i:02}", 0.0) for i in range(20)]
    ):
        for r in range(10):
            at = "2026-09-01 10:00:00"
            rows.append(f"e{t}_{r},C{t}_{r},{at},{channel},page_view,{touchpoint},{sentiment},,{PRODUCT_PAGE}")
    events = events_file(tmp_path, "sentiment.csv", rows)
    con = build_map(events, red_points=RedPointsConfig(min_count=10))
    got = db.fetch(
        con,
        "select unit_type, unit, red_rank, k, n, stage_share from red_points where metric = 'negative_sentiment'"
        " order by red_rank",
    )
    assert got[0] == ("cell", "chat", 1, 300, 300, 0.6)
    assert got[1:] == [("touchpoint", n, 2 + i, 10, 10, 0.6) for i, n in enumerate(sorted(names))]


def test_a_red_point_at_exactly_the_minimum_lift_is_flagged(tmp_path):
    # chat:a has 30 negative of 40 readings (0.75, Wilson low 0.60), web:b 10 of 40: the stage's share is
    # 40/80 = 0.5, so chat:a's lift is exactly 1.5, the default min_lift: flagged, as is its chat cell.
    rows = []
    readings = [("chat", "chat:a", -0.5 if r < 30 else 0.5) for r in range(40)]
    readings += [("web", "web:b", -0.5 if r < 10 else 0.5) for r in range(40)]
    for i, (channel, touchpoint, sentiment) in enumerate(readings):
        rows.append(f"e{i},C{i},2026-09-01 10:00:00,{channel},page_view,{touchpoint},{sentiment},,{PRODUCT_PAGE}")
    events = events_file(tmp_path, "lift.csv", rows)
    con = build_map(events, red_points=RedPointsConfig(min_count=10))
    got = db.fetch(
        con,
        "select unit_type, unit, k, n, stage_share, lift from red_points where metric = 'negative_sentiment'"
        " order by red_rank",
    )
    # equal excess: the touchpoint ranks before its cell
    assert got == [("touchpoint", "chat:a", 30, 40, 0.5, 1.5), ("cell", "chat", 30, 40, 0.5, 1.5)]


def test_a_touchpoints_main_channel_tie_goes_to_the_first_channel_by_name(tmp_path):
    # Forty touchpoints, each seen once on web and once on chat (listed web first): every main channel is
    # chat, the first name, whatever order the tied counts reach the aggregate in.
    rows = []
    for i in range(40):
        for channel in ("web", "chat"):
            touchpoint = f"tp{(13 * i) % 40:02}"
            rows.append(f"e{i}_{channel},C{i},2026-09-01 10:00:00,{channel},page_view,{touchpoint},,,{PRODUCT_PAGE}")
    events = events_file(tmp_path, "tied_channels.csv", rows)
    con = build_map(events)
    got = db.fetch(con, "select distinct main_channel from touchpoint_performance where stage_index = 2")
    assert got == [("chat",)]


def test_a_journey_in_progress_is_overdue_only_past_its_stage_budget(tmp_path):
    # awareness has a 14d budget; as_of is 2026-10-31 00:00: X has been at it exactly 14d, Y a second longer,
    # Z longer still, but its journey is closed (idle past the 30d dropout timeout): a dropout, not overdue.
    rows = [
        "x1,X,2026-10-17 00:00:00,ads,ad_click,ads:ad_click,,,{}",
        "y1,Y,2026-10-16 23:59:59,ads,ad_click,ads:ad_click,,,{}",
        "z1,Z,2026-09-01 00:00:00,ads,ad_click,ads:ad_click,,,{}",
    ]
    con = build_map(events_file(tmp_path, "overdue.csv", rows))
    got = db.fetch(
        con,
        "select js.journey_id, js.is_closed, js.overdue_stage, j.overdue_stage from journey_stages as js"
        " inner join journeys as j on j.journey_id = js.journey_id and j.mode = js.mode"
        " where js.mode = 'ordered' order by 1",
    )
    assert got == [("X/j0001", False, None, None), ("Y/j0001", False, 1, 1), ("Z/j0001", True, None, None)]
