"""Lake compaction: small event files of checked batches merged per date, rows unchanged, safe at any kill."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from journeys import lake
from journeys.config import MappedField, Settings, SourceConfig
from journeys.ingest import events_glob, ingest_sources
from journeys.quality import unchecked_event_files

AS_OF = datetime(2026, 3, 1)
SOURCE = SourceConfig(
    name="web",
    path="web/*.csv",
    format="csv",
    timezone="UTC",
    timestamp_format="%Y-%m-%d %H:%M:%S",
    event_id="hit_id",
    occurred_at="hit_time",
    channel=MappedField(value="web"),
    event_type=MappedField(column="action"),
    identifiers={"client_id": "cookie_id"},
)
DELIVERIES = {
    "b1": ["2026-01-01 10:00:00", "2026-01-02 10:00:00", "2026-01-01 09:00:00"],
    "b2": ["2026-01-01 11:00:00", "2026-01-02 08:00:00"],
    "b3": ["2026-01-02 12:00:00", "2026-01-03 12:00:00"],
}


@pytest.fixture
def three_runs(tmp_path, make_settings) -> Settings:
    """A lake of three ingest runs, one landing file each: dates 01 and 02 hold two or three small files."""
    s = make_settings(tmp_path, sources=[SOURCE])
    for batch, times in DELIVERIES.items():
        path = tmp_path / "landing" / "web" / f"{batch}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = "".join(f"{batch}h{i},{t},page_view,c{i}\n" for i, t in enumerate(times))
        path.write_text("hit_id,hit_time,action,client_id\n" + rows, encoding="utf-8")
        assert ingest_sources(s, as_of=AS_OF, batch_id=batch).loaded == len(times)
    return s


def lake_rows(s: Settings) -> list[tuple]:
    with duckdb.connect() as con:
        sql = "select * from read_parquet($g, hive_partitioning = false) order by event_id"
        return con.sql(sql, params={"g": events_glob(s)}).fetchall()


def lake_files(s: Settings) -> dict[str, list[str]]:
    return {
        part.name: sorted(p.name for p in part.glob("*.parquet")) for part in sorted(s.events_dir.glob("event_date=*"))
    }


def test_compaction_groups_pack_consecutive_small_files_up_to_the_target():
    # Files of half the target or more stay; a group closes before it would pass the target.
    assert lake.compaction_groups([40, 40, 40, 10, 49, 50], 100) == [[0, 1], [2, 3, 4]]
    assert lake.compaction_groups([10, 60, 10], 100) == [[0, 2]]
    assert lake.compaction_groups([10], 100) == []  # one file is not worth a rewrite
    assert lake.compaction_groups([], 100) == []


def test_compaction_groups_at_exactly_half_and_exactly_the_target():
    # A file of exactly half the target is big enough to stay as it is.
    assert lake.compaction_groups([50, 10, 10], 100) == [[1, 2]]
    # A group may reach the target exactly; the next file starts a new group.
    assert lake.compaction_groups([40, 30, 30, 10, 20], 100) == [[0, 1, 2], [3, 4]]


def test_a_files_batch_is_the_longest_checked_prefix_of_its_name():
    checked = {"20261101T000000-aaaa", "20261101T000000", "adhoc-3"}
    assert lake.file_batch(Path("20261101T000000-aaaa-0-1.parquet"), checked) == "20261101T000000-aaaa"
    assert lake.file_batch(Path("20261101T000000-aaaa-cdeadbeef.parquet"), checked) == "20261101T000000-aaaa"
    assert lake.file_batch(Path("adhoc-3.parquet"), checked) is None  # batch "adhoc"


def test_compaction_merges_checked_small_files_per_date_and_keeps_every_row(three_runs):
    s = three_runs
    before = lake_rows(s)
    assert lake_files(s) == {
        "event_date=2026-01-01": ["b1-0.parquet", "b2-1.parquet"],
        "event_date=2026-01-02": ["b1-0.parquet", "b2-1.parquet", "b3-2.parquet"],
        "event_date=2026-01-03": ["b3-2.parquet"],
    }
    report = lake.compact_events(s, {"b1", "b2", "b3"})
    assert (report.files_before, report.files_after, report.rows_rewritten) == (6, 3, 6)
    assert report.partitions_compacted == ["event_date=2026-01-01", "event_date=2026-01-02"]
    files = lake_files(s)
    assert [len(names) for names in files.values()] == [1, 1, 1]
    # Named after the newest batch merged, so the quality step counts the file as checked.
    assert files["event_date=2026-01-01"][0].startswith("b2-c")
    assert files["event_date=2026-01-02"][0].startswith("b3-c")
    assert lake_rows(s) == before  # every column, lineage included
    assert len({r[0] for r in before}) == len(before) == 7
    assert unchecked_event_files(s, ["b1", "b2", "b3"]) == []
    # Rows of a compacted file are in time order, as ingest writes them.
    with duckdb.connect() as con:
        path = str(s.events_dir / "event_date=2026-01-01" / files["event_date=2026-01-01"][0])
        got = con.sql("select event_id from read_parquet($p)", params={"p": path}).fetchall()
    assert got == [("web:b1h2",), ("web:b1h0",), ("web:b2h0",)]
    # A compacted lake is left as it is.
    again = lake.compact_events(s, {"b1", "b2", "b3"})
    assert (again.files_before, again.files_after, again.partitions_compacted) == (3, 3, [])
    assert lake_files(s) == files


def test_compaction_never_merges_a_batch_no_published_run_has_checked(three_runs):
    s = three_runs
    before = lake_rows(s)
    report = lake.compact_events(s, {"b1", "b2"})
    assert (report.files_before, report.files_after) == (6, 4)
    files = lake_files(s)
    assert files["event_date=2026-01-02"][1:] == ["b3-2.parquet"]
    assert files["event_date=2026-01-03"] == ["b3-2.parquet"]
    # The quality step still finds exactly b3's rows to check.
    assert [(p.parent.name, p.name) for p in unchecked_event_files(s, ["b1", "b2"])] == [
        ("event_date=2026-01-02", "b3-2.parquet"),
        ("event_date=2026-01-03", "b3-2.parquet"),
    ]
    assert lake_rows(s) == before


def test_a_small_target_leaves_every_file_alone(three_runs):
    report = lake.compact_events(three_runs, {"b1", "b2", "b3"}, target_bytes=1)
    assert (report.files_before, report.files_after, report.partitions_compacted) == (6, 6, [])


class Kill(BaseException):
    """Stands in for the process dying at one file-system step."""


@pytest.mark.parametrize("kill_at", ["journal", "swap", "first_delete", "second_delete"])
def test_a_compaction_killed_at_any_step_is_completed_or_undone_before_the_next_read(three_runs, monkeypatch, kill_at):
    s = three_runs
    before = lake_rows(s)
    real_replace, real_unlink = lake.os.replace, Path.unlink
    calls = {"replace": 0, "delete": 0}

    def replace(src, dst):
        calls["replace"] += 1
        # The journal is written (1), then the new file swapped in (2).
        if (kill_at, calls["replace"]) in {("journal", 1), ("swap", 2)}:
            raise Kill(kill_at)
        real_replace(src, dst)

    def unlink(self, missing_ok=False):
        if self.parent.name.startswith("event_date=") and self.suffix == ".parquet":
            calls["delete"] += 1
            if (kill_at, calls["delete"]) in {("first_delete", 1), ("second_delete", 2)}:
                raise Kill(kill_at)
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(lake.os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(Kill, match=f"^{kill_at}$"):
        lake.compact_events(s, {"b1", "b2", "b3"})
    monkeypatch.undo()
    journal = s.events_dir / "_compaction.json"
    assert journal.exists() == (kill_at != "journal")
    if kill_at.endswith("delete"):
        assert json.loads(journal.read_text())["partition"] == "event_date=2026-01-01"
        assert len(lake_rows(s)) > len(before)  # the new file and an old one: rows twice until recovered

    # The next ingest (nothing new to read) completes or undoes it before it reads the lake.
    assert ingest_sources(s, as_of=AS_OF, batch_id="b4").read == 0
    assert not journal.exists()
    assert lake_rows(s) == before
    done = kill_at.endswith("delete")
    assert len(lake_files(s)["event_date=2026-01-01"]) == (1 if done else 2)
    # And the next compaction finishes the job.
    lake.compact_events(s, {"b1", "b2", "b3"})
    assert [len(v) for v in lake_files(s).values()] == [1, 1, 1]
    assert lake_rows(s) == before


@pytest.mark.parametrize("kill_at", ["journal", "swap", "delete"])
def test_a_new_versions_rewrite_of_the_lake_killed_at_any_step_ends_in_the_same_lake(three_runs, monkeypatch, kill_at):
    s = three_runs
    # Compacted, so each date's file also holds rows of other landing files that must stay.
    lake.compact_events(s, {"b1", "b2", "b3"})
    (s.landing_dir / "web" / "b1.csv").write_text(
        "hit_id,hit_time,action,client_id\n"
        "b1h0,2026-01-01 10:00:00,page_view,c9\n"  # another visitor
        "b1h2,2026-01-01 09:00:00,page_view,c2\n",  # b1h1 is gone
        encoding="utf-8",
    )
    real_replace, real_unlink = lake.os.replace, Path.unlink
    calls = {"replace": 0, "delete": 0}

    def replace(src, dst):
        calls["replace"] += 1
        # The first partition's journal is written (1), then its new file swapped in (2).
        if (kill_at, calls["replace"]) in {("journal", 1), ("swap", 2)}:
            raise Kill(kill_at)
        real_replace(src, dst)

    def unlink(self, missing_ok=False):
        if self.parent.name.startswith("event_date=") and self.suffix == ".parquet":
            calls["delete"] += 1
            if (kill_at, calls["delete"]) == ("delete", 1):
                raise Kill(kill_at)
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(lake.os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(Kill, match=f"^{kill_at}$"):
        ingest_sources(s, as_of=AS_OF, batch_id="b4")
    monkeypatch.undo()
    # The rerun reads the new version again (the manifest does not have it yet) and replaces what is left; a
    # kill at the first journal changed nothing, so that case is also the run that was never killed.
    report = ingest_sources(s, as_of=AS_OF, batch_id="b5")
    # What the killed run already took out of the lake (a whole first partition) is not counted again.
    assert report.accounting_ok() and (report.loaded, report.replaced) == (2, 1 if kill_at == "delete" else 3)
    assert not (s.events_dir / "_compaction.json").exists()
    with duckdb.connect() as con:
        rows = con.sql(
            "select event_id, identifiers[1].id_value, batch_id from read_parquet($g) order by event_id",
            params={"g": events_glob(s)},
        ).fetchall()
    assert rows == [
        ("web:b1h0", "c9", "b5"),
        ("web:b1h2", "c2", "b5"),
        ("web:b2h0", "c0", "b2"),
        ("web:b2h1", "c1", "b2"),
        ("web:b3h0", "c0", "b3"),
        ("web:b3h1", "c1", "b3"),
    ]
    assert all(lake.own_file(p) for p in s.events_dir.rglob("*.parquet"))
