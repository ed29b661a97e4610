"""Atomic publication, stale-file cleanup and the run lock."""

import threading
import time

import duckdb
import pytest

from journeys import db, models, publish


@pytest.fixture
def settings(tmp_path, make_settings):
    return make_settings(tmp_path)


def test_publish_marts_writes_ordered_parquet_and_leaves_no_temp_files(settings):
    con = db.connect()
    db.execute(con, "create table t as select * from (values (3, 'c'), (1, 'a'), (2, 'b')) as v(k, x)")
    mart = models.Model(name="t", layer="marts", materialized="table", grain=("k",), publish="true")
    paths = publish.publish_marts(con, settings, [mart])
    assert paths == {"t": str(settings.marts_dir / "t" / "t.parquet")}
    rows = duckdb.connect().sql("select k from read_parquet($p)", params={"p": paths["t"]}).fetchall()
    assert rows == [(1,), (2,), (3,)]
    assert not list(settings.marts_dir.glob("t/.*"))


def test_stale_working_files_are_cleared(settings):
    settings.warehouse_path.parent.mkdir(parents=True)
    (settings.warehouse_path.parent / ".build-x.duckdb").write_bytes(b"x")
    (settings.marts_dir / "journeys").mkdir(parents=True)
    (settings.marts_dir / "journeys" / ".journeys.parquet.123.tmp").write_bytes(b"x")
    (settings.marts_dir / "journeys" / "journeys.parquet").write_bytes(b"keep")
    removed = publish.clear_stale_run_files(settings)
    assert len(removed) == 2
    assert [p.name for p in (settings.marts_dir / "journeys").iterdir()] == ["journeys.parquet"]


def test_second_run_waits_for_the_lock(settings):
    order = []

    def second():
        with publish.run_lock(settings):
            order.append("second")

    with publish.run_lock(settings):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.8)
        order.append("first done")
    t.join(5)
    assert order == ["first done", "second"]


def test_lock_gives_up_after_its_wait(settings):
    with publish.run_lock(settings), pytest.raises(publish.RunLockedError), publish.run_lock(settings, wait_s=0.6):
        pass
