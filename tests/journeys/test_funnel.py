"""Stage reach: unit cases, a pure-Python reference for reached_at, and differential tests against chdb."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import chdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys import funnel
from journeys.db import connect, execute, fetch
from journeys.funnel import FunnelSpec, build_stage_reached

BASE = dt.datetime(2024, 3, 1, 12, 0, 0)
UNBOUNDED = 2**62  # chdb needs a number; far beyond any test span, and first_ts + window fits in UInt64


def _ts(us: int) -> dt.datetime:
    return BASE + dt.timedelta(microseconds=us)


def _load(con, rows: list[tuple], journey_events: list[tuple] = ()) -> None:
    """rows: (stage_model, journey_id, offset_us, stage_index[, hold_value]);
    journey_events: (journey_id, offset_us, event_type[, channel[, touchpoint]]), the events exclusions look at."""
    keys = {j: n for n, j in enumerate(sorted({r[1] for r in rows} | {e[0] for e in journey_events}), start=1)}
    execute(
        con,
        "create or replace table int_stage_events (stage_model varchar, journey_id varchar, journey_key bigint,"
        " occurred_at timestamp, event_id varchar, stage_index integer, hold_value varchar)",
    )
    execute(
        con,
        "create or replace table int_journey_events (journey_id varchar, journey_key bigint,"
        " occurred_at timestamp, event_type varchar, channel varchar, touchpoint varchar)",
    )
    if rows:
        table = pa.table(
            {
                "stage_model": [r[0] for r in rows],
                "journey_id": [r[1] for r in rows],
                "journey_key": pa.array([keys[r[1]] for r in rows], pa.int64()),
                "occurred_at": pa.array([_ts(r[2]) for r in rows], pa.timestamp("us")),
                "event_id": [f"e{i:06d}" for i in range(len(rows))],
                "stage_index": pa.array([r[3] for r in rows], pa.int32()),
                "hold_value": pa.array([r[4] if len(r) > 4 else None for r in rows], pa.string()),
            }
        )
        con.register("stage_events_arrow", table)
        execute(con, "insert into int_stage_events select * from stage_events_arrow")
        con.unregister("stage_events_arrow")
    if journey_events:
        table = pa.table(
            {
                "journey_id": [e[0] for e in journey_events],
                "journey_key": pa.array([keys[e[0]] for e in journey_events], pa.int64()),
                "occurred_at": pa.array([_ts(e[1]) for e in journey_events], pa.timestamp("us")),
                "event_type": [e[2] for e in journey_events],
                "channel": pa.array([e[3] if len(e) > 3 else None for e in journey_events], pa.string()),
                "touchpoint": pa.array([e[4] if len(e) > 4 else None for e in journey_events], pa.string()),
            }
        )
        con.register("journey_events_arrow", table)
        execute(con, "insert into int_journey_events select * from journey_events_arrow")
        con.unregister("journey_events_arrow")


def _reached(con, mode: str) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """(model, journey) -> [(level, reached_at offset µs)] in level order."""
    out: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for model, journey, level, at in fetch(
        con,
        "select stage_model, journey_id, stage_index, reached_at from int_journey_stage_reached"
        " where mode = $mode order by all",
        {"mode": mode},
    ):
        out.setdefault((model, journey), []).append((level, (at - BASE) // dt.timedelta(microseconds=1)))
    return out


def _furthest(reached: dict, key) -> int:
    levels = [lv for lv, _ in reached.get(key, [])]
    assert levels == list(range(1, len(levels) + 1)), "levels must be contiguous from 1"
    return len(levels)


def _reference(events: list[tuple[int, int]], k: int, window: int | None, strict: bool) -> list[int]:
    """ClickHouse windowFunnel's scan, recording when each level is first reached; [] if none."""
    window = UNBOUNDED if window is None else window
    events = sorted((t, s) for t, s in events if 1 <= s <= k)
    first_of: list[int | None] = [None] * k  # chain start of the latest level-i chain end
    reached_at: list[int] = []
    seen_first = False
    for t, s in events:
        i = s - 1
        if i == 0:
            first_of[0] = t
            seen_first = True
        elif strict and seen_first and first_of[i - 1] is None:
            break
        elif first_of[i - 1] is not None and t <= first_of[i - 1] + window:
            first_of[i] = first_of[i - 1]
        else:
            continue
        if len(reached_at) == i:
            reached_at.append(t)
    return reached_at


def _run(rows, specs, journey_events=()):
    con = connect()
    _load(con, rows, journey_events)
    build_stage_reached(con, specs)
    return con


# ---------------------------------------------------------------- unit cases


def _one(events: list[tuple[int, int]], k: int = 3, window: int | None = None, mode: str = "ordered"):
    con = _run([("m", "j", t, s) for t, s in events], [FunnelSpec("m", k, (mode,), window)])
    return _reached(con, mode).get(("m", "j"), [])


def test_window_is_inclusive():
    assert _one([(0, 1), (5, 2), (10, 3)], window=10) == [(1, 0), (2, 5), (3, 10)]
    assert _one([(0, 1), (5, 2), (11, 3)], window=10) == [(1, 0), (2, 5)]


def test_zero_window_needs_equal_timestamps():
    assert _one([(0, 1), (0, 2), (1, 3)], window=0) == [(1, 0), (2, 0)]


def test_reversed_order_reaches_only_first_stage():
    assert _one([(0, 3), (1, 2), (2, 1)]) == [(1, 2)]


def test_no_stage_one_reaches_nothing():
    assert _one([(0, 2), (1, 3)]) == []
    assert _one([(0, 2), (1, 3)], mode="any_order") == [(1, 0), (2, 0), (3, 1)]


def test_step_matched_by_several_events_uses_the_first_for_reached_at():
    assert _one([(0, 1), (1, 2), (2, 2), (3, 2), (4, 3)]) == [(1, 0), (2, 1), (3, 4)]


def test_restarted_attempt_wins_when_the_first_runs_out_of_window():
    # attempt from t=0 stalls at stage 2 (stage 3 at t=20 is too late); the restart at t=15 completes
    events = [(0, 1), (5, 2), (15, 1), (18, 2), (20, 3)]
    assert _one(events, window=10) == [(1, 0), (2, 5), (3, 20)]
    assert _one(events, window=10, mode="strict") == [(1, 0), (2, 5), (3, 20)]


def test_latest_start_is_kept_for_later_steps():
    # stage 2 at t=12 can only use the start at t=5, stage 3 at t=14 must use that chain too
    assert _one([(0, 1), (5, 1), (12, 2), (14, 3)], window=10) == [(1, 0), (2, 12), (3, 14)]


def test_equal_timestamps_are_taken_in_stage_order():
    assert _one([(7, 3), (7, 2), (7, 1)]) == [(1, 7), (2, 7), (3, 7)]
    assert _one([(7, 3), (7, 2), (7, 1)], mode="strict") == [(1, 7), (2, 7), (3, 7)]


def test_strict_breaks_on_a_skipped_stage_but_not_on_repeats():
    assert _one([(0, 1), (1, 3), (2, 2), (3, 3)], mode="strict") == [(1, 0)]
    assert _one([(0, 1), (1, 3), (2, 2), (3, 3)], mode="ordered") == [(1, 0), (2, 2), (3, 3)]
    assert _one([(0, 1), (1, 2), (2, 1), (3, 2), (4, 3)], mode="strict") == [(1, 0), (2, 1), (3, 4)]
    # events of later stages before the first stage-1 event do not break the chain
    assert _one([(0, 3), (1, 1), (2, 2), (3, 3)], mode="strict") == [(1, 1), (2, 2), (3, 3)]


def test_strict_step_out_of_window_breaks_at_the_next_stage():
    assert _one([(0, 1), (5, 2), (6, 3)], window=2, mode="strict") == [(1, 0)]
    assert _one([(0, 1), (5, 2), (6, 1), (7, 2), (8, 3)], window=2, mode="strict") == [
        (1, 0),
        (2, 7),
        (3, 8),
    ]


def test_any_order_counts_skipped_stages_and_ignores_the_window():
    assert _one([(0, 4), (1, 2), (9, 1)], k=5, window=0, mode="any_order") == [
        (1, 0),
        (2, 0),
        (3, 0),
        (4, 0),
    ]


def test_stages_beyond_the_model_are_ignored():
    assert _one([(0, 1), (1, 2), (2, 7)], k=2, mode="any_order") == [(1, 0), (2, 1)]
    assert _one([(0, 1), (1, 9), (2, 2)], k=2, mode="strict") == [(1, 0), (2, 2)]


def test_models_and_modes_are_kept_apart():
    rows = [("a", "j", 0, 1), ("a", "j", 1, 2), ("b", "j", 0, 2), ("b", "j", 1, 1)]
    con = _run(rows, [FunnelSpec("a", 2, ("ordered", "strict")), FunnelSpec("b", 2, ("any_order",))])
    assert fetch(con, "select distinct stage_model, mode from int_journey_stage_reached order by all") == [
        ("a", "ordered"),
        ("a", "strict"),
        ("b", "any_order"),
    ]
    assert _reached(con, "ordered") == {("a", "j"): [(1, 0), (2, 1)]}
    assert _reached(con, "any_order") == {("b", "j"): [(1, 0), (2, 0)]}


def test_empty_input_and_no_specs_give_an_empty_table():
    con = _run([], [FunnelSpec("m", 3, ("ordered", "strict", "any_order"))])
    assert fetch(con, "select count(*) from int_journey_stage_reached") == [(0,)]
    con = _run([("m", "j", 0, 1)], [])
    assert fetch(con, "select count(*) from int_journey_stage_reached") == [(0,)]
    cols = fetch(
        con,
        "select column_name, data_type from information_schema.columns"
        " where table_name = 'int_journey_stage_reached' order by ordinal_position",
    )
    assert cols == [
        ("stage_model", "VARCHAR"),
        ("mode", "VARCHAR"),
        ("journey_id", "VARCHAR"),
        ("stage_index", "INTEGER"),
        ("reached_at", "TIMESTAMP"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stage_model": "", "n_stages": 3}, "stage_model must be a non-empty string"),
        ({"stage_model": "m", "n_stages": 0}, "n_stages must be a positive integer"),
        ({"stage_model": "m", "n_stages": 3, "modes": ("sideways",)}, "unknown funnel modes ['sideways']"),
        ({"stage_model": "m", "n_stages": 3, "modes": ()}, "modes must be non-empty and distinct"),
        ({"stage_model": "m", "n_stages": 3, "window_us": -1}, "window_us must be None or a non-negative integer"),
    ],
)
def test_invalid_specs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        FunnelSpec(**kwargs)


def test_a_one_stage_model_is_a_valid_spec():
    assert FunnelSpec(stage_model="m", n_stages=1).n_stages == 1


def test_duplicate_models_are_rejected():
    with pytest.raises(ValueError, match=re.escape("one FunnelSpec per stage model, got ['m', 'm']")):
        _run([], [FunnelSpec("m", 2), FunnelSpec("m", 3)])


def test_a_run_takes_exactly_max_models_stage_models_and_no_more(monkeypatch):
    # The real limit (1024, from funnel_key's layout) made small: the check is the same at any size.
    monkeypatch.setattr(funnel, "MAX_MODELS", 2)
    rows = [("a", "j", 0, 1), ("b", "j", 0, 1)]
    con = _run(rows, [FunnelSpec("a", 2), FunnelSpec("b", 2)])
    assert fetch(con, "select distinct stage_model from int_journey_stage_reached order by 1") == [("a",), ("b",)]
    with pytest.raises(ValueError, match=re.escape("at most 2 stage models per run, got 3")):
        _run(rows, [FunnelSpec("a", 2), FunnelSpec("b", 2), FunnelSpec("c", 2)])


def test_hostile_names_are_data_not_sql():
    name = "m'; drop table int_stage_events; --"
    con = _run([(name, "j'\"", 0, 1), (name, "j'\"", 1, 2)], [FunnelSpec(name, 2)])
    assert _reached(con, "ordered") == {(name, "j'\""): [(1, 0), (2, 1)]}


# ---------------------------------------------------------------- differential against chdb

journey_events = st.lists(
    st.tuples(st.integers(0, 12), st.integers(1, 6)),  # (offset µs, stage): a small span forces ties
    min_size=0,
    max_size=14,
)


def _chdb_levels(path: Path, k: int, window: int | None) -> dict[str, tuple[int, int]]:
    conds = ", ".join(f"s = {i}" for i in range(1, k + 1))
    w = UNBOUNDED if window is None else window
    sql = (
        f"select j, windowFunnel({w})(t, {conds}) as ordered,"
        f" windowFunnel({w}, 'strict_order')(t, {conds}) as strict"
        f" from file('{path}', Parquet) where s between 1 and {k} group by j"
    )
    result = chdb.query(sql, "ArrowTable")
    return {
        j: (o, s)
        for j, o, s in zip(
            result.column("j").to_pylist(),
            result.column("ordered").to_pylist(),
            result.column("strict").to_pylist(),
            strict=True,
        )
    }


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    k=st.integers(2, 6),
    window=st.sampled_from([0, 1, 2, 3, 5, 8, None]),
    journeys=st.lists(journey_events, min_size=1, max_size=12),
)
def test_matches_chdb_window_funnel(tmp_path, k, window, journeys):
    rows = [("m", f"j{n}", t, s) for n, events in enumerate(journeys) for t, s in events]
    con = _run(rows, [FunnelSpec("m", k, ("ordered", "strict", "any_order"), window)])
    ours = {mode: _reached(con, mode) for mode in ("ordered", "strict", "any_order")}

    path = tmp_path / "events.parquet"
    pq.write_table(
        pa.table(
            {
                "j": [r[1] for r in rows],
                "t": pa.array([r[2] for r in rows], pa.uint64()),
                "s": pa.array([r[3] for r in rows], pa.uint8()),
            }
        ),
        path,
    )
    theirs = _chdb_levels(path, k, window)

    for n, events in enumerate(journeys):
        key = ("m", f"j{n}")
        ch_ordered, ch_strict = theirs.get(f"j{n}", (0, 0))
        assert _furthest(ours["ordered"], key) == ch_ordered, (events, k, window)
        assert _furthest(ours["strict"], key) == ch_strict, (events, k, window)
        in_model = [(t, s) for t, s in events if s <= k]
        assert _furthest(ours["any_order"], key) == max((s for _, s in in_model), default=0)
        # reached_at: the scan's first-reach instants
        assert [at for _, at in ours["ordered"].get(key, [])] == _reference(events, k, window, False)
        assert [at for _, at in ours["strict"].get(key, [])] == _reference(events, k, window, True)
        assert [at for _, at in ours["any_order"].get(key, [])] == [
            min(t for t, s in in_model if s >= level) for level in range(1, _furthest(ours["any_order"], key) + 1)
        ]
