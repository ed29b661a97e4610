"""Every query of docs/queries.md runs on a published warehouse and returns rows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from journeys import db

QUERIES_MD = Path(__file__).resolve().parents[2] / "docs" / "queries.md"
QUERIES = re.findall(r"```sql\n(.*?)```", QUERIES_MD.read_text(encoding="utf-8"), re.S)


def test_the_page_has_the_worked_queries():
    assert len(QUERIES) >= 7


@pytest.mark.parametrize("sql", QUERIES, ids=[f"query{i + 1}" for i in range(len(QUERIES))])
def test_query_runs_and_returns_rows(published, sql):
    with db.connect(published.settings.warehouse_path, read_only=True) as con:
        rows = db.fetch(con, sql)
    assert rows, sql
