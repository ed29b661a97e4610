"""The alerts mart on the journey-map golden case (tests/golden/journey_map, see its README), worked by hand."""

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from test_journey_map import AS_OF, GOLDEN, build_map

from journeys import alerts, db, models, publish
from journeys.config import Settings

# Values of the golden case (generic_lifecycle, ordered) the goals below read, from its README:
# stage_funnel conversion: awareness 5/5 = 1, consideration P Q S of P Q R S T = 3/5, purchase P of P Q S = 1/3.
# stage_channel_matrix: flow 1 ads 1.0, 2 chat 1/2; monetised 2 call_centre -6.5, 3 store 157; no 1 email cell.
# touchpoint_performance: 2 chat:chat_message dropped at stage 1/2 (R of Q, R); 2 web:page_view 0 (P, S),
# no sentiment reading; 4 call_centre:call mean sentiment -0.5.
GOALS = [
    # met: 1.0 >= 0.9
    {"name": "awareness_converts", "metric": "conversion_rate", "stage": "awareness", "threshold": 0.9},
    # missed: 0.6 < 0.7, by 0.1
    {"name": "consideration_converts", "metric": "conversion_rate", "stage": "consideration", "threshold": 0.7},
    # missed the other way: 1/3 > 0.2, by 2/15
    {
        "name": "purchase_conversion_cap",
        "metric": "conversion_rate",
        "stage": "purchase",
        "threshold": 0.2,
        "direction": "max",
    },
    # met at equality: 1.0 >= 1.0
    {"name": "ads_flow", "metric": "flow_rate", "stage": "awareness", "channel": "ads", "threshold": 1.0},
    # missed: 0.5 < 0.6
    {"name": "chat_flow", "metric": "flow_rate", "stage": "consideration", "channel": "chat", "threshold": 0.6},
    # no such cell: no_value, owned by the stage's owner
    {"name": "email_awareness_flow", "metric": "flow_rate", "stage": "awareness", "channel": "email", "threshold": 0.5},
    # missed: -6.5 < 0, by 6.5
    {
        "name": "call_centre_pays",
        "metric": "monetised_value",
        "stage": "consideration",
        "channel": "call_centre",
        "threshold": 0.0,
    },
    # met: 157 >= 100
    {"name": "store_pays", "metric": "monetised_value", "stage": "purchase", "channel": "store", "threshold": 100},
    # missed: 0.5 > 0.4, by 0.1; owner the touchpoint's (sales)
    {
        "name": "chat_dropout",
        "metric": "dropout_share",
        "stage": "consideration",
        "touchpoint": "chat:chat_message",
        "threshold": 0.4,
        "direction": "max",
    },
    # met at equality: 0 <= 0
    {
        "name": "page_view_dropout",
        "metric": "dropout_share",
        "stage": "consideration",
        "touchpoint": "web:page_view",
        "threshold": 0.0,
        "direction": "max",
    },
    # missed: -0.5 < 0, by 0.5
    {
        "name": "service_call_sentiment",
        "metric": "mean_sentiment",
        "stage": "use_service",
        "touchpoint": "call_centre:call",
        "threshold": 0.0,
    },
    # no sentiment reading on page views: no_value, owner from touchpoint_performance
    {
        "name": "page_view_sentiment",
        "metric": "mean_sentiment",
        "stage": "consideration",
        "touchpoint": "web:page_view",
        "threshold": 0.0,
    },
]
GOALS = [{"stage_model": "generic_lifecycle", "direction": "min", **g} for g in GOALS]

COLUMNS = (
    "goal_name, metric, stage_index, stage_name, mode, channel, touchpoint, owner, direction, threshold, status,"
    " metric_value, miss_by"
)
EXPECTED = [
    ("call_centre_pays", "monetised_value", 2, "consideration", None, "call_centre", None, "ecommerce", "min", 0.0,
     "missed", -6.5, 6.5),
    ("chat_dropout", "dropout_share", 2, "consideration", "ordered", None, "chat:chat_message", "sales", "max", 0.4,
     "missed", 0.5, 0.1),
    ("chat_flow", "flow_rate", 2, "consideration", None, "chat", None, "ecommerce", "min", 0.6,
     "missed", 0.5, 0.1),
    ("consideration_converts", "conversion_rate", 2, "consideration", "ordered", None, None, "ecommerce", "min", 0.7,
     "missed", 0.6, 0.1),
    ("email_awareness_flow", "flow_rate", 1, "awareness", None, "email", None, "marketing", "min", 0.5,
     "no_value", None, None),
    ("page_view_sentiment", "mean_sentiment", 2, "consideration", None, None, "web:page_view", "ecommerce", "min", 0.0,
     "no_value", None, None),
    ("purchase_conversion_cap", "conversion_rate", 3, "purchase", "ordered", None, None, "sales", "max", 0.2,
     "missed", 1 / 3, 2 / 15),
    ("service_call_sentiment", "mean_sentiment", 4, "use_service", None, None, "call_centre:call", "customer_service",
     "min", 0.0, "missed", -0.5, 0.5),
]  # fmt: skip


def _approx(rows):
    return [tuple(pytest.approx(v) if isinstance(v, float) else v for v in r) for r in rows]


def _without_t(tmp_path):
    """The golden events without customer T (t1 social, t2 web add_to_cart at consideration)."""
    path = tmp_path / "events_without_t.csv"
    pl.read_csv(GOLDEN / "events.csv", infer_schema=False).filter(pl.col("customer_key") != "T").write_csv(path)
    return str(path)


def _publish_map_marts(con, settings, batch_id, as_of):
    """Publish the marts alerts reads and alerts, as a run's publication would (one set, switched through .current)."""
    catalog = models.load_catalog()
    marts = [catalog.models[m] for m in (*alerts.PREVIOUS_MARTS, "alerts")]
    publish.publish_marts(con, settings, marts, batch_id, publish.run_metadata(batch_id, as_of, datetime.now(UTC)))


def test_alerts_match_the_hand_computation_on_a_first_run(tmp_path):
    con = build_map(data_root=tmp_path, goals=GOALS)
    got = db.fetch(con, f"select {COLUMNS} from alerts order by goal_name")
    assert got == _approx(EXPECTED)
    # every goal above names generic_lifecycle
    assert db.fetch(con, "select distinct stage_model from alerts") == [("generic_lifecycle",)]
    # A first run: no previous published marts, so nothing to compare with.
    previous = db.fetch(
        con,
        "select count(*) from alerts where previous_value is not null or change_since_previous is not null"
        " or missed_in_previous is not null or previous_batch_id is not null",
    )
    assert previous == [(0,)]


def test_no_goals_make_an_empty_alerts_table(tmp_path):
    con = build_map(data_root=tmp_path)
    assert db.fetch(con, "select count(*) from alerts") == [(0,)]


def test_alerts_carry_the_previous_published_runs_value(tmp_path):
    # Run 1, the night before, without T: consideration converts P Q S of P Q R S = 3/4 (met); the chat cell
    # and touchpoint and the purchase stage are the same as with T.
    first = build_map(_without_t(tmp_path), data_root=tmp_path, goals=GOALS)
    assert db.fetch(first, "select goal_name from alerts where goal_name = 'consideration_converts'") == []
    _publish_map_marts(first, Settings(data_root=tmp_path), "run-1", AS_OF - timedelta(days=1))
    first.close()

    second = build_map(data_root=tmp_path, goals=GOALS)
    got = db.fetch(
        second,
        "select goal_name, metric_value, previous_value, change_since_previous, missed_in_previous, previous_batch_id"
        " from alerts order by goal_name",
    )
    assert got == _approx(
        [
            ("call_centre_pays", -6.5, -6.5, 0.0, True, "run-1"),
            ("chat_dropout", 0.5, 0.5, 0.0, True, "run-1"),
            ("chat_flow", 0.5, 0.5, 0.0, True, "run-1"),
            # new: met at 3/4 in run 1, missed at 3/5 now
            ("consideration_converts", 0.6, 0.75, -0.15, False, "run-1"),
            # no value in either run
            ("email_awareness_flow", None, None, None, None, "run-1"),
            ("page_view_sentiment", None, None, None, None, "run-1"),
            ("purchase_conversion_cap", 1 / 3, 1 / 3, 0.0, True, "run-1"),
            ("service_call_sentiment", -0.5, -0.5, 0.0, True, "run-1"),
        ]
    )

    # A rerun of that night compares with the night before as the first run did: it publishes the same alerts.
    published = db.fetch(second, "select * from alerts order by goal_name")
    _publish_map_marts(second, Settings(data_root=tmp_path), "run-2", AS_OF)
    second.close()
    rerun = build_map(data_root=tmp_path, goals=GOALS)
    assert db.fetch(rerun, "select * from alerts order by goal_name") == published


def test_a_previous_mart_without_a_column_gives_null_previous_values(tmp_path):
    settings = Settings(data_root=tmp_path)
    current = tmp_path / "marts" / ".current"
    current.mkdir(parents=True)
    with db.connect() as con:
        # A stage_funnel published before conversion_rate existed, with no run metadata.
        db.execute(
            con,
            "copy (select 'generic_lifecycle' as stage_model, 'ordered' as mode, 'awareness' as stage_name)"
            f" to {db.quote_literal(str(current / 'stage_funnel.parquet'))} (format parquet)",
        )
        counts = alerts.previous_marts(con, settings, AS_OF)
        assert db.fetch(con, "select stage_name, conversion_rate from int_previous_stage_funnel") == [
            ("awareness", None)
        ]
        assert counts["int_previous_stage_channel_matrix"] == 0
        assert db.fetch(con, "select batch_id from int_previous_run") == [(None,)]


def test_journeys_run_prints_the_alerts(tmp_path, capsys):
    from pipelines.cli import print_alerts

    print_alerts(build_map(data_root=tmp_path, goals=GOALS))
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("goal "))
    assert lines[header].split()[:3] == ["goal", "stage", "model"]
    rows = {line.split()[0]: line.split() for line in lines[header + 2 :] if line.strip()}
    assert sorted(rows) == [row[0] for row in EXPECTED]
    assert rows["chat_flow"][:8] == ["chat_flow", "generic_lifecycle", "consideration", "chat", "flow_rate", "min",
                                     "0.6", "missed"]  # fmt: skip
    assert rows["chat_flow"][8:] == ["0.5", "ecommerce"]


def test_journeys_run_says_when_no_goal_is_missed(tmp_path, capsys):
    from pipelines.cli import print_alerts

    print_alerts(build_map(data_root=tmp_path, goals=[g for g in GOALS if g["name"] == "store_pays"]))
    assert capsys.readouterr().out.rstrip().endswith("none")


def _goal(name, threshold, direction):
    stage = {"stage_model": "generic_lifecycle", "metric": "conversion_rate", "stage": "consideration"}
    return {**stage, "name": name, "threshold": threshold, "direction": direction}


def test_a_previous_value_exactly_at_the_threshold_was_not_missed(tmp_path):
    # consideration converts 3/4 without T and 3/5 with T. Min goal 0.75: missed now (0.6), met last night at
    # equality. Then the other way round (with T, then without): max goal 0.6, missed now (0.75), met at 0.6.
    goals = [_goal("at_least_three_quarters", 0.75, "min")]
    first = build_map(_without_t(tmp_path), data_root=tmp_path, goals=goals)
    _publish_map_marts(first, Settings(data_root=tmp_path), "run-1", AS_OF - timedelta(days=1))
    first.close()
    second = build_map(data_root=tmp_path, goals=goals)
    got = db.fetch(second, "select goal_name, metric_value, previous_value, missed_in_previous from alerts")
    assert got == _approx([("at_least_three_quarters", 0.6, 0.75, False)])
    second.close()

    other = tmp_path / "other"
    goals = [_goal("at_most_three_fifths", 0.6, "max")]
    first = build_map(data_root=other, goals=goals)
    _publish_map_marts(first, Settings(data_root=other), "run-1", AS_OF - timedelta(days=1))
    first.close()
    second = build_map(_without_t(tmp_path), data_root=other, goals=goals)
    got = db.fetch(second, "select goal_name, metric_value, previous_value, missed_in_previous from alerts")
    assert got == _approx([("at_most_three_fifths", 0.75, 0.6, False)])
