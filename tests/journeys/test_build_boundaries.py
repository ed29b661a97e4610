"""The models at their limits (tests/golden/boundaries, see its README) and independent of input order."""

from __future__ import annotations

import random
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest
from golden_compare import assert_matches_golden

from journeys import build, db
from journeys.config import FunnelExclusion, Settings, StageModelRef

GOLDEN_ROOT = Path(__file__).resolve().parents[1] / "golden"
GOLDEN = GOLDEN_ROOT / "boundaries"
AS_OF = datetime(2026, 10, 31)
BOUNDARY_SETTINGS = Settings(
    stage_models=[
        StageModelRef(
            path="generic_lifecycle", exclusions=[FunnelExclusion(between=(1, 2), event_type=["unsubscribe"])]
        )
    ]
)


def build_events(events_csv: Path, settings: Settings) -> duckdb.DuckDBPyConnection:
    """A connection holding every model built from a golden events file, rows taken in file order."""
    con = db.connect()
    db.execute(
        con,
        "create table golden as select * from read_csv($path, header = true, all_varchar = true)",
        {"path": str(events_csv)},
    )
    has_revenue = any(c == "revenue" for (c,) in db.fetch(con, "select column_name from (describe golden)"))
    revenue = "revenue::decimal(18, 2)" if has_revenue else "null::decimal(18, 2)"
    db.execute(
        con,
        f"""create table events as select event_id, occurred_at::timestamp as occurred_at,
            occurred_at::date as event_date, 'golden' as source, channel, event_type, touchpoint,
            []::struct(id_type varchar, id_value varchar)[] as identifiers, sentiment::double as sentiment,
            {revenue} as revenue, attributes::json as attributes from golden""",
    )
    db.execute(con, "create table int_event_customers as select event_id, customer_key from golden")
    db.execute(con, "create table customers as select distinct customer_key, 0 as bucket from golden")
    build.build_after_identity(con, build.run_context(settings, AS_OF))
    return con


@pytest.fixture(scope="module")
def built() -> duckdb.DuckDBPyConnection:
    return build_events(GOLDEN / "events.csv", BOUNDARY_SETTINGS)


def test_journeys_on_the_timeouts_budget_and_exclusion_match_golden(built):
    want = pl.read_csv(
        GOLDEN / "expected_journeys.csv", schema_overrides={"dropout_stage": pl.Int32, "overdue_stage": pl.Int32}
    )
    got = built.sql(
        """select j.journey_id, j.n_events, j.n_sessions, j.n_channels, j.first_channel, j.last_channel,
               j.furthest_stage, j.furthest_stage_name, j.is_closed, j.is_converted, j.dropout_stage,
               j.overdue_stage,
               '[' || array_to_string(js.stages_over_budget, ',') || ']' as stages_over_budget
           from journeys as j
           inner join journey_stages as js on js.journey_id = j.journey_id and js.mode = j.mode
           order by j.journey_id"""
    ).pl()
    assert got.cast(want.schema).to_dicts() == want.to_dicts()


def test_an_exclusion_by_channel_voids_the_step_only_for_events_of_that_channel(tmp_path):
    # X and Y both go ad_click (stage 1) -> email_click (stage 2) with a stageless page view between; only X's
    # page view is on the excluded channel, so only X's step to stage 2 is voided (through the config and SQL).
    rows = [
        "x1,X,2026-10-20 10:00:00,ads,ad_click,ads:ad_click,,,{}",
        "x2,X,2026-10-20 10:30:00,web,page_view,web:page_view,,,{}",
        "x3,X,2026-10-20 11:00:00,email,email_click,email:email_click,,,{}",
        "y1,Y,2026-10-20 10:00:00,ads,ad_click,ads:ad_click,,,{}",
        "y2,Y,2026-10-20 10:30:00,app,page_view,app:page_view,,,{}",
        "y3,Y,2026-10-20 11:00:00,email,email_click,email:email_click,,,{}",
    ]
    events = tmp_path / "events.csv"
    events.write_text("\n".join([(GOLDEN / "events.csv").read_text().splitlines()[0], *rows]) + "\n")
    settings = Settings(
        stage_models=[
            StageModelRef(path="generic_lifecycle", exclusions=[FunnelExclusion(between=(1, 2), channel=["web"])])
        ]
    )
    con = build_events(events, settings)
    got = db.fetch(con, "select customer_key, furthest_stage from journey_stages order by 1")
    assert got == [("X", 1), ("Y", 2)]


def test_stage_conversion_by_cohort_matches_golden(built):
    assert_matches_golden(
        built,
        "boundaries",
        "stage_conversion",
        where="mode = 'ordered' and breakdown = 'none'",
        order_by="cohort, stage_index",
    )


def test_stage_dropout_counts_and_last_sentiment_match_golden(built):
    assert_matches_golden(
        built, "boundaries", "stage_dropout", where="mode = 'ordered'", order_by="stage_index, last_touchpoint"
    )


def test_stage_channel_matrix_counts_and_sentiment_match_golden(built):
    assert_matches_golden(built, "boundaries", "stage_channel_matrix", order_by="stage_index, channel")


def test_survival_reaches_next_stage_as_hand_computed(built):
    rows = db.fetch(
        built,
        "select t_days, journeys_at_risk, journeys_converted, journeys_censored, survival, p_reached_next"
        " from stage_survival where mode = 'ordered' and stage_index = 1 order by t_days",
    )
    assert [r[:4] for r in rows] == [(1, 5, 3, 0), (14, 2, 1, 0), (30, 1, 0, 1)]
    assert [r[4] for r in rows] == pytest.approx([2 / 5, 1 / 5, 1 / 5])
    assert [r[5] for r in rows] == pytest.approx([3 / 5, 4 / 5, 4 / 5])


def test_journey_gaps_count_a_transition_at_the_budget_as_within(built):
    rows = db.fetch(
        built, "select stage_index, journeys_converted, journeys_over_budget from journey_gaps order by stage_index"
    )
    assert rows == [(1, 4, 0), (2, 1, 0), (3, 0, 0), (4, 0, 0), (5, None, None)]


def test_journey_span_and_first_and_last_touchpoint_as_listed(built):
    rows = db.fetch(
        built, "select journey_id, started_at, ended_at, first_touchpoint, last_touchpoint from journeys order by 1"
    )
    # J's j1 and j2 share an instant: the first touchpoint is j1's, the lower event_id
    assert rows == [
        ("G/j0001", datetime(2026, 8, 1, 10), datetime(2026, 8, 31, 10, 30), "ads:ad_click", "web:page_view"),
        ("H/j0001", datetime(2026, 10, 1), datetime(2026, 10, 1), "ads:ad_click", "ads:ad_click"),
        (
            "I/j0001",
            datetime(2026, 9, 1, 12),
            datetime(2026, 9, 15, 12),
            "social:social_engagement",
            "email:email_click",
        ),
        ("J/j0001", datetime(2026, 9, 5, 10), datetime(2026, 9, 5, 11), "ads:ad_click", "email:email_click"),
        ("K/j0001", datetime(2026, 8, 31, 23), datetime(2026, 9, 3, 1), "web:page_view", "store:purchase"),
    ]


def test_journey_stages_times_last_event_and_sentiment_as_listed(built):
    rows = db.fetch(
        built,
        """select journey_id, customer_key, stage_model_version, n_stages, entered_at, furthest_reached_at,
               started_at, ended_at, first_touchpoint, last_touchpoint, last_event_id, last_sentiment,
               last_known_sentiment, breakdown_attribute
           from journey_stages where mode = 'ordered' order by journey_id""",
    )
    t = datetime
    # K: k1 (home page) matches no stage, so K enters at k2 on the next day; G's last event g3 has no
    # sentiment, its latest known one is g2's; J's j1 and j2 share an instant; no breakdown attribute is set
    assert rows == [
        ("G/j0001", "G", 1, 5, t(2026, 8, 1, 10), t(2026, 8, 1, 10, 30), t(2026, 8, 1, 10), t(2026, 8, 31, 10, 30),
         "ads:ad_click", "web:page_view", "g3", None, 0.75, None),
        ("H/j0001", "H", 1, 5, t(2026, 10, 1), t(2026, 10, 1), t(2026, 10, 1), t(2026, 10, 1),
         "ads:ad_click", "ads:ad_click", "h1", None, None, None),
        ("I/j0001", "I", 1, 5, t(2026, 9, 1, 12), t(2026, 9, 15, 12), t(2026, 9, 1, 12), t(2026, 9, 15, 12),
         "social:social_engagement", "email:email_click", "i2", 0.5, 0.5, None),
        ("J/j0001", "J", 1, 5, t(2026, 9, 5, 10), t(2026, 9, 5, 11), t(2026, 9, 5, 10), t(2026, 9, 5, 11),
         "ads:ad_click", "email:email_click", "j3", -0.25, -0.25, None),
        ("K/j0001", "K", 1, 5, t(2026, 9, 1, 1), t(2026, 9, 3, 1), t(2026, 8, 31, 23), t(2026, 9, 3, 1),
         "web:page_view", "store:purchase", "k4", None, None, None),
    ]  # fmt: skip


def test_journey_events_of_one_journey_as_listed(built):
    rows = db.fetch(
        built,
        """select event_id, customer_key, journey_id, event_seq, session_id, occurred_at, event_date, source,
               channel, event_type, touchpoint, sentiment, revenue, stage_index, stage_name
           from journey_events where customer_key = 'K' or event_id = 'g2' order by event_id""",
    )
    t, d = datetime, date
    # K's gaps are all over 30 minutes: four sessions; k1 (the home page) matches no stage
    assert rows == [
        ("g2", "G", "G/j0001", 2, "G/s000001", t(2026, 8, 1, 10, 30), d(2026, 8, 1), "golden", "web", "page_view",
         "web:page_view", 0.75, None, 2, "consideration"),
        ("k1", "K", "K/j0001", 1, "K/s000001", t(2026, 8, 31, 23), d(2026, 8, 31), "golden", "web", "page_view",
         "web:page_view", None, None, None, None),
        ("k2", "K", "K/j0001", 2, "K/s000002", t(2026, 9, 1, 1), d(2026, 9, 1), "golden", "ads", "ad_impression",
         "ads:ad_impression", None, None, 1, "awareness"),
        ("k3", "K", "K/j0001", 3, "K/s000003", t(2026, 9, 2, 1), d(2026, 9, 2), "golden", "web", "add_to_cart",
         "web:add_to_cart", None, None, 2, "consideration"),
        ("k4", "K", "K/j0001", 4, "K/s000004", t(2026, 9, 3, 1), d(2026, 9, 3), "golden", "store", "purchase",
         "store:purchase", None, Decimal("30.00"), 3, "purchase"),
    ]  # fmt: skip


def test_journeys_revenue_and_any_order_stage_as_listed(built):
    rows = db.fetch(
        built,
        "select journey_id, customer_key, stage_model, mode, revenue, furthest_stage_any_order"
        " from journeys order by 1",
    )
    # only K's purchase (k4) carries revenue; the boundary settings compute 'ordered' only
    primary = ("generic_lifecycle", "ordered")
    assert rows == [
        ("G/j0001", "G", *primary, None, None),
        ("H/j0001", "H", *primary, None, None),
        ("I/j0001", "I", *primary, None, None),
        ("J/j0001", "J", *primary, None, None),
        ("K/j0001", "K", *primary, Decimal("30.00"), None),
    ]


def test_journey_stages_channels_and_outcome_as_listed(built):
    rows = db.fetch(
        built,
        "select journey_id, first_channel, last_channel, is_closed, is_converted from journey_stages"
        " where mode = 'ordered' order by 1",
    )
    assert db.fetch(built, "select distinct stage_model, mode from journey_stages") == [
        ("generic_lifecycle", "ordered")
    ]
    # H is idle exactly the dropout timeout at as_of: still open; no journey reaches renewal
    assert rows == [
        ("G/j0001", "ads", "web", True, False),
        ("H/j0001", "ads", "ads", False, False),
        ("I/j0001", "social", "email", True, False),
        ("J/j0001", "ads", "email", True, False),
        ("K/j0001", "web", "store", True, False),
    ]


def test_stage_conversion_by_first_channel_as_listed(built):
    rows = db.fetch(
        built,
        "select breakdown_value, journeys_entered, journeys_converted from stage_conversion"
        " where mode = 'ordered' and cohort = 'all' and breakdown = 'first_channel' and stage_index = 1 order by 1",
    )
    # first channels: G, H, J ads (G and J reach consideration), I social, K web (its first event, k1, is
    # before it enters); each converts but H
    assert rows == [("ads", 3, 2), ("social", 1, 1), ("web", 1, 1)]


def test_time_to_next_puts_a_transition_on_a_bucket_edge_in_the_upper_bucket(built):
    rows = db.fetch(
        built,
        "select stage_index, bucket_label, journeys_converted, lower_s, upper_s, share from stage_time_to_next"
        " where mode = 'ordered' order by stage_index, bucket_index",
    )
    # stage 1: G 1800 s, J 3600 s (= 1h), K 86400 s (= 1d), I 1209600 s (= 14d); stage 2: K 86400 s
    assert [r[:3] for r in rows] == [(1, "< 1h", 1), (1, "1h-1d", 1), (1, "1-3d", 1), (1, "14-30d", 1), (2, "1-3d", 1)]
    # each bucket's bounds as its label says; four converters from stage 1, one from stage 2
    h, d = 3600, 86400
    assert [r[3:] for r in rows] == [
        (0, h, 0.25),
        (h, d, 0.25),
        (d, 3 * d, 0.25),
        (14 * d, 30 * d, 0.25),
        (d, 3 * d, 1.0),
    ]


# ---------------------------------------------------------------- order independence

CASES = {
    "small_funnel": Settings(
        stage_models=[StageModelRef(path="generic_lifecycle", modes=["ordered", "strict", "any_order", "open"])]
    ),
    "journey_map": Settings(
        stage_models=[StageModelRef(path="generic_lifecycle")], costs={"call_centre": 6.5, "chat": 2.0, "store": 4.0}
    ),
    "boundaries": BOUNDARY_SETTINGS,
}


def reordered(events_csv: Path, seed: int, out: Path) -> Path:
    """The events file with its instants shuffled and the events of one instant in reverse event_id order."""
    frame = pl.read_csv(events_csv, infer_schema=False)
    instants = frame.select("customer_key", "occurred_at").unique(maintain_order=True).rows()
    rank = {instant: i for i, instant in enumerate(random.Random(seed).sample(instants, len(instants)))}
    order = pl.Series([rank[(c, t)] for c, t in frame.select("customer_key", "occurred_at").rows()])
    shuffled = frame.with_columns(instant_rank=order).sort(["instant_rank", "event_id"], descending=[False, True])
    shuffled.drop("instant_rank").write_csv(out)
    return out


def table_contents(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """Every table of the connection, its rows sorted on every column."""
    names = [n for (n,) in db.fetch(con, "select table_name from duckdb_tables() order by 1")]
    return {n: db.fetch(con, f"select * from {db.quote_ident(n)} order by all") for n in names}


def mart_bytes(con: duckdb.DuckDBPyConnection, settings: Settings, out: Path) -> dict[str, bytes]:
    """Each published mart built after identity as Parquet bytes, rows sorted on every column."""
    out.mkdir()
    present = {n for (n,) in db.fetch(con, "select table_name from duckdb_tables()")}
    marts = {}
    for model in build.run_context(settings, AS_OF).catalog.published():
        if model.name not in present:  # identity's marts: the golden cases start after identity
            continue
        path = out / f"{model.name}.parquet"
        con.sql(f"select * from {db.quote_ident(model.name)} order by all").write_parquet(str(path))
        marts[model.name] = path.read_bytes()
    return marts


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_model_is_the_same_whatever_the_input_order(case, tmp_path):
    events, settings = GOLDEN_ROOT / case / "events.csv", CASES[case]
    first = build_events(events, settings)
    want, want_marts = table_contents(first), mart_bytes(first, settings, tmp_path / "file_order")
    assert "journeys" in want_marts and "stage_conversion" in want_marts
    for seed in range(3):
        con = build_events(reordered(events, seed, tmp_path / f"events_{seed}.csv"), settings)
        got = table_contents(con)
        assert set(got) == set(want)
        for name, rows in want.items():
            assert got[name] == rows, (case, seed, name)
        assert mart_bytes(con, settings, tmp_path / f"seed_{seed}") == want_marts, (case, seed)


def replicated(events_csv: Path, copies: int, out: Path) -> Path:
    """The case's events for `copies` customers each: ids and keys prefixed, so each copy keeps its id order."""
    frame = pl.read_csv(events_csv, infer_schema=False)
    parts = [
        frame.with_columns(
            event_id=pl.lit(f"r{n:04}_") + pl.col("event_id"), customer_key=pl.lit(f"r{n:04}_") + pl.col("customer_key")
        )
        for n in range(copies)
    ]
    pl.concat(parts).write_csv(out)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_model_is_the_same_whatever_the_input_order_at_scale(case, tmp_path):
    # The golden cases are small enough for DuckDB to keep rows in input order through one thread, so a
    # window without its tie-break can still give the listed answer. Hundreds of copies of the case spread
    # over threads reach each window in another order.
    events = replicated(GOLDEN_ROOT / case / "events.csv", 300, tmp_path / "events.csv")
    settings = CASES[case]
    want = table_contents(build_events(events, settings))
    got = table_contents(build_events(reordered(events, 0, tmp_path / "reordered.csv"), settings))
    assert set(got) == set(want)
    for name, rows in want.items():
        assert got[name] == rows, (case, name)
