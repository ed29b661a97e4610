"""Customer-partitioned models built by bucket group in separate DuckDB files equal the single-file build."""

from __future__ import annotations

from pathlib import Path

import pytest

from journeys import build, db, partitions, publish
from tests.journeys.samples import ingested_sample


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A sample built in one file (every table kept), its context, and the run's groups' folder."""
    context = ingested_sample(tmp_path_factory.mktemp("partitions"), events=2_000, seed=11)
    working = context.settings.warehouse_path.with_name(".build-test.duckdb")
    con = db.connect(working, memory_limit="1GB")
    build.build_models(con, context)
    yield con, context, working
    con.close()


@pytest.mark.slow
def test_the_layout_splits_the_catalog_after_identity(full):
    _, context, _ = full
    shape = partitions.layout(context.catalog)
    assert shape.nodes == tuple(context.catalog.partitioned())
    assert {"customers", "int_event_customers", "stage_definitions"} <= set(shape.inputs)
    assert shape.view_nodes == ("lake",)
    assert {"int_journey_events", "journeys", "journey_stages", "journey_events"} <= set(shape.outputs)
    # Aggregates and scratch tables stay in the main process.
    assert "stage_funnel" not in shape.outputs
    assert not {"int_funnel_events", "events"} & set(shape.outputs + shape.inputs)


def test_bucket_groups_deal_every_bucket_once():
    groups = partitions.bucket_groups(16, 2)
    assert len(groups) == 8
    assert sorted(b for g in groups for b in g) == list(range(16))
    assert partitions.bucket_groups(3, 2) == [[0], [1], [2]]
    assert partitions.bucket_groups(5, 1) == [[0, 4], [1], [2], [3]]
    # An existing cluster's size is not in the config: one task per bucket.
    assert partitions.bucket_groups(5, None) == [[0], [1], [2], [3], [4]]


@pytest.mark.slow
def test_groups_built_apart_give_the_single_file_tables(full, tmp_path):
    con, context, working = full
    area = partitions.area_path(working)
    inputs = partitions.export_inputs(con, context.catalog, area)
    groups = partitions.bucket_groups(context.settings.buckets, 1)
    results = [partitions.build_group(context, str(area), inputs, i, g) for i, g in enumerate(groups)]
    # Each group had customers of its own, and left no DuckDB file behind.
    assert all(r["counts"]["int_journey_events"] > 0 for r in results)
    assert not list(area.glob("*.duckdb*"))
    shape = partitions.layout(context.catalog)
    with db.connect(tmp_path / "loaded.duckdb", memory_limit="1GB") as loaded:
        counts = partitions.load_outputs(loaded, results)
    assert set(counts) == set(shape.outputs)
    db.execute(con, f"attach {db.quote_literal(str(tmp_path / 'loaded.duckdb'))} as loaded (read_only)")
    try:
        for table in shape.outputs:
            q = db.quote_ident(table)
            assert db.fetch(con, f"describe loaded.{q}") == db.fetch(con, f"describe {q}"), (
                f"{table}: types changed on the way through Parquet"
            )
            diff = db.fetch(
                con,
                f"select count(*) from ((from loaded.{q} except all from {q}) union all "
                f"(from {q} except all from loaded.{q}))",
            )[0][0]
            assert diff == 0, table
            assert counts[table] == db.fetch(con, f"select count(*) from {q}")[0][0] > 0, table
    finally:
        db.execute(con, "detach loaded")
    partitions.remove_area(working)
    assert not Path(area).exists()


def test_a_group_folder_left_by_a_failed_run_is_removed_by_the_next_run(make_settings, tmp_path):
    settings = make_settings(tmp_path)
    area = partitions.area_path(publish.working_warehouse_path(settings, "20261101T000000-dead"))
    (area / "outputs" / "journeys").mkdir(parents=True)
    (area / "outputs" / "journeys" / "group-3.parquet").write_bytes(b"late")
    assert area in publish.clear_stale_run_files(settings)
    assert not area.exists()
