"""The catalog's column descriptions against the tables a real small run builds (the data dictionary)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from samples import ingested_sample

from journeys import build, db

# A whole demo build for its fixture: `make test-fast` leaves it to `make test`.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# Backticks in a description mark a table or column name: `name` or `table`.`column`.
_NAME_REF = re.compile(r"`([a-z_][a-z0-9_]*)`(?:\.`([a-z_][a-z0-9_]*)`)?")


def _columns(con) -> dict[str, list[str]]:
    rows = db.fetch(
        con,
        "select table_name, list(column_name order by column_index) from duckdb_columns() where not internal "
        "group by table_name",
    )
    return dict(rows)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """What the nightly flow's build tasks make from a generated sample: every table, then the kept ones."""
    context = ingested_sample(tmp_path_factory.mktemp("docs"), seed=11)
    con = db.connect()
    for step in context.catalog.steps():
        build.build_step(con, context, step)
    every = _columns(con)
    build.drop_intermediates(con, context)
    # Publication's own columns (the lake views' text twins) are described too.
    build.publish_warehouse(con, context)
    kept = _columns(con)
    every = {t: list(dict.fromkeys([*every.get(t, []), *kept.get(t, [])])) for t in {*every, *kept}}
    con.close()
    return context.catalog, every, kept


def test_every_published_and_kept_column_has_a_description(run):
    catalog, _, kept = run
    assert {m.name for m in catalog.kept()} == set(kept)
    undocumented = {
        m.name: [c for c in kept[m.name] if not str(m.columns.get(c, "")).strip()]
        for m in catalog.kept()
        if any(not str(m.columns.get(c, "")).strip() for c in kept[m.name])
    }
    assert not undocumented, f"columns without a description: {undocumented}"


def test_no_description_names_a_column_or_table_that_does_not_exist(run):
    catalog, every, _ = run
    columns_anywhere = {c for cols in every.values() for c in cols}
    wrong = []
    for model in catalog.models.values():
        if not model.columns:
            continue
        if model.name not in every:
            wrong.append(f"{model.name}: described, but the run builds no such table")
            continue
        wrong += [f"{model.name}.{c}: no such column" for c in model.columns if c not in every[model.name]]
        for column, text in model.columns.items():
            for table, col in _NAME_REF.findall(str(text)):
                if col and col not in every.get(table, []):
                    wrong.append(f"{model.name}.{column} names `{table}`.`{col}`, which does not exist")
                elif not col and table not in catalog.models and table not in columns_anywhere:
                    wrong.append(f"{model.name}.{column} names `{table}`, no table or column of that name")
    assert not wrong, "\n".join(wrong)
