"""Optional stages: a brute-force reference of the written semantics (journeys.funnel, README "Optional
stages") against the SQL engine on random small journeys, hand-worked unit cases, and a golden case through
the marts with an optional stage skipped, taken, and taken out of order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_build_boundaries import build_events
from test_funnel import UNBOUNDED, _reached, _run, journey_events

from journeys import db
from journeys.config import Settings, StageModelRef
from journeys.funnel import Exclusion, FunnelSpec


def _reference(events, k, optional, window, *, mode, prior=False, dedup=False, excluded=()) -> list[tuple[int, int]]:
    """[(stage, reached_at)] by enumerating every chain, as the semantics are written (no scan, no latest end).

    events: (time, stage); excluded: (time, after_stage) exclusion events (each voids a step into stage
    after_stage + 1 that spans it)."""
    window = UNBOUNDED if window is None else window
    evs = sorted((t, s) for t, s in events if 1 <= s <= k)
    if mode == "any_order":
        seen = {s for _, s in evs}
        return [
            (lv, min(t for t, s in evs if s == lv) if lv in optional else min(t for t, s in evs if s >= lv))
            for lv in range(1, max(seen, default=0) + 1)
            if lv in seen or (lv not in optional and any(s > lv for s in seen))
        ]
    entry = 1 if mode != "open" else min((s for _, s in evs), default=1)

    def may_follow(s: int, u: int) -> bool:
        return s < u and all(x in optional for x in range(s + 1, u))

    reached: dict[int, int] = {}

    def extend(i: int, start: int) -> None:
        t, s = evs[i]
        reached[s] = min(reached.get(s, t), t)
        for j in range(i + 1, len(evs)):
            tj, u = evs[j]
            if not may_follow(s, u):
                continue
            if tj - (t if prior else start) > window:
                continue
            if any(a == u - 1 and t < x < tj for x, a in excluded):
                continue
            extend(j, start)

    for i, (t, s) in enumerate(evs):
        if s == entry:
            extend(i, t)
    if mode == "strict":
        first = min((t for t, s in evs if s == 1), default=None)
        breaks = [
            (t, s)
            for t, s in evs
            if first is not None
            and s >= 2
            and t >= first
            and not any(may_follow(p, s) and p in reached and reached[p] <= t for p in range(1, s))
        ]
        if breaks:
            bt, bs = min(breaks)
            reached = {s: t for s, t in reached.items() if (t, s) < (bt, bs)}
    if dedup:
        points = []
        for s, r in reached.items():
            if s < entry + 1:  # a repeat of the chain's first step never stops the scan
                continue
            at_reach = sum(1 for t, u in evs if u == s and t == r)
            after = [t for t, u in evs if u == s and t > r]
            if at_reach >= 2:
                points.append((r, s))
            elif after:
                points.append((min(after), s))
        if points:
            bt, bs = min(points)
            reached = {s: t for s, t in reached.items() if t < bt or (t == bt and s <= bs)}
    return sorted(reached.items())


# ---------------------------------------------------------------- property: SQL == the written semantics

MODES = ("ordered", "strict", "open", "any_order")


@st.composite
def funnel_cases(draw):
    """One stage model's options, its optional stages and exclusions, and a few journeys with exclusion events."""
    k = draw(st.integers(3, 6))
    after_stages = sorted(draw(st.sets(st.integers(1, k - 1), max_size=2)))
    journeys = draw(st.lists(journey_events, min_size=1, max_size=6))
    exclusion_events = [
        draw(st.lists(st.tuples(st.integers(0, 12), st.sampled_from(after_stages)), max_size=2)) if after_stages else []
        for _ in journeys
    ]
    return {
        "k": k,
        "optional": draw(st.sets(st.integers(2, k - 1), min_size=1)),
        "window": draw(st.sampled_from([0, 1, 2, 3, 5, 8, None])),
        "prior": draw(st.booleans()),
        "dedup": draw(st.booleans()),
        "after_stages": after_stages,
        "journeys": journeys,
        "exclusion_events": exclusion_events,
    }


# Several stage models per example share one build: a build costs the same for one model or eight.
@settings(max_examples=10, deadline=None)
@given(cases=st.lists(funnel_cases(), min_size=1, max_size=5))
def test_optional_stages_match_a_brute_force_reference(cases):
    rows, excluded, specs = [], [], []
    for c, case in enumerate(cases):
        rows += [(f"m{c}", f"m{c}j{n}", t, s) for n, events in enumerate(case["journeys"]) for t, s in events]
        excluded += [(f"m{c}j{n}", t, f"x{a}") for n, ex in enumerate(case["exclusion_events"]) for t, a in ex]
        specs.append(
            FunnelSpec(
                f"m{c}",
                case["k"],
                MODES,
                case["window"],
                window_from="prior_step" if case["prior"] else "first_step",
                strict_deduplication=case["dedup"],
                exclusions=tuple(Exclusion((a, a + 1), (f"x{a}",)) for a in case["after_stages"]),
                optional_stages=tuple(sorted(case["optional"])),
            )
        )
    con = _run(rows, specs, excluded)
    ours = {mode: _reached(con, mode) for mode in MODES}
    for c, case in enumerate(cases):
        for n, events in enumerate(case["journeys"]):
            for mode in MODES:
                want = _reference(
                    events,
                    case["k"],
                    case["optional"],
                    case["window"],
                    mode=mode,
                    prior=case["prior"],
                    dedup=case["dedup"] and mode != "any_order",
                    excluded=[] if mode == "any_order" else case["exclusion_events"][n],
                )
                got = ours[mode].get((f"m{c}", f"m{c}j{n}"), [])
                assert got == want, (mode, events, {k: v for k, v in case.items() if k != "journeys"})


def test_the_reference_is_clickhouse_without_optional_stages():
    # The reference's chain enumeration agrees with the scan on a restart case (no optional stage).
    events = [(0, 1), (5, 2), (15, 1), (18, 2), (20, 3)]
    assert _reference(events, 3, set(), 10, mode="ordered") == [(1, 0), (2, 5), (3, 20)]


# ---------------------------------------------------------------- hand-worked cases (stages 1, 2 optional, 3, 4)


def _one(events, mode="ordered", k=4, optional=(2,), window=None, journey_events=(), **options):
    spec = FunnelSpec("m", k, (mode,), window, optional_stages=optional, **options)
    con = _run([("m", "j", t, s) for t, s in events], [spec], journey_events)
    return _reached(con, mode).get(("m", "j"), [])


def test_a_skipped_optional_stage_does_not_break_the_chain_and_is_not_reached():
    assert _one([(0, 1), (5, 3), (9, 4)]) == [(1, 0), (3, 5), (4, 9)]
    assert _one([(0, 1), (5, 3), (9, 4)], mode="strict") == [(1, 0), (3, 5), (4, 9)]
    # without the optional stage the chain stops at 1
    assert _one([(0, 1), (5, 3), (9, 4)], optional=()) == [(1, 0)]
    # a required stage cannot be skipped: 4 right after 1 is not reached, and breaks strict
    assert _one([(0, 1), (5, 4), (6, 3)]) == [(1, 0), (3, 6)]
    assert _one([(0, 1), (5, 4), (6, 3)], mode="strict") == [(1, 0)]


def test_an_optional_stage_taken_out_of_order_is_reached_by_its_own_chain():
    assert _one([(0, 1), (5, 3), (7, 2), (9, 4)]) == [(1, 0), (2, 7), (3, 5), (4, 9)]
    assert _one([(0, 1), (5, 3), (7, 2), (9, 4)], mode="strict") == [(1, 0), (2, 7), (3, 5), (4, 9)]
    # an optional-stage event before any stage it may follow was reached breaks strict, like any stage
    events = [(0, 1), (1, 3), (2, 2), (3, 4)]
    assert _one(events, k=5, optional=(3,)) == [(1, 0), (2, 2), (4, 3)]
    assert _one(events, k=5, optional=(3,), mode="strict") == [(1, 0)]


def test_consecutive_optional_stages_may_both_be_skipped():
    assert _one([(0, 1), (3, 4), (4, 5)], k=5, optional=(2, 3)) == [(1, 0), (4, 3), (5, 4)]
    assert _one([(0, 1), (2, 3), (3, 4)], k=5, optional=(2, 3)) == [(1, 0), (3, 2), (4, 3)]


def test_the_window_runs_over_a_skipped_stage():
    assert _one([(0, 1), (5, 3), (10, 4)], window=10) == [(1, 0), (3, 5), (4, 10)]
    assert _one([(0, 1), (5, 3), (11, 4)], window=10) == [(1, 0), (3, 5)]
    # from the prior step: the skip's step is 1 -> 3, measured from stage 1
    assert _one([(0, 1), (11, 3)], window=10, window_from="prior_step") == [(1, 0)]
    assert _one([(0, 1), (10, 3), (20, 4)], window=10, window_from="prior_step") == [(1, 0), (3, 10), (4, 20)]


def test_an_exclusion_checks_the_step_into_its_later_stage_over_the_whole_skip():
    cancel = [("j", 3, "cancel")]
    events = [(0, 1), (5, 3), (9, 4)]
    # between 2 and 3: the skip 1 -> 3 spans the cancel, so 3 is not reached
    assert _one(events, exclusions=(Exclusion((2, 3), ("cancel",)),), journey_events=cancel) == [(1, 0)]
    # between 1 and 2 ends at the skipped stage: it does not apply to 1 -> 3
    got = _one(events, exclusions=(Exclusion((1, 2), ("cancel",)),), journey_events=cancel)
    assert got == [(1, 0), (3, 5), (4, 9)]
    # but it does apply to the chain that takes stage 2
    got = _one([(0, 1), (4, 2)], exclusions=(Exclusion((1, 2), ("cancel",)),), journey_events=cancel)
    assert got == [(1, 0)]


def test_strict_increase_checks_the_latest_end_of_every_stage_a_step_may_follow():
    # 3 at t=5 may follow 1 (t=0) or 2 (t=5): the latest, 2 at t=5, is not strictly earlier
    assert _one([(0, 1), (5, 2), (5, 3)], strict_increase=True) == [(1, 0), (2, 5)]
    assert _one([(0, 1), (5, 3)], strict_increase=True) == [(1, 0), (3, 5)]


def test_any_order_reaches_an_optional_stage_only_by_its_own_events():
    assert _one([(0, 4), (1, 1)], mode="any_order") == [(1, 0), (3, 0), (4, 0)]
    assert _one([(0, 4), (1, 2)], mode="any_order") == [(1, 0), (2, 1), (3, 0), (4, 0)]


def test_open_mode_skips_like_ordered_from_its_entry_stage():
    assert _one([(0, 1), (1, 3), (2, 5)], mode="open", k=5, optional=(2, 4)) == [(1, 0), (3, 1), (5, 2)]
    assert _one([(0, 3), (1, 5)], mode="open", k=5, optional=(4,)) == [(3, 0), (5, 1)]


@pytest.mark.parametrize("optional", [(1,), (4,), (2, 2), (0,)])
def test_optional_first_last_or_repeated_stages_are_rejected(optional):
    with pytest.raises(ValueError, match="optional_stages"):
        FunnelSpec("m", 4, optional_stages=optional)


# ---------------------------------------------------------------- golden: through the marts

SHOP = """name: shop
version: 1
purchase_stage: purchase
stages:
  - {name: browse, rules: [{event_type: [ad_click]}], time_budget: 30m}
  - {name: compare, rules: [{event_type: [add_to_cart]}], optional: true}
  - {name: checkout, rules: [{event_type: [email_click]}]}
  - {name: purchase, rules: [{event_type: [purchase]}]}
"""
# Hand-worked in the README's semantics (every journey closed at as_of):
# A takes compare; B skips it; C takes it after checkout (out of order) and stops at checkout; D skips it
# and buys once before checkout (which breaks strict there); E stops at compare, F at browse.
EVENTS = [
    ("A", "10:00", "ad_click"),
    ("A", "10:10", "add_to_cart"),
    ("A", "10:20", "email_click"),
    ("A", "10:30", "purchase"),
    ("B", "10:00", "ad_click"),
    ("B", "11:00", "email_click"),
    ("B", "12:00", "purchase"),
    ("C", "10:00", "ad_click"),
    ("C", "10:30", "email_click"),
    ("C", "11:00", "add_to_cart"),
    ("D", "10:00", "ad_click"),
    ("D", "10:10", "purchase"),
    ("D", "10:20", "email_click"),
    ("D", "10:30", "purchase"),
    ("E", "10:00", "ad_click"),
    ("E", "10:05", "add_to_cart"),
    ("F", "10:00", "ad_click"),
]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("optional")
    (root / "shop.yaml").write_text(SHOP)
    lines = ["event_id,customer_key,occurred_at,channel,event_type,touchpoint,sentiment,revenue,attributes"]
    lines += [f"{c}{n},{c},2026-09-01 {t}:00,web,{e},web:{e},,,{{}}" for n, (c, t, e) in enumerate(EVENTS)]
    (root / "events.csv").write_text("\n".join(lines) + "\n")
    settings = Settings(stage_models=[StageModelRef(path=str(root / "shop.yaml"), modes=["ordered", "strict"])])
    return build_events(root / "events.csv", settings)


def test_golden_journeys_reach_and_skip_the_optional_stage(shop):
    rows = db.fetch(
        shop,
        "select mode, journey_id, furthest_stage, stages_skipped, dropout_stage, stages_over_budget"
        " from journey_stages order by mode, journey_id",
    )
    assert rows == [
        ("ordered", "A/j0001", 4, [], None, []),
        ("ordered", "B/j0001", 4, [2], None, [1]),
        ("ordered", "C/j0001", 3, [], 3, []),
        ("ordered", "D/j0001", 4, [2], None, []),
        ("ordered", "E/j0001", 2, [], 2, []),
        ("ordered", "F/j0001", 1, [], 1, []),
        ("strict", "A/j0001", 4, [], None, []),
        ("strict", "B/j0001", 4, [2], None, [1]),
        ("strict", "C/j0001", 3, [], 3, []),
        ("strict", "D/j0001", 1, [], 1, []),
        ("strict", "E/j0001", 2, [], 2, []),
        ("strict", "F/j0001", 1, [], 1, []),
    ]
    texts = db.fetch(
        shop,
        "select mode, journey_id, stages_skipped_text, stages_over_budget_text from journey_stages"
        " where stages_skipped_text != '' or stages_over_budget_text != '' order by all",
    )
    assert texts == [("ordered", "B/j0001", "2", "1"), ("ordered", "D/j0001", "2", ""), ("strict", "B/j0001", "2", "1")]


def test_golden_stage_conversion_around_the_optional_stage(shop):
    rows = db.fetch(
        shop,
        "select stage_index, journeys_entered, journeys_converted, conversion_rate, conversion_from_start,"
        " journeys_dropped, mean_time_to_next_s, median_time_to_next_s, journeys_within_budget,"
        " share_within_budget from stage_funnel where mode = 'ordered' order by stage_index",
    )
    want = [
        # browse: every journey; 5 got further (to compare or, skipping it, to checkout): A 600 s, B 3600 s,
        # C 1800 s (checkout before compare), D 1200 s, E 300 s; within the 30 min budget all but B
        (1, 6, 5, 5 / 6, 1.0, 1, 1500.0, 1200.0, 4, 4 / 5),
        # compare: only the journeys that took it (A, C, E); C took it after checkout, so it was past it at
        # once (0 s); E stopped there
        (2, 3, 2, 2 / 3, 0.5, 1, 300.0, 300.0, None, None),
        # checkout: A, B, C, D; C stopped there; A 600 s, B 3600 s, D 600 s to purchase
        (3, 4, 3, 3 / 4, 4 / 6, 1, 1600.0, 600.0, None, None),
        (4, 3, None, None, 0.5, 0, None, None, None, None),
    ]
    assert [tuple(pytest.approx(v) if isinstance(v, float) else v for v in r) for r in want] == rows


def test_golden_reached_at_and_any_order_rows(shop):
    rows = db.fetch(
        shop,
        "select journey_id, list(stage_index order by stage_index), list(strftime(reached_at, '%H:%M')"
        " order by stage_index) from int_journey_stage_reached where mode = 'ordered' group by 1 order by 1",
    )
    assert rows == [
        ("A/j0001", [1, 2, 3, 4], ["10:00", "10:10", "10:20", "10:30"]),
        ("B/j0001", [1, 3, 4], ["10:00", "11:00", "12:00"]),
        ("C/j0001", [1, 2, 3], ["10:00", "11:00", "10:30"]),
        ("D/j0001", [1, 3, 4], ["10:00", "10:20", "10:30"]),
        ("E/j0001", [1, 2], ["10:00", "10:05"]),
        ("F/j0001", [1], ["10:00"]),
    ]


def test_golden_time_to_next_never_negative(shop):
    rows = db.fetch(
        shop,
        "select journey_id, stage_index, epoch(next_reached_at) - epoch(reached_at) from int_stage_transitions"
        " where mode = 'ordered' and next_reached_at is not null order by 1, 2",
    )
    assert ("C/j0001", 2, 0.0) in rows
    assert all(r[2] >= 0 for r in rows)


def test_the_journey_map_takes_a_skipped_optional_stage_as_designed(shop):
    # follows_design per staged event (no stage designs channels): B steps browse -> checkout across the
    # optional compare (1.0; 2/3 when any skip broke the design); C goes back from checkout to compare (2/3);
    # D jumps browse -> purchase over the required checkout, then back to checkout (2 of 4).
    scores = dict(db.fetch(shop, "select journey_id, conformance_score from journey_stages where mode = 'ordered'"))
    assert scores == pytest.approx(
        {"A/j0001": 1.0, "B/j0001": 1.0, "C/j0001": 2 / 3, "D/j0001": 0.5, "E/j0001": 1.0, "F/j0001": 1.0}
    )
    # The skips stay counted (B, C before its compare, D), marked as by design; D skipped checkout and went
    # back to it.
    gaps = db.fetch(
        shop,
        "select stage_index, is_optional, journeys_at_stage, journeys_skipped, journeys_went_back"
        " from journey_gaps order by stage_index",
    )
    assert gaps == [(1, False, 6, 0, 0), (2, True, 3, 3, 1), (3, False, 4, 1, 1), (4, False, 3, 0, 0)]
