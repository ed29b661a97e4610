"""Types every reader takes: counts are BIGINT in the warehouse and INT64 in the Parquet marts."""

from __future__ import annotations

import re

import pyarrow.parquet as pq

from journeys import db, publish

# Columns that count rows of data (README: journeys_<state>, n_<thing>, <things>_in_cell); n_stages and
# n_conditions are sizes of a stage model from its YAML, INTEGER like stage_index.
COUNT = re.compile(r"^(journeys_.*|n_(?!stages$|conditions$).*|.*_in_cell)$")


def test_counts_are_bigint_in_the_warehouse_and_int64_in_parquet(published):
    settings, catalog = published.settings, published.context.catalog
    with db.connect(settings.warehouse_path, read_only=True) as con:
        types = db.fetch(
            con, "select table_name, column_name, data_type from duckdb_columns() where schema_name = 'main'"
        )
        marts = publish.publish_marts(con, settings, catalog.published(), published.context.batch_id)
    kept = {m.name for m in catalog.kept()}
    warehouse = {(t, c): ty for t, c, ty in types if t in kept}
    assert not [k for k, ty in warehouse.items() if ty in ("HUGEINT", "UHUGEINT")]
    counts = {k: ty for k, ty in warehouse.items() if COUNT.match(k[1])}
    assert len(counts) > 20 and set(counts.values()) == {"BIGINT"}, counts
    wrong = []
    for table, path in marts.items():
        for field in pq.read_schema(path):
            want = {"BIGINT": "int64", "INTEGER": "int32"}.get(warehouse[(table, field.name)])
            if want and str(field.type) != want:
                wrong.append(f"{table}.{field.name}: {field.type}, warehouse {warehouse[(table, field.name)]}")
    assert not wrong, wrong
