"""The models at their limits (tests/golden/boundaries, see its README) and independent of input order."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest

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


def _close(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        for k, v in w.items():
            assert g[k] == (pytest.approx(v) if isinstance(v, float) else v), (w, k)


def test_journeys_on_the_timeouts_budget_and_exclusion_match_golden(built):
    want = pl.read_csv(GOLDEN / "expected_journeys.csv", schema_overrides={"dropout_stage": pl.Int32})
    got = built.sql(
        """select j.journey_id, j.n_events, j.n_sessions, j.n_channels, j.first_channel, j.last_channel,
               j.furthest_stage, j.furthest_stage_name, j.is_closed, j.is_converted, j.dropout_stage,
               '[' || array_to_string(js.stages_over_budget, ',') || ']' as stages_over_budget
           from journeys as j
           inner join journey_stages as js on js.journey_id = j.journey_id and js.mode = j.mode
           order by j.journey_id"""
    ).pl()
    assert got.cast(want.schema).to_dicts() == want.to_dicts()


def test_stage_conversion_by_cohort_matches_golden(built):
    want = pl.read_csv(GOLDEN / "expected_stage_conversion.csv").to_dicts()
    cols = ", ".join(want[0])
    got = built.sql(
        f"select {cols} from stage_conversion where mode = 'ordered' and breakdown = 'none'"
        " order by cohort, stage_index"
    ).pl()
    _close(got.to_dicts(), want)


def test_stage_dropout_counts_and_last_sentiment_match_golden(built):
    want = pl.read_csv(GOLDEN / "expected_stage_dropout.csv").to_dicts()
    cols = ", ".join(want[0])
    got = built.sql(f"select {cols} from stage_dropout where mode = 'ordered' order by stage_index, last_touchpoint")
    _close(got.pl().to_dicts(), want)


def test_stage_channel_matrix_counts_and_sentiment_match_golden(built):
    want = pl.read_csv(GOLDEN / "expected_stage_channel_matrix.csv").to_dicts()
    cols = ", ".join(want[0])
    got = built.sql(f"select {cols} from stage_channel_matrix order by stage_index, channel")
    _close(got.pl().to_dicts(), want)


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


def test_time_to_next_puts_a_transition_on_a_bucket_edge_in_the_upper_bucket(built):
    rows = db.fetch(
        built,
        "select stage_index, bucket_label, journeys_converted from stage_time_to_next where mode = 'ordered'"
        " order by stage_index, bucket_index",
    )
    # stage 1: G 1800 s, J 3600 s (= 1h), K 86400 s (= 1d), I 1209600 s (= 14d); stage 2: K 86400 s
    assert rows == [(1, "< 1h", 1), (1, "1h-1d", 1), (1, "1-3d", 1), (1, "14-30d", 1), (2, "1-3d", 1)]


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
