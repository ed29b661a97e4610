"""Idempotent ingest on a generated multi-source sample: re-runs change no byte; split deliveries give one lake."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from journeys.config import Settings, load_settings
from journeys.generate import GenerateSpec, generate_sample
from journeys.ingest import events_glob, ingest_sources, quarantine_glob

REPO = Path(__file__).resolve().parents[2]
SPEC = GenerateSpec(events=3_000, seed=5)
LINEAGE = {"ingested_at", "batch_id", "quarantined_at"}


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    generate_sample(SPEC, root)
    return root / "landing"


def settings_for(root: Path) -> Settings:
    return load_settings(str(REPO / "journeys.yaml"), data_root=root, memory_limit="1GB")


def copy_landing(landing: Path, root: Path, keep=lambda rel: True) -> None:
    for p in sorted(landing.rglob("*")):
        rel = p.relative_to(landing)
        if p.is_file() and keep(rel):
            (root / "landing" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, root / "landing" / rel)


def snapshot(s: Settings) -> dict[str, bytes]:
    return {p.relative_to(s.root).as_posix(): p.read_bytes()
            for d in (s.lake_dir, s.state_dir) for p in sorted(d.rglob("*")) if p.is_file() and p.name != "run.lock"}


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


def test_two_halves_in_two_runs_give_the_lake_of_one_run(landing, tmp_path):
    files = sorted(p.relative_to(landing) for p in landing.rglob("*") if p.is_file())
    # The first half of each source's files (in the order ingest takes them), then the rest.
    by_source: dict[str, list[Path]] = {}
    for f in files:
        by_source.setdefault(f.parts[0], []).append(f)
    first_half = {f for fs in by_source.values() for f in fs[: len(fs) // 2]}
    assert 0 < len(first_half) < len(files)

    whole = tmp_path / "whole"
    copy_landing(landing, whole)
    one = ingest_sources(settings_for(whole), as_of=SPEC.as_of, batch_id="one")

    split = tmp_path / "split"
    copy_landing(landing, split, keep=lambda rel: rel in first_half)
    a = ingest_sources(settings_for(split), as_of=SPEC.as_of, batch_id="first")
    copy_landing(landing, split, keep=lambda rel: rel not in first_half)
    b = ingest_sources(settings_for(split), as_of=SPEC.as_of, batch_id="second")

    assert (a.read + b.read, a.loaded + b.loaded, a.quarantined + b.quarantined, a.duplicates + b.duplicates) == (
        one.read, one.loaded, one.quarantined, one.duplicates)
    assert set(a.affected_dates) | set(b.affected_dates) == set(one.affected_dates)
    ws, ss = settings_for(whole), settings_for(split)
    assert table(events_glob(ss), "event_id") == table(events_glob(ws), "event_id")
    assert table(quarantine_glob(ss), "source_file, line") == table(quarantine_glob(ws), "source_file, line")
