"""The one-grain funnel tables: the obvious sum over them is the right answer."""

from __future__ import annotations

import pytest

from journeys import db


@pytest.fixture(scope="module")
def con(published):
    with db.connect(published.settings.warehouse_path, read_only=True) as con:
        yield con


def _entered_stage_1(con) -> dict[tuple[str, str], int]:
    """Journeys that entered stage 1, from the per-journey table (entry_stage <= 1 <= furthest_stage)."""
    rows = db.fetch(
        con,
        "select stage_model, mode, count(*) from journey_stages where entry_stage = 1 and furthest_stage >= 1"
        " group by all",
    )
    return {(m, mode): n for m, mode, n in rows}


def test_naive_sum_over_the_headline_funnel_is_the_journeys_that_entered_stage_1(con):
    want = _entered_stage_1(con)
    got = db.fetch(
        con, "select stage_model, mode, sum(journeys_entered) from stage_funnel where stage_index = 1 group by all"
    )
    assert {(m, mode): n for m, mode, n in got} == want
    modes = db.fetch(con, "select stage_model, mode from stage_funnel_modes")
    assert set(want) == {tuple(r) for r in modes} and all(n > 0 for n in want.values())
    # The mixed table's naive sum is what the issue found wrong; the split exists because of it.
    mixed = db.fetch(
        con, "select stage_model, mode, sum(journeys_entered) from stage_conversion where stage_index = 1 group by all"
    )
    assert all(n > want[(m, mode)] for m, mode, n in mixed)


def test_cohorts_and_one_breakdown_sum_to_the_headline_funnel(con):
    headline = db.fetch(
        con,
        "select stage_model, mode, stage_index, journeys_entered, journeys_dropped, journeys_in_progress"
        " from stage_funnel order by all",
    )
    by_cohort = db.fetch(
        con,
        "select stage_model, mode, stage_index, sum(journeys_entered), sum(journeys_dropped),"
        " sum(journeys_in_progress) from stage_funnel_by_cohort group by all order by all",
    )
    assert by_cohort == headline
    for (breakdown,) in db.fetch(con, "select distinct breakdown from stage_funnel_by_breakdown"):
        one = db.fetch(
            con,
            "select stage_model, mode, stage_index, sum(journeys_entered), sum(journeys_dropped),"
            " sum(journeys_in_progress) from stage_funnel_by_breakdown where breakdown = $b group by all order by all",
            {"b": breakdown},
        )
        assert one == headline, breakdown


def test_funnel_counts_are_bigint(con):
    types = db.fetch(
        con,
        "select table_name, column_name, data_type from duckdb_columns()"
        " where table_name like 'stage_funnel%' and column_name like 'journeys_%'",
    )
    assert types and {t for _, _, t in types} == {"BIGINT"}, types


def test_each_one_grain_table_is_its_slice_of_stage_conversion_column_for_column(con):
    # stage_conversion is checked against the golden cases; each split table must publish exactly its slice.
    measures = (
        "stage_index, stage_name, journeys_entered, journeys_converted, conversion_rate, conversion_from_start,"
        " journeys_dropped, journeys_in_progress, journeys_overdue, mean_time_to_next_s, median_time_to_next_s,"
        " p90_time_to_next_s,"
        " time_budget_s, journeys_within_budget, share_within_budget"
    )
    slices = {
        "stage_funnel": ("stage_model, mode", "cohort = 'all' and breakdown = 'none'"),
        "stage_funnel_by_cohort": (
            "stage_model, mode, cohort_period, cohort",
            "cohort != 'all' and breakdown = 'none'",
        ),
        "stage_funnel_by_breakdown": (
            "stage_model, mode, breakdown, breakdown_value",
            "cohort = 'all' and breakdown != 'none'",
        ),
    }
    for table, (keys, where) in slices.items():
        got = db.fetch(con, f"select {keys}, {measures} from {table} order by all")
        want = db.fetch(con, f"select {keys}, {measures} from stage_conversion where {where} order by all")
        assert got == want and len(got) > 10, table
