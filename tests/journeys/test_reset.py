"""`journeys reset`: every landing file re-ingested from scratch, swapped in atomically, nothing else touched."""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from journeys import publish, reset
from journeys.config import MappedField, Settings, SourceConfig
from journeys.ingest import events_glob, ingest_sources, quarantine_glob

AS_OF = datetime(2026, 3, 1)
HEADER = "hit_id,hit_time,action,email\n"
ROWS = (
    "h1,2026-01-15 10:00:00,view,a@example.com\n"
    "h2,2026-01-16 10:00:00,buy,a@example.com\n"
    "h3,2026-02-01 10:00:00,oops,b@example.com\n"
    "h4,2026-05-01 10:00:00,view,b@example.com\n"  # later than as_of: held back
    ",2026-01-17 10:00:00,view,c@example.com\n"  # no id: quarantined
)


def source(event_map: dict[str, str]) -> SourceConfig:
    return SourceConfig(
        name="web",
        path="web/*.csv",
        format="csv",
        timestamp_format="%Y-%m-%d %H:%M:%S",
        event_id="hit_id",
        occurred_at="hit_time",
        channel=MappedField(value="web"),
        event_type=MappedField(column="action", map=event_map),
        identifiers={"email": "email"},
    )


GOOD = {"view": "page_view", "buy": "purchase", "oops": "page_view"}
BAD = {"view": "purchase", "buy": "page_view"}  # a bad mapping: every event has the wrong type


def settings_for(root: Path, event_map: dict[str, str] = GOOD) -> Settings:
    return Settings(data_root=root, pii_salt="s", sources=[source(event_map)], memory_limit="512MB", threads=2)


def project(root: Path) -> Path:
    landing = root / "landing" / "web"
    landing.mkdir(parents=True)
    (landing / "a.csv").write_text(HEADER + ROWS)
    (landing / "b.csv").write_text(HEADER + "h5,2026-02-10 10:00:00,buy,b@example.com\n")
    return root


def digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "run.lock"
    }


def rows(glob: str, order: str) -> list[dict]:
    with duckdb.connect() as con:
        rel = con.sql(
            f"select * exclude (batch_id) from read_parquet($g, hive_partitioning = false) order by {order}",
            params={"g": glob},
        )
        lineage = ("ingested_at", "quarantined_at")
        return [{k: v for k, v in r.items() if k not in lineage} for r in rel.to_arrow_table().to_pylist()]


def lake(settings: Settings) -> tuple[list[dict], list[dict]]:
    return rows(events_glob(settings), "event_id"), rows(quarantine_glob(settings), "source_file, line")


@pytest.fixture
def reference(tmp_path) -> tuple[Settings, tuple[list[dict], list[dict]]]:
    """A first ingest with the right mapping: what a reset must give."""
    s = settings_for(project(tmp_path / "ref"))
    ingest_sources(s, as_of=AS_OF, batch_id="first")
    return s, lake(s)


def bad_root(tmp_path: Path) -> Settings:
    """A data root ingested with the bad mapping, plus files the pipeline did not make."""
    root = project(tmp_path / "root")
    ingest_sources(settings_for(root, BAD), as_of=AS_OF, batch_id="bad")
    (root / "notes.txt").write_text("the user's own file\n")
    (root / "lake" / "README.txt").write_text("the user's own file in lake/\n")
    (root / "state" / "identity_map.parquet").write_bytes(b"identity state a reset keeps")
    return settings_for(root)


def test_reset_reingests_every_landing_file_and_touches_nothing_it_did_not_make(tmp_path, reference):
    s = bad_root(tmp_path)
    assert lake(s) != reference[1]
    before = digest(s.root)
    report = reset.reset_lake(s, as_of=AS_OF, batch_id="reset")
    assert report.accounting_ok() and (report.read, report.loaded, report.quarantined, report.held) == (6, 4, 1, 1)
    assert lake(s) == reference[1]
    after = digest(s.root)
    kept = [k for k in before if not k.startswith(("lake/events/", "lake/quarantine/", "state/"))]
    kept += ["state/identity_map.parquet"]
    assert {k: after.get(k) for k in kept} == {k: before[k] for k in kept}  # landing and user files: same bytes
    assert {k for k in before if k.startswith("landing/")} == {k for k in after if k.startswith("landing/")}
    assert not [p for p in s.root.iterdir() if p.name.startswith(".reset")]
    # The held row is still held, and the next ingest at a later as_of loads it once.
    assert report.still_held == 1
    assert ingest_sources(s, as_of=datetime(2026, 6, 1), batch_id="next").released == 1


def test_reset_killed_before_its_new_lake_is_ready_leaves_the_old_one(tmp_path, reference, monkeypatch):
    import journeys.ingest as ingest

    s = bad_root(tmp_path)
    before = digest(s.root)
    calls = {"n": 0}
    real = ingest.write_manifest

    def dying(*args):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt("killed before the manifest")  # the new lake's events are written
        real(*args)

    monkeypatch.setattr(ingest, "write_manifest", dying)
    with pytest.raises(KeyboardInterrupt, match=r"^killed before the manifest$"):
        reset.reset_lake(s, as_of=AS_OF, batch_id="reset")
    monkeypatch.undo()
    assert digest(s.root) == before
    # A SIGKILL leaves the build folder behind: it is never read, and the next reset starts over.
    (s.root / ".reset-build" / "lake").mkdir(parents=True)
    reset.reset_lake(s, as_of=AS_OF, batch_id="reset2")
    assert lake(s) == reference[1]
    assert not [p for p in s.root.iterdir() if p.name.startswith(".reset")]


@pytest.mark.slow
def test_reset_killed_during_the_swap_is_completed_by_the_next_ingest(tmp_path, reference, monkeypatch):
    # Kill the swap at every one of its renames in turn: the next ingest always completes it.
    k = 0
    while True:
        k += 1
        s = bad_root(tmp_path / f"kill{k}")
        real = os.replace
        calls = {"n": 0}

        def dying(src, dst, _real=real, _k=k, calls=calls):
            if any(d in str(p) for d in (".reset-ready", ".reset-old") for p in (src, dst)):
                calls["n"] += 1
                if calls["n"] == _k:
                    raise KeyboardInterrupt
            _real(src, dst)

        monkeypatch.setattr(reset.os, "replace", dying)
        try:
            reset.reset_lake(s, as_of=AS_OF, batch_id="reset")
        except KeyboardInterrupt:
            pass
        else:
            break
        finally:
            monkeypatch.undo()
        committed = (s.root / ".reset-ready").is_dir() or (s.root / ".reset-done").is_dir()
        assert committed == (k > 1)  # the first rename is the commit point
        old = lake(settings_for(s.root, BAD)) if not committed else None
        report = ingest_sources(s, as_of=AS_OF, batch_id="run")
        if committed:
            assert report.read == 0 and all(f.skipped for f in report.files)  # the new manifest is in place
            assert lake(s) == reference[1], k
        else:
            assert lake(s) == old
        assert not [p for p in s.root.iterdir() if p.name.startswith(".reset")]
        assert (s.root / "notes.txt").is_file() and (s.root / "lake" / "README.txt").is_file()
    assert k - 1 == 10  # renames: the commit rename, four items moved aside and four in, the rename that ends the swap


def test_reset_waits_for_the_run_lock_and_refuses_an_empty_landing(tmp_path):
    s = bad_root(tmp_path)
    before = digest(s.root)
    held, release = threading.Event(), threading.Event()

    def hold_lock():
        with publish.run_lock(s):
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold_lock)
    t.start()
    held.wait(10)
    try:
        with pytest.raises(publish.RunLockedError, match=r"run\.lock is held by another run$"):
            reset.reset_lake(s, as_of=AS_OF, batch_id="reset", lock_wait_s=0.2)
    finally:
        release.set()
        t.join()
    assert digest(s.root) == before

    for p in (s.root / "landing" / "web").iterdir():
        p.rename(s.root / p.name)  # out of landing: no source matches any file
    state = {k: v for k, v in digest(s.root).items() if k.startswith(("lake/", "state/"))}
    with pytest.raises(reset.ResetRefusedError, match="no landing file"):
        reset.reset_lake(s, as_of=AS_OF, batch_id="reset")
    assert {k: v for k, v in digest(s.root).items() if k.startswith(("lake/", "state/"))} == state
