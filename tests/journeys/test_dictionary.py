"""The data dictionary from one source: warehouse comments and docs/tables.md come from the model catalog."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
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


def test_every_text_twin_holds_its_list_as_the_dictionary_says(published, con):
    # Listed from the catalog so that a new `<x>_text` column is checked without a new test; the form (JSON, or
    # the separator) is read from the column's own description, which is what an analyst relies on.
    twins = [
        (m.name, c, c.removesuffix("_text"), m.columns[c])
        for m in published.context.catalog.kept()
        for c in m.columns
        if c.endswith("_text")
    ]
    assert len(twins) == 7
    for table, text, listed, doc in twins:
        frame = con.sql(f"select {db.quote_ident(listed)}, {db.quote_ident(text)} from {db.quote_ident(table)}").pl()
        # The sample skips no stage and links no table: stages_skipped_text's non-empty form is checked in
        # test_funnel_optional.py, links.identifiers_text in test_ingest_kinds.py.
        if (table, listed) not in {("journey_stages", "stages_skipped"), ("links", "identifiers")}:
            assert frame[listed].list.len().sum() > 0, f"{table}.{listed}: no row has a list to compare"
        if "JSON text" in doc:
            decoded = frame[text].str.json_decode(frame.schema[listed])
            assert decoded.to_list() == frame[listed].to_list(), (table, text)
            continue
        joined = re.search(r"joined with '([^']+)'", doc)
        assert joined, f"{table}.{text}: the description names neither JSON text nor a separator"
        want = frame[listed].list.eval(pl.element().cast(pl.String)).list.join(joined.group(1))
        assert want.to_list() == frame[text].to_list(), (table, text)
