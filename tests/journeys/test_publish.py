"""Atomic publication, stale-file cleanup and the run lock."""

import fcntl
import os
import shutil
import subprocess
import sys
import threading
from types import SimpleNamespace

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


BATCHES = {1: "20261101T000000-aaaaaaaa", 2: "20261102T000000-bbbbbbbb", 3: "20261103T000000-cccccccc"}


def _publish_set(settings, con, run: int) -> dict[str, str]:
    """Publish run `run`'s set as the flow does: marts, a warehouse saying its batch, a pending state file."""
    batch = BATCHES[run]
    staging = publish.start_set(settings, batch)
    publish.write_marts(con, _marts(con, run), staging)
    publish.pending_path(settings, staging, settings.state_dir / "last_run.txt").write_text(batch)
    working = publish.working_warehouse_path(settings, batch)
    with db.connect(working) as wh:
        db.execute(wh, "create table runs as select $b as batch_id", {"b": batch})
    return publish.switch_set(settings, batch, ["a", "b"], warehouse=working)


def _published(settings) -> tuple[dict[str, set[int]], str, str | None]:
    """Runs of the published marts, the published warehouse's batch, the state file's batch."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        [(wh,)] = con.sql("select batch_id from runs").fetchall()
    state = settings.state_dir / "last_run.txt"
    return _runs_seen(settings), wh, state.read_text() if state.exists() else None


@pytest.mark.parametrize("point", [1, 2])
def test_marts_and_warehouse_switch_at_one_rename_whenever_a_run_is_killed(settings, monkeypatch, point):
    con = db.connect()
    paths = _publish_set(settings, con, 1)
    assert paths["warehouse"] == str(settings.warehouse_path) and settings.warehouse_path.is_symlink()
    assert _published(settings) == ({"a": {1}, "b": {1}}, BATCHES[1], BATCHES[1])
    calls = []

    def kill(description):
        calls.append(description)
        if len(calls) == point:
            raise KeyboardInterrupt(f"killed at {description}:{point}")

    monkeypatch.setattr(publish.progress, "pause_point", kill)
    with pytest.raises(KeyboardInterrupt, match=f"killed at switch:{point}"):
        _publish_set(settings, con, 2)
    monkeypatch.undo()
    if point == 1:  # before the switch: the previous set, whole
        assert _published(settings) == ({"a": {1}, "b": {1}}, BATCHES[1], BATCHES[1])
    else:  # after it: the new set, whole; its state waits inside the set for the next run's start
        assert _published(settings) == ({"a": {2}, "b": {2}}, BATCHES[2], BATCHES[1])
    publish.clear_stale_run_files(settings)
    assert _published(settings)[1:] == ((BATCHES[1],) * 2 if point == 1 else (BATCHES[2],) * 2)
    assert not list((settings.marts_dir / ".runs").glob(".*"))
    _publish_set(settings, con, 3)
    assert _published(settings) == ({"a": {3}, "b": {3}}, BATCHES[3], BATCHES[3])
    assert sorted(p.name for p in (settings.marts_dir / ".runs").iterdir()) == sorted(
        [BATCHES[2] if point == 2 else BATCHES[1], BATCHES[3]]
    )


def _analyst_session(path) -> None:
    """An analyst's read-write session killed before a checkpoint: its WAL stays behind."""
    analyst = (
        "import duckdb, os\n"
        f"con = duckdb.connect({str(path)!r})\n"
        "con.execute('pragma disable_checkpoint_on_shutdown')\n"
        "con.execute('create table analyst_scratch as select 42 as x')\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", analyst], check=True, timeout=60)


def _tables(path) -> set[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {r[0] for r in con.sql("select table_name from duckdb_tables()").fetchall()}


def test_a_foreign_wal_never_replays_onto_the_new_warehouse(settings):
    con = db.connect()
    _publish_set(settings, con, 1)
    # DuckDB 2.0 writes the WAL beside the file the link leads to, so it stays with the old set's file.
    _analyst_session(settings.warehouse_path)
    old_set = settings.marts_dir / ".runs" / BATCHES[1]
    assert (old_set / "journeys.duckdb.wal").exists()
    # A DuckDB 1.x client writes it beside the link: moved aside before the switch.
    (settings.warehouse_path.parent / "journeys.duckdb.wal").write_bytes(b"a 1.x client's WAL")
    _publish_set(settings, con, 2)
    assert not (settings.warehouse_path.parent / "journeys.duckdb.wal").exists()
    assert list((settings.state_dir / "replaced-wal").glob("journeys.duckdb.*.wal"))
    assert _tables(settings.warehouse_path) == {"runs"}
    assert _tables(old_set / "journeys.duckdb") == {"runs", "analyst_scratch"}  # the old file kept its WAL


def test_a_warehouse_file_of_the_layout_before_sets_becomes_the_link(settings):
    con = db.connect()
    publish.publish_marts(con, settings, _marts(con, 1), BATCHES[1])
    with db.connect(settings.warehouse_path) as wh:  # published by a run before the warehouse joined the set
        db.execute(wh, "create table runs as select $b as batch_id", {"b": BATCHES[1]})
    _analyst_session(settings.warehouse_path)
    assert settings.warehouse_path.with_name("journeys.duckdb.wal").exists()
    _publish_set(settings, con, 2)
    assert settings.warehouse_path.is_symlink()
    assert os.readlink(settings.warehouse_path) == "../marts/.current/journeys.duckdb"
    assert _published(settings) == ({"a": {2}, "b": {2}}, BATCHES[2], BATCHES[2])
    # The old file moved into its set (one inode, two names, until the link replaced the path).
    assert _tables(settings.marts_dir / ".runs" / BATCHES[1] / "journeys.duckdb") == {"runs"}
    assert list((settings.state_dir / "replaced-wal").glob("journeys.duckdb.*.wal"))


def test_stale_working_files_are_cleared(settings):
    settings.warehouse_path.parent.mkdir(parents=True)
    (settings.warehouse_path.parent / ".build-x.duckdb").write_bytes(b"x")
    (settings.marts_dir / "journeys").mkdir(parents=True)
    (settings.marts_dir / "journeys" / ".journeys.parquet.123.tmp").write_bytes(b"x")
    (settings.marts_dir / "journeys" / "journeys.parquet").write_bytes(b"keep")
    # The raw handoff of a run that died before its quality step: a batch id is one flow run's, never resumed.
    (settings.handoff_dir / "20261101T000000-deadbeef").mkdir(parents=True)
    (settings.handoff_dir / "20261101T000000-deadbeef" / "x.files.parquet").write_bytes(b"x")
    removed = publish.clear_stale_run_files(settings)
    assert len(removed) == 3
    assert [p.name for p in (settings.marts_dir / "journeys").iterdir()] == ["journeys.parquet"]
    assert not list(settings.handoff_dir.iterdir())


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


def test_lock_still_tries_once_more_at_exactly_its_deadline(settings, monkeypatch):
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with (settings.state_dir / "run.lock").open("a+") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        pauses = []

        def pause(seconds):
            pauses.append(seconds)
            fcntl.flock(holder.fileno(), fcntl.LOCK_UN)  # the other run finishes during the pause

        # A clock that never moves: the check after the first refusal happens exactly at the deadline.
        monkeypatch.setattr(publish, "time", SimpleNamespace(monotonic=lambda: 100.0, sleep=pause))
        with publish.run_lock(settings, wait_s=0):
            assert pauses == [0.5]
