"""The one way a golden case's expected file is compared: every column of its header, every row.

`tests/test_columns_asserted.py` counts a column of a mart as asserted when a test calls
`assert_matches_golden(con, "<case>", "<table>", ...)` with literal names and the case's
`expected_<table>.csv` lists the column; a comparison written any other way is not seen there.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

from journeys import db

GOLDEN_ROOT = Path(__file__).resolve().parents[1] / "golden"


def expected_rows(case: str, table: str) -> pl.DataFrame:
    """The rows of tests/golden/<case>/expected_<table>.csv."""
    return pl.read_csv(GOLDEN_ROOT / case / f"expected_{table}.csv")


def assert_rows_close(got: list[dict], want: list[dict]) -> None:
    """Same rows in the same order, the same columns, floats equal to 1e-6 relative."""
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        for k, v in w.items():
            assert g[k] == (pytest.approx(v) if isinstance(v, float) else v), (w, k)


def assert_matches_golden(
    con: duckdb.DuckDBPyConnection, case: str, table: str, *, order_by: str, where: str = "true"
) -> None:
    """`table`'s rows (filtered by `where`, sorted by `order_by`) equal the case's expected file in full."""
    want = expected_rows(case, table)
    # The header decides the columns: a column added to the file is compared without touching the test.
    cols = ", ".join(db.quote_ident(c) for c in want.columns)
    got = con.sql(f"select {cols} from {db.quote_ident(table)} where {where} order by {order_by}").pl()
    assert_rows_close(got.to_dicts(), want.to_dicts())
