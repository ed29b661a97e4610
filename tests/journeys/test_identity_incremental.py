"""Incremental identity resolution equals a full resolution of the same lake with the same identity state."""

from __future__ import annotations

import hashlib
import random
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from journeys import db, identity, identity_incremental, incremental, models
from journeys.config import IdentityConfig, Settings

T0 = datetime(2024, 1, 1)
KEPT_AT = datetime(2024, 6, 1)
RUN_AT = datetime(2024, 6, 2)
TABLES = sorted(identity_incremental.SPLICED)

Row = dict  # event_id, occurred_at, identifiers, batch_id


def row(event_id: str, hour: int, ids: list[tuple[str, str]], batch: str) -> Row:
    return {
        "event_id": event_id,
        "occurred_at": T0 + timedelta(hours=hour),
        "identifiers": [{"id_type": t, "id_value": v} for t, v in ids],
        "batch_id": batch,
    }


def load(con: duckdb.DuckDBPyConnection, rows: list[Row]) -> None:
    """Table `events` (the lake) from rows; a kept build's events of batch 'b1', new ones of 'b2'."""
    db.execute(
        con,
        "create or replace table events (event_id varchar, occurred_at timestamp, "
        "identifiers struct(id_type varchar, id_value varchar)[], batch_id varchar)",
    )
    if rows:
        db.execute(
            con,
            "insert into events select r.event_id, r.occurred_at, r.identifiers, r.batch_id"
            " from (select unnest($rows) as r)",
            {"rows": rows},
        )


def kept_build(tmp_path: Path, rows: list[Row], settings: Settings) -> tuple[duckdb.DuckDBPyConnection, Path]:
    """A full resolution of `rows` as the kept build, and its identity_map as the identity state."""
    con = db.connect()
    load(con, rows)
    identity.resolve_identities(con, settings, run_at=KEPT_AT, batch_id="b1")
    state = tmp_path / "identity_map.parquet"
    db.execute(con, f"copy identity_map to {db.quote_literal(str(state))} (format parquet)")
    db.execute(con, f"create table {incremental.BATCHES_TABLE} as select distinct ev.batch_id from events as ev")
    return con, state


def next_run(
    con: duckdb.DuckDBPyConnection,
    state: Path,
    rows: list[Row],
    settings: Settings,
    catalog: models.Catalog | None = None,
) -> identity.IdentityReport:
    """The lake becomes `rows`; the touched components are re-resolved on the kept build."""
    load(con, rows)
    return identity_incremental.resolve_touched(
        con,
        settings,
        run_at=RUN_AT,
        previous_identity_map=str(state),
        catalog=catalog or models.load_catalog(),
        batch_id="b2",
    )


def differences(con: duckdb.DuckDBPyConnection, state: Path, rows: list[Row], settings: Settings) -> dict[str, int]:
    """Rows of each identity table that differ (both ways, as multisets) from a full resolution of `rows`."""
    full = db.connect()
    load(full, rows)
    identity.resolve_identities(full, settings, run_at=RUN_AT, previous_identity_map=str(state), batch_id="b2")
    out = {}
    for t in TABLES:
        mine = db.fetch(con, f"select * from {t}")
        theirs = db.fetch(full, f"select * from {t}")
        n = sum(1 for r in mine if mine.count(r) != theirs.count(r)) + sum(
            1 for r in theirs if mine.count(r) != theirs.count(r)
        )
        if n:
            out[t] = n
    full.close()
    return out


def random_rows(rng: random.Random, n: int, pools: dict[str, int], batch: str, first: int = 0) -> list[Row]:
    return [
        row(
            f"e{first + i}",
            rng.randrange(2_000),
            [(t, f"{t[0]}{rng.randrange(pools[t])}") for t in rng.choices(list(pools), k=rng.choice([0, 1, 2, 2, 3]))],
            batch,
        )
        for i in range(n)
    ]


# Small pools with a low hub limit: a few big components, merges, hubs; large pools: many small components.
SCENARIOS = [
    ({"customer_id": 15, "email": 20, "cookie_id": 40, "phone": 3}, 5),
    ({"customer_id": 30, "email": 40, "cookie_id": 80, "phone": 20}, 100),
]


@pytest.mark.parametrize("seed", range(len(SCENARIOS)))
def test_touched_components_resolve_as_the_whole_lake_does(tmp_path, seed):
    rng = random.Random(seed)
    pools, max_links = SCENARIOS[seed]
    settings = Settings(identity=IdentityConfig(max_links_per_value=max_links))
    old = random_rows(rng, 60, pools, "b1")
    con, state = kept_build(tmp_path, old, settings)
    lake = [*old, *random_rows(rng, 8, pools, "b2", first=60)]
    # A row gone from the lake and a row delivered again with other identifiers (a corrected landing file).
    lake.pop(rng.randrange(60))
    k = rng.randrange(59)
    lake[k] = {**lake[k], "batch_id": "b2", "identifiers": random_rows(rng, 1, pools, "b2")[0]["identifiers"]}
    report = next_run(con, state, lake, settings)
    assert report.resolution == "incremental"
    assert 0 < report.n_identifiers_resolved < report.n_identifiers
    assert differences(con, state, lake, settings) == {}


def households() -> list[Row]:
    """Three customers: a customer id with a cookie, and two e-mails with a cookie each; one event without any."""
    return [
        row("a1", 1, [("customer_id", "A"), ("cookie_id", "ka")], "b1"),
        row("a2", 2, [("cookie_id", "ka")], "b1"),
        row("b1", 3, [("email", "b@x"), ("cookie_id", "kb")], "b1"),
        row("c1", 4, [("email", "c@x"), ("cookie_id", "kc")], "b1"),
        row("n1", 5, [], "b1"),
    ]


def customer_seen_at(con: duckdb.DuckDBPyConnection, hour: int) -> list[tuple]:
    return db.fetch(con, "select * from customers where first_seen_at = $t", {"t": T0 + timedelta(hours=hour)})


@pytest.mark.parametrize("own_models", [False, True])
def test_a_new_event_bridging_two_customers_merges_them_and_leaves_the_third_alone(tmp_path, own_models):
    settings = Settings()
    con, state = kept_build(tmp_path, households(), settings)
    third = customer_seen_at(con, 4)
    lake = [*households(), row("m1", 6, [("cookie_id", "ka"), ("cookie_id", "kb")], "b2")]
    # Models of one's own (a copy of the shipped ones) narrow the lake to every column, not only identity's.
    catalog = None
    if own_models:
        shutil.copytree(models.shipped_models_dir(), tmp_path / "sql")
        catalog = models.load_catalog(str(tmp_path / "sql"))
    report = next_run(con, state, lake, settings, catalog)
    assert differences(con, state, lake, settings) == {}
    # Only the two components the new event touches are resolved again: 4 of the 6 identifiers.
    assert (report.resolution, report.n_identifiers_resolved, report.n_identifiers) == ("incremental", 4, 6)
    assert (report.n_merges, report.n_customers) == (1, 2)
    assert db.fetch(con, "select count(*) from identity_merges")[0][0] == 1
    assert customer_seen_at(con, 4) == third and len(third) == 1


def test_a_run_without_new_rows_re_resolves_nothing_and_keeps_every_row(tmp_path):
    settings = Settings()
    con, state = kept_build(tmp_path, households(), settings)
    before = {t: sorted(db.fetch(con, f"select * from {t}"), key=str) for t in TABLES}
    report = next_run(con, state, households(), settings)
    assert (report.resolution, report.n_identifiers_resolved, report.passes) == ("incremental", 0, 0)
    assert report.resolution_reason.startswith("0 kept components changed")
    assert {t: sorted(db.fetch(con, f"select * from {t}"), key=str) for t in TABLES} == before
    assert (report.n_identifiers, report.n_customers, report.n_events_resolved, report.n_events_unresolved) == (
        6,
        3,
        4,
        1,
    )


def test_an_identity_state_that_is_not_the_kept_builds_resolves_the_whole_lake(tmp_path):
    settings = Settings()
    con, state = kept_build(tmp_path, households(), settings)
    catalog = models.load_catalog()
    assert identity_incremental.why_full(con, catalog, str(state)) is None
    # A run that wrote its identity state and died before publishing leaves a state its kept build did not make.
    other = tmp_path / "other.parquet"
    db.execute(
        con,
        f"copy (select * replace (case when id_value = 'kc' then 'c_other' else customer_key end as customer_key)"
        f" from identity_map) to {db.quote_literal(str(other))} (format parquet)",
    )
    assert identity_incremental.why_full(con, catalog, str(other)) == (
        f"the identity state {other} is not the kept build's identity_map (1 linked identifiers differ: a run"
        " stopped between writing it and publishing)"
    )
    assert identity_incremental.why_full(con, catalog, None) == "there is no identity state to carry keys from"
    db.execute(con, "drop table int_identity_event_components")
    assert identity_incremental.why_full(con, catalog, str(state)) == (
        "the kept build has no int_identity_event_components"
    )


def test_every_row_of_a_component_and_only_of_it_carries_its_id():
    con = db.connect()
    load(con, [*households(), row("s1", 9, [("phone", "p1")], "b1")])
    identity.resolve_identities(con, Settings(), run_at=KEPT_AT)
    components = dict(db.fetch(con, "select id_type || ':' || id_value, component from int_identity_components"))
    # Linked on an event, the customer id A and its cookie are one component; a lone phone is its own.
    assert components["customer_id:A"] == components["cookie_id:ka"] != components["cookie_id:kb"]
    assert len(set(components.values())) == 4
    # The id is the first 64 bits of sha256 of the component's highest-priority identifier (here a customer id).
    want = int(hashlib.sha256(b"customer_id:A").hexdigest()[:16], 16)
    assert components["customer_id:A"] == want
    rows = dict(db.fetch(con, "select event_id, component from int_identity_event_components"))
    assert rows == {
        "a1": components["cookie_id:ka"],
        "a2": components["cookie_id:ka"],
        "b1": components["cookie_id:kb"],
        "c1": components["cookie_id:kc"],
        "s1": components["phone:p1"],
    }
