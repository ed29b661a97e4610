"""Crash safety of the real `journeys run`: SIGKILL at ingest, build, publish and the switch keeps the outputs whole.

Each kill lands at a named pause point (`journeys.progress`, TEST_JOURNEYS_PAUSE_AT): the run says on a pipe
that it got there and waits, so every run of this test kills at the same step.

Root A is killed four times while it takes in a second delivery, then finishes with a clean rerun; root B
is a copy of A before the second delivery, run once without interruption. A's final marts must equal B's.
All runs share the session's Prefect test server: a killed client then leaves no temporary server behind,
and no run pays the server's start-up again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from journeys import db
from journeys.config import Settings
from journeys.generate import GenerateSpec, generate_sample
from tools import crash_loop

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def env(harness, tmp_path_factory) -> dict[str, str]:
    """Environment of the CLI subprocesses, pointing at the session's Prefect server (tests/pipelines/conftest.py)."""
    return crash_loop.client_env(tmp_path_factory.mktemp("prefect"), harness.api_url)


def run_cli(root: Path, env: dict[str, str], kill_at: str | None = None) -> str:
    """Run `journeys run` on `root`; with `kill_at` (a pause point, `<step>:<n>`), SIGKILL it there.

    The run itself says when it reached the point (journeys.progress, TEST_JOURNEYS_PAUSE_AT) and waits to be
    killed, so the kill lands at that step on every run, without polling (tools/crash_loop.run, shared with
    the randomised loop). Returns "completed", "killed" or "not reached"; a run that fails raises with its log.
    """
    return crash_loop.run(root, env, kill_at, timeout_s=RUN_TIMEOUT_S)


settings_of = crash_loop.settings_of


def mart_files(s: Settings) -> dict[str, int]:
    """Published mart files and their modification times."""
    return {p.parent.name: p.stat().st_mtime_ns for p in sorted(s.marts_dir.glob("*/*.parquet"))}


def rows(con: duckdb.DuckDBPyConnection, sql: str, **params) -> list[tuple]:
    return sorted(con.sql(sql, params=params or None).fetchall(), key=repr)


def assert_outputs_readable(s: Settings, marts_before: dict[str, int] | None) -> None:
    """Every published mart and lake file reads in full; the warehouse opens; nothing half-written is visible."""
    marts = mart_files(s)
    assert set(marts) >= {"journeys", "stage_conversion", "identity_map"}
    if marts_before is not None:
        assert marts == marts_before  # killed before publish: the previous marts are untouched
    with duckdb.connect() as con:
        for p in sorted(s.marts_dir.glob("*/*.parquet")):
            con.sql("select count(*) from read_parquet($p)", params={"p": str(p)}).fetchall()
        lake = sorted(s.events_dir.glob("event_date=*/*.parquet")) + sorted(s.quarantine_dir.glob("*/*.parquet"))
        assert lake and not any("_tmp" in p.parts for p in lake)
        for p in lake:
            con.sql("select count(*) from read_parquet($p)", params={"p": str(p)}).fetchall()
    # As `journeys query` opens it: the lake views are relative to the warehouse's folder.
    with db.connect(s.warehouse_path, read_only=True) as con:
        assert con.sql("select count(*) from stage_conversion").fetchall()[0][0] > 0
        assert con.sql("select count(*) from journeys").fetchall()[0][0] > 0
        assert con.sql("select count(*) from events").fetchall()[0][0] > 0


def final_tables(s: Settings) -> dict[str, list[tuple]]:
    with duckdb.connect() as con:
        return {
            t: rows(con, "select * from read_parquet($p)", p=str(s.marts_dir / t / f"{t}.parquet"))
            for t in ("stage_conversion", "journeys", "stage_dropout", "identity_map")
        }


def test_sigkill_at_any_point_keeps_outputs_and_a_rerun_completes(tmp_path, env):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_sample(GenerateSpec(events=3_000, seed=5), a)
    assert run_cli(a, env) == "completed"
    shutil.copytree(a, b)  # B: the same state after the first delivery

    # The second delivery: another generated batch, its files named apart from the first one's.
    second = tmp_path / "second"
    generate_sample(GenerateSpec(events=3_000, seed=6), second)
    for root in (a, b):
        for p in sorted((second / "landing").rglob("*.*")):
            shutil.copy2(p, root / "landing" / p.parent.name / f"second_{p.name}")

    assert run_cli(b, env) == "completed"  # the uninterrupted reference
    s = settings_of(a)
    good_marts = mart_files(s)

    # 1. Mid-ingest: the second delivery's first landing file is taken in (its parts written aside), the
    # second is not.
    assert run_cli(a, env, kill_at="ingest:2") == "killed"
    assert_outputs_readable(s, good_marts)

    # 2. Mid-build: ingest is done, the run has built its first two models and not its third.
    assert run_cli(a, env, kill_at="build:3") == "killed"
    assert_outputs_readable(s, good_marts)

    # 3. Mid-publish: the first mart is written aside, the second is not; the published set is still the old one.
    assert run_cli(a, env, kill_at="publish:2") == "killed"
    assert any(s.marts_dir.glob("*/.*.tmp"))  # the kill really landed inside publish
    assert_outputs_readable(s, good_marts)

    # 4. Right after the switch of `.current`: marts and warehouse are the killed run's, one complete set (the
    # warehouse is a link through `.current`); the run history, kept build and run record it carries inside
    # the set are moved into place by the next run's start.
    tables = sorted(p.stem for p in (s.marts_dir / ".current").glob("*.parquet"))
    before = crash_loop.check_published(s, tables)
    assert run_cli(a, env, kill_at="switch:2") == "killed"
    after = crash_loop.check_published(s, tables)
    assert after not in (None, before)
    assert s.warehouse_path.is_symlink() and (s.marts_dir / ".current" / ".pending").is_dir()
    assert_outputs_readable(s, None)

    # A clean rerun finishes the work: the same marts as the uninterrupted run.
    assert run_cli(a, env) == "completed"
    assert crash_loop.check_published(s, tables) not in (None, before, after)
    with db.connect(s.warehouse_path, read_only=True) as con:
        history = [r[0] for r in con.sql("select batch_id from runs order by published_at, batch_id").fetchall()]
    assert history[-3:-1] == [before, after]  # the killed run, published, is in the history once
    assert_outputs_readable(s, None)
    assert not list((s.lake_dir / "_tmp").glob("*"))
    got, want = final_tables(s), final_tables(settings_of(b))
    for table in want:
        assert got[table] == want[table], table
