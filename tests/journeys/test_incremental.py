"""Incremental runs equal a full rebuild: a month of generated data fed day by day, compared every day."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from journeys import build, db, incremental, publish
from journeys.config import Settings, load_settings
from journeys.generate import GenerateSpec, generate_sample
from journeys.ingest import ingest_sources

REPO = Path(__file__).resolve().parents[2]
DAYS = 30
MERGE_DAY = 20
CORRECTED_DAY = 25
"""The day the day before's web file is delivered again, corrected: a revenue, a row removed, a bad row fixed."""
THREADS = 1
"""One DuckDB thread: the suite runs two pytest processes on two cores, and on 1,500 events more threads only
add their coordination to every one of the thousands of statements this test runs."""


def split_landing(generated: Path, days: int) -> dict[int, dict[Path, bytes | pl.DataFrame]]:
    """Each source's generated rows cut into `days` parts, one landing file per source and day.

    Every monthly file contributes to every day, so most days bring late rows for earlier dates.
    """
    out: dict[int, dict[Path, bytes | pl.DataFrame]] = {d: {} for d in range(1, days + 1)}
    for folder in sorted(p for p in generated.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        target = Path(folder.name) / f"{folder.name}{files[0].suffix}"
        if files[0].suffix == ".parquet":
            frame = pl.concat([pl.read_parquet(f) for f in files])
            for d in range(1, days + 1):
                out[d][target] = frame.gather(list(range(d - 1, frame.height, days)))
            continue
        header: list[bytes] = []
        rows: list[bytes] = []
        for f in files:
            lines = f.read_bytes().splitlines(keepends=True)
            if f.suffix == ".csv":
                header, lines = lines[:1], lines[1:]
            rows += lines
        for d in range(1, days + 1):
            out[d][target] = b"".join(header + rows[d - 1 :: days])
    return out


def land(landing: Path, day: int, parts: dict[Path, bytes | pl.DataFrame]) -> None:
    """Write one day's parts as new landing files (`<source>_dNN.<ext>`)."""
    for rel, part in parts.items():
        target = landing / rel.parent / f"{rel.stem}_d{day:02d}{rel.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(part, pl.DataFrame):
            pq.write_table(part.to_arrow(), target)
        else:
            target.write_bytes(part)


def merge_row(truth: Path, at: str) -> bytes:
    """A CDP message carrying one person's customer id and another person's e-mail: their customers merge."""
    persons = pl.read_parquet(truth / "persons.parquet")
    with_id = persons.filter(pl.col("customer_id").is_not_null() & pl.col("email").is_null()).row(0, named=True)
    email_only = persons.filter(
        pl.col("customer_id").is_null()
        & pl.col("email").is_not_null()
        & (pl.col("household_id") != with_id["household_id"])
    ).row(0, named=True)
    message = {
        "message_id": "msg_merge_day20",
        "timestamp": at,
        "channel": "web",
        "event": "page_view",
        "anonymous_id": None,
        "user_id": with_id["customer_id"],
        "email": email_only["email"],
        "properties": {},
    }
    return (json.dumps(message) + "\n").encode()


def plant_bad_row(path: Path) -> None:
    """Append to a web landing file a copy of its first row with a revenue that cannot be read (quarantined)."""
    header, *rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    bad = dict(zip(header, rows[0], strict=True)) | {"hit_id": "h_bad_then_fixed", "order_value": "12.x"}
    write_rows(path, header, [*rows, [bad[c] for c in header]])


def correct(path: Path) -> dict[str, str]:
    """Deliver a web landing file again: one revenue changed, its last good row removed, the bad row fixed.

    Returns the hit ids: `changed`, `removed`, `fixed`.
    """
    header, *rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    at = {c: i for i, c in enumerate(header)}
    good = [r for r in rows if r[at["hit_id"]] != "h_bad_then_fixed"]
    changed, removed = good[0], good[-1]
    changed[at["order_value"]] = "123.45"
    fixed = next(r for r in rows if r[at["hit_id"]] == "h_bad_then_fixed")
    fixed[at["order_value"]] = "5.00"
    write_rows(path, header, [r for r in rows if r is not removed])
    return {"changed": changed[at["hit_id"]], "removed": removed[at["hit_id"]], "fixed": fixed[at["hit_id"]]}


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> None:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    path.write_text(out.getvalue(), encoding="utf-8")


def build_all(context: build.RunContext, working: Path) -> dict:
    """Every catalog step on `working`, one connection per step as the flow's tasks do; counts per node."""
    out: dict = {}
    for step in context.catalog.steps():
        con = db.connect(str(working), threads=THREADS)
        try:
            out.update(build.build_step(con, context, step))
        finally:
            con.close()
    return out


def run_context(settings: Settings, as_of, batch: str, mode: str = "full") -> build.RunContext:
    context = build.run_context(settings, as_of, batch)
    return dataclasses.replace(context, fingerprint=incremental.state_fingerprint(context), mode=mode)


def keep_published_state(context: build.RunContext, working: Path) -> None:
    """What the flow's publish task keeps for the next run: identity state, audit rows and the sealed build."""
    settings = context.settings
    with db.connect(str(working), threads=THREADS) as con:
        publish.write_identity_state(con, build.identity_state_path(settings), context.audit_history)
        incremental.seal_build(con, context.fingerprint, context.batch_id)
    incremental.keep_build(working, incremental.build_state_path(settings.state_dir))


def full_rebuild(context: build.RunContext) -> duckdb.DuckDBPyConnection:
    """Every catalog step in one in-memory database: the reference an incremental run must equal."""
    con = db.connect(threads=THREADS)
    for step in context.catalog.steps():
        build.build_step(con, context, step)
    return con


def table_fingerprints(con: duckdb.DuckDBPyConnection, tables: list[str], schema: str | None = None) -> dict:
    """Per table: its row count and the sum of its rows' hashes (a multiset fingerprint), in one query."""
    prefix = f"{schema}." if schema else ""
    sql = " union all ".join(
        f"select '{t}' as t, count(*) as n, sum(hash(x)::hugeint) as h from {prefix}{t} as x" for t in tables
    )
    return {t: (n, h) for t, n, h in db.fetch(con, sql)}


def table_differences(con: duckdb.DuckDBPyConnection, other: Path, tables: list[str]) -> dict[str, int]:
    """Rows in one database's table and not the other's (as multisets), per table that differs.

    Tables whose fingerprints agree are equal; only the others are compared row by row (EXCEPT ALL both
    ways), which also settles a fingerprint that differs only by how a value hashes.
    """
    out = {}
    db.execute(con, f"attach {db.quote_literal(str(other))} as r (read_only)")
    try:
        mine, theirs = table_fingerprints(con, tables), table_fingerprints(con, tables, "r")
        for t in (t for t in tables if mine[t] != theirs[t]):
            n = db.fetch(
                con,
                f"select count(*) from ((select * from {t} except all select * from r.{t})"
                f" union all (select * from r.{t} except all select * from {t}))",
            )[0][0]
            if n:
                out[t] = n
    finally:
        db.execute(con, "detach r")
    return out


def test_table_differences_finds_a_changed_row_and_a_duplicated_one(tmp_path):
    other = tmp_path / "other.duckdb"
    with db.connect(str(other)) as con:
        db.execute(con, "create table a as select range as i, 'x' as s from range(3)")
        db.execute(con, "create table b as select range as i from range(3)")
        db.execute(con, "create table c as select range as i from range(3)")
    with db.connect() as con:
        db.execute(con, "create table a as select range as i, 'x' as s from range(3)")
        db.execute(con, "create table b as select range as i from range(3) union all select 2")
        db.execute(con, "create table c as select case when range = 1 then 7 else range end as i from range(3)")
        assert table_differences(con, other, ["a", "b", "c"]) == {"b": 1, "c": 2}


@pytest.mark.slow
def test_incremental_runs_equal_full_rebuild_every_day(tmp_path):
    generated = tmp_path / "generated"
    spec = GenerateSpec(events=1_500, seed=11, malformed_rate=0.0)
    generate_sample(spec, generated)
    # Three of the six sources (web, calls, cdp: cookies, devices, customer ids, e-mails, phones) keep every
    # identifier type that links customers and halve the per-day fixed costs of ingest.
    parts = {
        day: {rel: part for rel, part in files.items() if rel.parts[0] in ("web", "calls", "cdp")}
        for day, files in split_landing(generated / "landing", DAYS).items()
    }
    root = tmp_path / "root"
    # One stage model in one mode: the incremental rules are per customer, not per stage model, and the suite
    # must stay short (the flow test in tests/pipelines runs the demo config's three funnels incrementally).
    settings = load_settings(
        REPO / "journeys.yaml",
        data_root=root,
        stage_models=[{"path": "generic_lifecycle", "modes": ["ordered"]}],
        goals=[],
        threads=THREADS,
    )
    compared: list[int] = []
    affected: list[tuple[int, int]] = []
    resolved: list[tuple[int, int]] = []
    merges = 0
    for day in range(1, DAYS + 1):
        as_of = spec.as_of + timedelta(days=day)
        batch = f"{as_of:%Y%m%dT%H%M%S}-day{day:02d}"
        land(settings.landing_dir, day, parts[day])
        if day == MERGE_DAY:
            at = (as_of - timedelta(hours=1)).isoformat()
            (settings.landing_dir / "cdp" / "merge_d20.jsonl").write_bytes(merge_row(generated / "truth", at))
        redelivered = settings.landing_dir / "web" / f"web_d{CORRECTED_DAY - 1:02d}.csv"
        if day == CORRECTED_DAY - 1:
            plant_bad_row(redelivered)
        if day == CORRECTED_DAY:
            # A new version of the same file: its rows replace the earlier version's (lake and quarantine).
            hits = correct(redelivered)
        report = ingest_sources(settings, as_of=as_of, batch_id=batch)
        if day == CORRECTED_DAY:
            assert report.replaced > 0 and report.accounting_ok()

        reference = full_rebuild(run_context(settings, as_of, batch))

        context = run_context(settings, as_of, batch)
        working = tmp_path / f"incremental-{day:02d}.duckdb"
        plan = incremental.plan_build(settings.state_dir, working, context.fingerprint, full_refresh=False)
        assert plan.mode == ("full" if day == 1 else "incremental"), plan
        context = dataclasses.replace(context, mode=plan.mode)
        counts = build_all(context, working)

        tables = sorted(
            m.name
            for m in context.catalog.models.values()
            if m.materialized == "table" and m.name != "runs" and m.procedure != "ingest"
        )
        assert table_differences(reference, working, tables) == {}, f"day {day}"
        reference.close()
        compared.append(day)
        if day >= 2:
            # Only the customers with new or re-keyed events were rebuilt, never all of them.
            with duckdb.connect(str(working), read_only=True) as con:
                customers = db.fetch(con, "select count(*) from customers")[0][0]
            affected.append((counts["incremental"]["affected_customers"], customers))
            # Identity too: only the components the day's rows touched (the merge and the corrected file included).
            resolved.append((counts["identity"]["n_identifiers_resolved"], counts["identity"]["n_identifiers"]))
            assert counts["identity"]["resolution"] == "incremental", (day, counts["identity"])
        if day == CORRECTED_DAY:
            with duckdb.connect(str(working), read_only=True) as con:
                revenue = dict(
                    db.fetch(
                        con,
                        "select event_id, revenue from journey_events where list_contains($ids, event_id)",
                        {"ids": [f"web:{h}" for h in hits.values()]},
                    )
                )
            assert revenue == {f"web:{hits['changed']}": Decimal("123.45"), f"web:{hits['fixed']}": Decimal("5.00")}
        if day == MERGE_DAY:
            with duckdb.connect(str(working), read_only=True) as con:
                merges = db.fetch(con, "select count(*) from identity_merges where batch_id = $b", {"b": batch})[0][0]
        keep_published_state(context, working)
        if day > 1:
            (tmp_path / f"incremental-{day - 1:02d}.duckdb").unlink()
    assert compared == list(range(1, DAYS + 1))
    assert all(0 < n < total for n, total in affected), affected
    assert all(0 < n < total for n, total in resolved), resolved
    assert merges >= 1, "the day-20 message should merge two earlier customers"

    # A run with nothing new re-resolves no identifier and changes no row of the last day's build.
    context = run_context(settings, as_of, batch)
    again = tmp_path / "incremental-again.duckdb"
    plan = incremental.plan_build(settings.state_dir, again, context.fingerprint, full_refresh=False)
    counts = build_all(dataclasses.replace(context, mode=plan.mode), again)
    assert (plan.mode, counts["identity"]["resolution"], counts["identity"]["n_identifiers_resolved"]) == (
        "incremental",
        "incremental",
        0,
    )
    with db.connect(str(again), threads=THREADS) as con:
        assert table_differences(con, working, tables) == {}


def test_goals_do_not_force_a_full_rebuild():
    # Goals shape only `alerts`, which every run rebuilds whole: editing them keeps the kept build usable.
    as_of = GenerateSpec().as_of
    goal = {
        "name": "g",
        "stage_model": "generic_lifecycle",
        "metric": "conversion_rate",
        "stage": "awareness",
        "threshold": 0.5,
        "direction": "min",
    }
    plain = build.run_context(Settings(), as_of)
    with_goal = build.run_context(Settings(goals=[goal]), as_of)
    assert incremental.state_fingerprint(plain) == incremental.state_fingerprint(with_goal)


def test_the_dask_executor_keeps_the_kept_build_valid_but_builds_in_full(tmp_path):
    as_of = GenerateSpec().as_of
    plain = build.run_context(Settings(), as_of)
    on_dask = build.run_context(Settings(executor="dask", dask_workers=3), as_of)
    # Where the same SQL runs does not change a row: switching back to local is incremental again.
    assert incremental.state_fingerprint(plain) == incremental.state_fingerprint(on_dask)
    state = tmp_path / "state"
    state.mkdir()
    with duckdb.connect(str(incremental.build_state_path(state))) as con:
        con.execute(f"create table {incremental.STATE_TABLE} as select 'fp' as fingerprint, 'run-1' as batch_id")
    working = tmp_path / "working.duckdb"
    plan = incremental.plan_build(state, working, "fp", full_refresh=False, incremental_executor="dask")
    assert plan.mode == "full"
    assert plan.reason.startswith("executor: dask rebuilds every customer on the cluster; the build kept by run run-1")
    assert not working.exists()
    assert incremental.plan_build(state, working, "fp", full_refresh=False).mode == "incremental"
