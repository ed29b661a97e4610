"""Idempotent ingest on a generated multi-source sample: re-runs change no byte; split deliveries give one lake."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from journeys.config import Settings, load_settings
from journeys.generate import GenerateSpec, generate_sample
from journeys.ingest import events_glob, ingest_sources, quarantine_glob
from tests.journeys.conftest import fail_ingest_file_on_call

# Several ingests and kills per test: `make test-fast` leaves it to `make test`.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SPEC = GenerateSpec(events=3_000, seed=5)
LINEAGE = {"ingested_at", "batch_id", "quarantined_at"}


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    generate_sample(SPEC, root)
    return root / "landing"


@pytest.fixture(scope="module")
def whole(landing, tmp_path_factory) -> tuple[Settings, object]:
    """The whole sample ingested in one clean run: the reference lake."""
    root = tmp_path_factory.mktemp("whole")
    copy_landing(landing, root)
    return settings_for(root), ingest_sources(settings_for(root), as_of=SPEC.as_of, batch_id="one")


def settings_for(root: Path) -> Settings:
    return load_settings(str(REPO / "journeys.yaml"), data_root=root, memory_limit="1GB")


def copy_landing(landing: Path, root: Path, keep=lambda rel: True) -> None:
    for p in sorted(landing.rglob("*")):
        rel = p.relative_to(landing)
        if p.is_file() and keep(rel):
            (root / "landing" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, root / "landing" / rel)


def snapshot(s: Settings) -> dict[str, bytes]:
    return {
        p.relative_to(s.root).as_posix(): p.read_bytes()
        for d in (s.lake_dir, s.state_dir)
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != "run.lock"
    }


def table(glob: str, order: str) -> list[dict]:
    """Every row of a Parquet glob without its lineage columns, in a stable order."""
    with duckdb.connect() as con:
        cols = [r[0] for r in con.sql("describe select * from read_parquet($g)", params={"g": glob}).fetchall()]
        keep = ", ".join(f'"{c}"' for c in cols if c not in LINEAGE)
        rel = con.sql(f"select {keep} from read_parquet($g) order by {order}", params={"g": glob})
        return rel.to_arrow_table().to_pylist()


def test_ingesting_the_same_landing_folder_twice_changes_no_byte(landing, tmp_path):
    copy_landing(landing, tmp_path)
    s = settings_for(tmp_path)
    first = ingest_sources(s, as_of=SPEC.as_of, batch_id="b1")
    assert first.accounting_ok() and first.loaded > 2_000 and first.quarantined > 0 and first.duplicates > 0
    before = snapshot(s)
    assert any(k.startswith("lake/events/") for k in before) and any(k.startswith("lake/quarantine/") for k in before)
    second = ingest_sources(s, as_of=SPEC.as_of, batch_id="b2")
    assert all(f.skipped for f in second.files) and second.read == 0
    assert snapshot(s) == before


def test_two_halves_in_two_runs_give_the_lake_of_one_run(landing, whole, tmp_path):
    files = sorted(p.relative_to(landing) for p in landing.rglob("*") if p.is_file())
    # The first half of each source's files (in the order ingest takes them), then the rest.
    by_source: dict[str, list[Path]] = {}
    for f in files:
        by_source.setdefault(f.parts[0], []).append(f)
    first_half = {f for fs in by_source.values() for f in fs[: len(fs) // 2]}
    assert 0 < len(first_half) < len(files)

    ws, one = whole
    split = tmp_path / "split"
    copy_landing(landing, split, keep=lambda rel: rel in first_half)
    a = ingest_sources(settings_for(split), as_of=SPEC.as_of, batch_id="first")
    copy_landing(landing, split, keep=lambda rel: rel not in first_half)
    b = ingest_sources(settings_for(split), as_of=SPEC.as_of, batch_id="second")

    assert (a.read + b.read, a.loaded + b.loaded, a.quarantined + b.quarantined, a.duplicates + b.duplicates) == (
        one.read,
        one.loaded,
        one.quarantined,
        one.duplicates,
    )
    assert set(a.affected_dates) | set(b.affected_dates) == set(one.affected_dates)
    ss = settings_for(split)
    assert table(events_glob(ss), "event_id") == table(events_glob(ws), "event_id")
    assert table(quarantine_glob(ss), "source_file, line") == table(quarantine_glob(ws), "source_file, line")


def test_backfill_with_an_early_as_of_then_a_later_one_gives_the_lake_of_one_run(landing, whole, tmp_path):
    ws, one = whole
    copy_landing(landing, tmp_path)
    s = settings_for(tmp_path)
    early = ingest_sources(s, as_of=SPEC.as_of - timedelta(days=60), batch_id="early")
    assert early.accounting_ok() and early.held > 500 and early.still_held == early.held
    assert early.quarantined == one.quarantined  # rows after the early as_of are not quarantined
    later = ingest_sources(s, as_of=SPEC.as_of, batch_id="later")
    assert later.read == 0 and (later.released, later.still_held) == (early.held, 0)

    # Each row counted once over both runs, and the later run's lake is that of one run at its as_of.
    assert (early.read, early.loaded + later.released, early.quarantined, early.duplicates) == (
        one.read,
        one.loaded,
        one.quarantined,
        one.duplicates,
    )
    assert set(early.affected_dates) | set(later.affected_dates) == set(one.affected_dates)
    assert table(events_glob(s), "event_id") == table(events_glob(ws), "event_id")
    assert table(quarantine_glob(s), "source_file, line") == table(quarantine_glob(ws), "source_file, line")


class Crash(Exception):
    """Stands in for a process dying at one write."""


@pytest.mark.parametrize("when", ["before_manifest", "between_partitions"])
def test_ingest_dying_mid_write_is_completed_by_the_next_run(landing, whole, tmp_path, monkeypatch, when):
    import journeys.ingest as ingest

    crashed = tmp_path / "crashed"
    copy_landing(landing, crashed)
    s = settings_for(crashed)
    calls = {"n": 0}
    real_replace, real_manifest = ingest._fsync_replace, ingest.write_manifest

    def dying_replace(src, dst):
        # The run's second event partition: some of its events are in the lake, the rest not.
        if "events" in dst.parts and dst.name.startswith("crash-"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise Crash("killed between partitions")
        real_replace(src, dst)

    def dying_manifest(con, settings, tmp):
        calls["n"] += 1
        if calls["n"] == 1:  # the run's events are in the lake, no file is recorded as ingested yet
            raise Crash("killed before manifest")
        real_manifest(con, settings, tmp)

    if when == "before_manifest":
        monkeypatch.setattr(ingest, "write_manifest", dying_manifest)
    else:
        monkeypatch.setattr(ingest, "_fsync_replace", dying_replace)
    with pytest.raises(Crash, match=f"^killed {when.replace('_', ' ')}$"):
        ingest_sources(s, as_of=SPEC.as_of, batch_id="crash")
    monkeypatch.undo()
    # What a killed process would leave aside (an exception cleans up after itself, SIGKILL does not).
    (s.lake_dir / "_tmp" / "crash-9" / "events").mkdir(parents=True)
    (s.lake_dir / "_tmp" / "crash-9" / "events" / "half.parquet").write_bytes(b"PAR1 half written")

    rerun = ingest_sources(s, as_of=SPEC.as_of, batch_id="rerun")
    assert rerun.accounting_ok()
    assert not (s.lake_dir / "_tmp").exists()
    ws = whole[0]
    assert table(events_glob(s), "event_id") == table(events_glob(ws), "event_id")
    assert table(quarantine_glob(s), "source_file, line") == table(quarantine_glob(ws), "source_file, line")


def test_a_failing_file_keeps_the_files_finished_before_it_and_a_retry_reads_only_the_rest(
    landing, whole, tmp_path, monkeypatch
):

    copy_landing(landing, tmp_path)
    s = settings_for(tmp_path)
    fail_ingest_file_on_call(monkeypatch, 3)
    with pytest.raises(OSError, match="share"):
        ingest_sources(s, as_of=SPEC.as_of, batch_id="retry")
    monkeypatch.undo()
    # The two finished files are in the lake and the manifest; the retry (same batch) skips them.
    again = ingest_sources(s, as_of=SPEC.as_of, batch_id="retry")
    ws, one = whole
    assert sum(1 for f in again.files if f.skipped) == 2
    assert again.read == one.read - sum(f.read for f in one.files[:2])
    assert table(events_glob(s), "event_id") == table(events_glob(ws), "event_id")
    # One lake file per date for each attempt, named apart: the retry never overwrote the first one's files.
    names = {p.name for p in s.events_dir.rglob("*.parquet")}
    assert names == {"retry-0.parquet", "retry-2.parquet"}


def test_one_run_writes_one_lake_file_per_event_date(whole):
    s, report = whole
    landing_files = [f for f in report.files if f.loaded]
    parts = sorted(s.events_dir.glob("event_date=*"))
    assert len(landing_files) > len({f.source for f in landing_files}) and len(parts) > 1
    assert {p.name for part in parts for p in part.glob("*.parquet")} == {"one-0.parquet"}
    assert all(len(list(part.glob("*.parquet"))) == 1 for part in parts)
