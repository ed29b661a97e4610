"""The data dictionary from one source: warehouse comments and docs/tables.md come from the model catalog."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from journeys import db, dictionary, publish

REPO = Path(__file__).resolve().parents[2]
TABLES_MD = REPO / "docs" / "tables.md"


@pytest.fixture(scope="module")
def con(published):
    with db.connect(published.settings.warehouse_path, read_only=True) as con:
        yield con


def test_published_warehouse_carries_the_catalog_descriptions_as_comments(published, con):
    catalog = published.context.catalog
    tables = dict(
        db.fetch(
            con,
            "select table_name, comment from duckdb_tables() union all"
            " select view_name, comment from duckdb_views() where not internal",
        )
    )
    columns = {
        (t, c): text for t, c, text in db.fetch(con, "select table_name, column_name, comment from duckdb_columns()")
    }
    kept = catalog.kept()
    assert {m.name for m in kept} <= set(tables)
    wrong = [m.name for m in kept if tables[m.name] != m.description]
    wrong += [
        f"{t}.{c}"
        for (t, c), text in columns.items()
        if t in catalog.models and text != catalog.models[t].columns.get(c)
    ]
    assert not wrong, wrong
    # A description with quotes survives the literal quoting intact.
    assert any("'" in (text or "") for text in columns.values())


def test_docs_tables_md_is_current(published, con):
    want = dictionary.tables_markdown(con, published.context.catalog)
    assert TABLES_MD.exists(), "docs/tables.md is missing: `make demo` then `journeys docs`"
    assert TABLES_MD.read_text(encoding="utf-8") == want, (
        "docs/tables.md is out of date with the catalog: `make demo` then `journeys docs`"
    )


def test_parquet_marts_carry_the_catalog_descriptions_as_field_metadata(published, con):
    catalog = published.context.catalog
    marts = publish.publish_marts(con, published.settings, catalog.published(), published.context.batch_id)
    wrong = []
    for table, path in marts.items():
        columns = catalog.models[table].columns
        for field in pq.read_schema(path):
            got = (field.metadata or {}).get(b"description", b"").decode()
            if not got or got != str(columns.get(field.name, "")).strip():
                wrong.append(f"{table}.{field.name}: {got!r}")
    assert len(marts) > 20 and not wrong, wrong
