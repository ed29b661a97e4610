"""Atomic publication, stale-file cleanup and the run lock."""

import shutil
import subprocess
import sys
import threading

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
    paths = publish.publish_marts(con, settings, [mart], "b1")
    assert paths == {"t": str(settings.marts_dir / "t" / "t.parquet")}
    rows = duckdb.connect().sql("select k from read_parquet($p)", params={"p": paths["t"]}).fetchall()
    assert rows == [(1,), (2,), (3,)]
    assert not list(settings.marts_dir.glob("t/.*"))


def _marts(con, run: int) -> list[models.Model]:
    """Two tables whose every row says which run wrote it."""
    for name in ("a", "b"):
        db.execute(con, f"create or replace table {name} as select range as k, $run as run from range(3)", {"run": run})
    return [models.Model(name=n, layer="marts", materialized="table", grain=("k",), publish="true") for n in "ab"]


def _runs_seen(settings) -> dict[str, set[int]]:
    con = duckdb.connect()
    return {
        n: {
            r[0]
            for r in con.sql(
                "select run from read_parquet($p)", params={"p": str(publish.mart_path(settings, n))}
            ).fetchall()
        }
        for n in "ab"
    }


def test_a_run_killed_between_two_marts_leaves_the_previous_set_whole(settings, monkeypatch):
    con = db.connect()
    publish.publish_marts(con, settings, _marts(con, 1), "20261101T000000-aaaaaaaa")
    real_write = publish._write_mart

    def dies_after_the_first(con_, model, final, metadata=None):
        if model.name == "b":
            raise KeyboardInterrupt("killed between two marts")
        return real_write(con_, model, final, metadata)

    monkeypatch.setattr(publish, "_write_mart", dies_after_the_first)
    with pytest.raises(KeyboardInterrupt, match="killed between two marts"):
        publish.publish_marts(con, settings, _marts(con, 2), "20261102T000000-bbbbbbbb")
    assert _runs_seen(settings) == {"a": {1}, "b": {1}}
    monkeypatch.undo()
    assert [p.name for p in publish.clear_stale_run_files(settings)] == [".20261102T000000-bbbbbbbb.tmp"]
    publish.publish_marts(con, settings, _marts(con, 3), "20261103T000000-cccccccc")
    assert _runs_seen(settings) == {"a": {3}, "b": {3}}


def test_sets_switch_together_and_only_the_last_two_are_kept(settings):
    con = db.connect()
    for run in (1, 2, 3):
        publish.publish_marts(con, settings, _marts(con, run), f"2026110{run}T000000-0000000{run}")
        assert _runs_seen(settings) == {"a": {run}, "b": {run}}
    kept = sorted(p.name for p in (settings.marts_dir / ".runs").iterdir())
    assert kept == ["20261102T000000-00000002", "20261103T000000-00000003"]
    assert publish.mart_path(settings, "a").is_symlink()


def test_a_mart_file_of_the_old_layout_becomes_a_link_into_the_set(settings):
    old = publish.mart_path(settings, "a")
    old.parent.mkdir(parents=True)
    old.write_bytes(b"not parquet: the layout before sets")
    con = db.connect()
    publish.publish_marts(con, settings, _marts(con, 7), "20261107T000000-77777777")
    assert old.is_symlink() and _runs_seen(settings) == {"a": {7}, "b": {7}}


def test_a_data_root_copied_without_its_links_still_publishes(settings, tmp_path, make_settings):
    con = db.connect()
    publish.publish_marts(con, settings, _marts(con, 1), "20261101T000000-aaaaaaaa")
    copy = make_settings(tmp_path / "copy")
    shutil.copytree(settings.root, copy.root)  # follows links: .current and the marts become plain files
    assert not (copy.marts_dir / ".current").is_symlink()
    publish.publish_marts(con, copy, _marts(con, 2), "20261102T000000-bbbbbbbb")
    assert _runs_seen(copy) == {"a": {2}, "b": {2}}
    assert _runs_seen(settings) == {"a": {1}, "b": {1}}


def test_a_foreign_wal_never_replays_onto_the_new_warehouse(settings, tmp_path):
    # An analyst's read-write session that was killed before a checkpoint leaves a WAL beside the file.
    settings.warehouse_path.parent.mkdir(parents=True)
    analyst = (
        "import duckdb, os\n"
        f"con = duckdb.connect({str(settings.warehouse_path)!r})\n"
        "con.execute('pragma disable_checkpoint_on_shutdown')\n"
        "con.execute('create table analyst_scratch as select 42 as x')\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", analyst], check=True, timeout=60)
    wal = settings.warehouse_path.with_name("journeys.duckdb.wal")
    assert wal.exists()
    working = publish.working_warehouse_path(settings, "b1")
    with db.connect(working) as con:
        db.execute(con, "create table journeys as select 1 as journey")
    publish.swap_in_warehouse(settings, working)
    assert not wal.exists()
    assert list((settings.state_dir / "replaced-wal").glob("journeys.duckdb.*.wal"))
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        tables = {r[0] for r in con.sql("select table_name from duckdb_tables()").fetchall()}
    assert tables == {"journeys"}


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
    refused = threading.Event()

    def second():
        with publish.run_lock(settings, on_busy=refused.set):
            order.append("second")

    with publish.run_lock(settings):
        t = threading.Thread(target=second)
        t.start()
        # The first run lets go only once the second has been refused the lock, so the second really waited.
        assert refused.wait(10), "the second run never found the lock held"
        order.append("first done")
    t.join(10)
    assert not t.is_alive()
    assert order == ["first done", "second"]


def test_lock_gives_up_after_its_wait(settings):
    refusals = []
    with (
        publish.run_lock(settings),
        pytest.raises(publish.RunLockedError, match=r"run\.lock is held by another run$"),
        publish.run_lock(settings, wait_s=0.6, on_busy=lambda: refusals.append(1)),
    ):
        pass
    # It retried after its first refusal (0.6 s is past one 0.5 s pause) and reported being busy once.
    assert refusals == [1]
