"""Funnel options beyond ClickHouse's defaults: strict_increase, strict_deduplication (differential against
chdb), window from the prior step, exclusions, hold-constant attributes and the open mode."""

from __future__ import annotations

import re

import chdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_funnel import UNBOUNDED, _reached, _run, journey_events

from journeys.funnel import Exclusion, FunnelSpec


def _scan(events, k, window, *, strict=False, inc=False, dedup=False, prior=False) -> list[int]:
    """ClickHouse windowFunnel's scan with its options (plus window from the prior step), recording when
    each level is first reached."""
    window = UNBOUNDED if window is None else window
    events = sorted((t, s) for t, s in events if 1 <= s <= k)
    state: list[tuple[int, int] | None] = [None] * k  # (chain start, time of this step) of the latest end
    reached_at: list[int] = []
    first_seen = False
    for t, s in events:
        i = s - 1
        if i == 0:
            state[0] = (t, t)
            first_seen = True
        elif (dedup and state[i] is not None) or (strict and first_seen and state[i - 1] is None):
            break
        elif state[i - 1] is not None:
            start, last = state[i - 1]
            anchor = last if prior else start
            if t <= anchor + window and (not inc or last < t):
                state[i] = (start, t)
            else:
                continue
        else:
            continue
        if len(reached_at) == i:
            reached_at.append(t)
    return reached_at


def _chdb(path, k, window, options: list[str]) -> dict[str, int]:
    conds = ", ".join(f"s = {i}" for i in range(1, k + 1))
    params = "".join(f", '{o}'" for o in options)
    w = UNBOUNDED if window is None else window
    sql = (
        f"select j, windowFunnel({w}{params})(t, {conds}) as level"
        f" from file('{path}', Parquet) where s between 1 and {k} group by j"
    )
    result = chdb.query(sql, "ArrowTable")
    return dict(zip(result.column("j").to_pylist(), result.column("level").to_pylist(), strict=True))


def _one(events, k=3, window=None, mode="ordered", journey_events=(), **options):
    rows = [("m", "j", t, s, *rest) for t, s, *rest in events]
    con = _run(rows, [FunnelSpec("m", k, (mode,), window, **options)], journey_events)
    return _reached(con, mode).get(("m", "j"), [])


# ---------------------------------------------------------------- differential against chdb


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    k=st.integers(2, 5),
    window=st.sampled_from([0, 1, 2, 3, 5, 8, None]),
    inc=st.booleans(),
    dedup=st.booleans(),
    journeys=st.lists(journey_events, min_size=1, max_size=10),
)
def test_options_match_chdb_window_funnel(tmp_path, k, window, inc, dedup, journeys):
    rows = [("m", f"j{n}", t, s) for n, events in enumerate(journeys) for t, s in events]
    spec = FunnelSpec("m", k, ("ordered", "strict"), window, strict_increase=inc, strict_deduplication=dedup)
    con = _run(rows, [spec])
    ours = {mode: _reached(con, mode) for mode in ("ordered", "strict")}

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
    options = (["strict_increase"] if inc else []) + (["strict_deduplication"] if dedup else [])
    theirs = {
        "ordered": _chdb(path, k, window, options),
        "strict": _chdb(path, k, window, [*options, "strict_order"]),
    }
    for n, events in enumerate(journeys):
        key = ("m", f"j{n}")
        for mode in ("ordered", "strict"):
            got = ours[mode].get(key, [])
            assert [lv for lv, _ in got] == list(range(1, len(got) + 1))
            assert len(got) == theirs[mode].get(f"j{n}", 0), (mode, events, k, window, options)
            want = _scan(events, k, window, strict=mode == "strict", inc=inc, dedup=dedup)
            assert [at for _, at in got] == want, (mode, events, k, window, options)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(2, 5),
    window=st.sampled_from([0, 1, 2, 3, 5, None]),
    events=journey_events,
)
@pytest.mark.slow
def test_prior_step_window_matches_the_scan(k, window, events):
    got = _one(events, k, window, window_from="prior_step")
    assert [at for _, at in got] == _scan(events, k, window, prior=True)


# ---------------------------------------------------------------- strict_increase / strict_deduplication


def test_strict_increase_needs_a_strictly_later_step():
    assert _one([(0, 1), (0, 2), (1, 3)]) == [(1, 0), (2, 0), (3, 1)]
    assert _one([(0, 1), (0, 2), (1, 3)], strict_increase=True) == [(1, 0)]
    assert _one([(0, 1), (1, 2), (2, 3)], strict_increase=True) == [(1, 0), (2, 1), (3, 2)]


def test_strict_increase_follows_clickhouse_latest_step_not_the_best_chain():
    # 0,1,2 is a strictly increasing chain, but the scan holds the stage-2 event at t=2 when stage 3 at
    # t=2 arrives (as ClickHouse does), so stage 3 is not reached
    assert _one([(0, 1), (1, 2), (2, 2), (2, 3)], strict_increase=True) == [(1, 0), (2, 1)]


def test_strict_breaks_on_a_later_stage_at_the_very_instant_of_step_one():
    # Ties order by stage: at t=0 stage 1 comes first, then stage 3 before stage 2 was reached, which breaks
    # the strict scan (ClickHouse's windowFunnel(strict_order) gives 1 as well); ordered reaches 3.
    events = [(0, 1), (0, 3), (5, 2), (6, 3)]
    assert _one(events, mode="strict") == [(1, 0)]
    assert _one(events) == [(1, 0), (2, 5), (3, 6)]


def test_strict_deduplication_stops_at_a_repeated_stage():
    assert _one([(0, 1), (1, 2), (2, 2), (3, 3)], strict_deduplication=True) == [(1, 0), (2, 1)]
    # stage 1 may repeat; a repeat at the very instant the stage was reached counts as a repeat
    assert _one([(0, 1), (1, 1), (2, 2), (3, 3)], strict_deduplication=True) == [(1, 0), (2, 2), (3, 3)]
    assert _one([(0, 1), (1, 2), (1, 2), (2, 3)], strict_deduplication=True) == [(1, 0), (2, 1)]
    # a repeat of a stage reached later is fine until then: 1, 2, 3, 2 reaches 3
    assert _one([(0, 1), (1, 2), (2, 3), (3, 2)], k=4, strict_deduplication=True) == [(1, 0), (2, 1), (3, 2)]


# ---------------------------------------------------------------- window from the prior step


def test_prior_step_window_is_inclusive_per_step():
    events = [(0, 1), (10, 2), (20, 3)]
    assert _one(events, window=10) == [(1, 0), (2, 10)]
    assert _one(events, window=10, window_from="prior_step") == [(1, 0), (2, 10), (3, 20)]
    assert _one([(0, 1), (10, 2), (21, 3)], window=10, window_from="prior_step") == [(1, 0), (2, 10)]


# ---------------------------------------------------------------- exclusions


def test_exclusion_between_steps_voids_the_attempt():
    ex = (Exclusion((1, 2), ("cancel",)),)
    events = [(0, 1), (10, 2), (20, 3)]
    assert _one(events, exclusions=ex, journey_events=[("j", 5, "cancel")]) == [(1, 0)]
    # outside the gap (after stage 2) it does not matter
    assert _one(events, exclusions=ex, journey_events=[("j", 15, "cancel")]) == [(1, 0), (2, 10), (3, 20)]
    # at the very instant of a step it is not between the steps
    assert _one(events, exclusions=ex, journey_events=[("j", 10, "cancel")]) == [(1, 0), (2, 10), (3, 20)]
    # other event types do not exclude
    assert _one(events, exclusions=ex, journey_events=[("j", 5, "page_view")]) == [(1, 0), (2, 10), (3, 20)]


def test_a_new_attempt_after_an_exclusion_counts():
    ex = (Exclusion((1, 2), ("cancel",)),)
    events = [(0, 1), (10, 2), (12, 1), (14, 2), (20, 3)]
    got = _one(events, exclusions=ex, journey_events=[("j", 5, "cancel")])
    assert got == [(1, 0), (2, 14), (3, 20)]


def test_an_exclusion_by_channel_or_touchpoint_needs_every_condition_it_gives():
    events = [(0, 1), (10, 2), (20, 3)]
    full, voided = [(1, 0), (2, 10), (3, 20)], [(1, 0)]
    call = [("j", 5, "call", "call_centre", "call_centre:call")]
    chat = [("j", 5, "chat_message", "chat", "chat:chat_message")]
    by_channel = (Exclusion((1, 2), channels=("call_centre",)),)
    assert _one(events, exclusions=by_channel, journey_events=call) == voided
    assert _one(events, exclusions=by_channel, journey_events=chat) == full
    by_touchpoint = (Exclusion((1, 2), touchpoints=("chat:chat_message",)),)
    assert _one(events, exclusions=by_touchpoint, journey_events=chat) == voided
    assert _one(events, exclusions=by_touchpoint, journey_events=call) == full
    # type and channel together: a call on another channel does not match
    both = (Exclusion((1, 2), ("call",), channels=("store",)),)
    assert _one(events, exclusions=both, journey_events=call) == full
    assert _one(events, exclusions=both, journey_events=[("j", 5, "call", "store", "store:call")]) == voided
    # two exclusions matching one event void the step once; either alone voids it
    two = (Exclusion((1, 2), ("call",)), Exclusion((1, 2), channels=("call_centre",)))
    assert _one(events, exclusions=two, journey_events=call) == voided


def test_exclusion_over_several_steps():
    ex = (Exclusion((1, 3), ("cancel",)),)
    events = [(0, 1), (10, 2), (20, 3)]
    assert _one(events, exclusions=ex, journey_events=[("j", 15, "cancel")]) == [(1, 0), (2, 10)]
    assert _one(events, exclusions=ex, journey_events=[("j", 25, "cancel")]) == [(1, 0), (2, 10), (3, 20)]


# ---------------------------------------------------------------- hold constant


def test_hold_constant_needs_the_same_value_at_every_step():
    events = [(0, 1, "a"), (1, 2, "b"), (2, 3, "a")]
    assert _one(events) == [(1, 0), (2, 1), (3, 2)]
    assert _one(events, hold_constant="product") == [(1, 0)]
    events = [(0, 1, "a"), (1, 1, "b"), (2, 2, "b"), (3, 2, "a"), (4, 3, "a")]
    assert _one(events, hold_constant="product") == [(1, 0), (2, 2), (3, 4)]


def test_hold_constant_missing_values_form_their_own_group():
    assert _one([(0, 1, None), (1, 2, None), (2, 3, "a")], hold_constant="product") == [(1, 0), (2, 1)]


# ---------------------------------------------------------------- open vs closed


def test_open_mode_enters_at_the_lowest_stage_seen():
    # no stage 1: closed never enters, open enters at 2
    assert _one([(0, 2), (1, 3)], k=4) == []
    assert _one([(0, 2), (1, 3)], k=4, mode="open") == [(2, 0), (3, 1)]
    # with stage 1 open equals closed
    events = [(0, 2), (1, 1), (2, 3), (3, 2)]
    assert _one(events, k=4, mode="open") == _one(events, k=4) == [(1, 1), (2, 3)]
    # reversed order: only the entry stage
    assert _one([(0, 4), (1, 3), (2, 2)], k=4, mode="open") == [(2, 2)]


def test_open_mode_applies_the_window_and_options():
    assert _one([(0, 2), (5, 3), (11, 4)], k=4, window=10, mode="open") == [(2, 0), (3, 5)]
    ex = (Exclusion((2, 3), ("cancel",)),)
    got = _one([(0, 2), (5, 3)], k=4, mode="open", exclusions=ex, journey_events=[("j", 2, "cancel")])
    assert got == [(2, 0)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_from": "last_step"}, "window_from must be one of"),
        ({"exclusions": (Exclusion((2, 4), ("x",)),)}, "does not fit a model of 3 stages"),
        ({"hold_constant": ""}, "hold_constant must be None or an attribute key"),
    ],
)
def test_invalid_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        FunnelSpec("m", 3, **kwargs)


def test_an_exclusion_without_a_condition_is_rejected():
    with pytest.raises(ValueError, match="an exclusion needs event_types, channels or touchpoints"):
        Exclusion((1, 2))
    with pytest.raises(ValueError, match=re.escape("exclusion channels must be non-empty strings, got ('',)")):
        Exclusion((1, 2), channels=("",))


@pytest.mark.parametrize("between", [(2, 2), (0, 1), (3, 1)])
def test_invalid_exclusions_are_rejected(between):
    with pytest.raises(ValueError, match=re.escape(f"exclusion between must be two stages i < j, got {between!r}")):
        Exclusion(between, ("x",))
