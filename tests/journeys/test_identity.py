"""Identity resolution: linking, guardrails, stable keys, merges and scoring."""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys import db
from journeys.config import IdentityConfig, Settings
from journeys.identity import (
    connected_components_without_guardrails,
    resolve_identities,
    score_identity,
)
from journeys.ingest import LINK_SCHEMA

RUN_AT = datetime(2024, 6, 1)
T0 = datetime(2024, 1, 1)

Event = tuple[str, int, list[tuple[str, str]]]  # event_id, minutes after T0, identifiers


def load_events(con: duckdb.DuckDBPyConnection, events: list[Event]) -> None:
    """Create table `events` from small inline rows."""
    rows = [
        {
            "event_id": eid,
            "occurred_at": T0 + timedelta(minutes=minute),
            "identifiers": [{"id_type": t, "id_value": v} for t, v in ids],
        }
        for eid, minute, ids in events
    ]
    db.execute(con, "drop table if exists events")
    db.execute(
        con,
        "create table events (event_id varchar, occurred_at timestamp, "
        "identifiers struct(id_type varchar, id_value varchar)[])",
    )
    if rows:
        db.execute(
            con,
            "insert into events select r.event_id, r.occurred_at, r.identifiers from (select unnest($rows) as r)",
            {"rows": rows},
        )


def run(events: list[Event], settings_: Settings | None = None, **kwargs) -> tuple[duckdb.DuckDBPyConnection, object]:
    con = db.connect()
    load_events(con, events)
    report = resolve_identities(con, settings_ or Settings(), run_at=kwargs.pop("run_at", RUN_AT), **kwargs)
    return con, report


def keys(con: duckdb.DuckDBPyConnection) -> dict[str, str | None]:
    return dict(db.fetch(con, "select event_id, customer_key from int_event_customers"))


def partition(mapping: dict[str, str | None]) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = {}
    for eid, key in mapping.items():
        groups.setdefault(key if key is not None else f"none:{eid}", set()).add(eid)
    return {frozenset(g) for g in groups.values()}


def write_truth(truth: list[tuple[str, str]], path: Path) -> None:
    con = db.connect()
    con.sql(
        "select unnest($e) as event_id, unnest($p) as person_id",
        params={"e": [e for e, _ in truth], "p": [p for _, p in truth]},
    ).write_parquet(str(path))


def unlimited() -> Settings:
    return Settings(identity=IdentityConfig(max_values_per_type={}))


# --- linking ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["sequential", "shuffled"])
def test_long_chain_is_one_component_in_few_passes(order: str) -> None:
    n = 10_000
    labels = list(range(n + 1))
    if order == "shuffled":
        random.Random(7).shuffle(labels)
    events = [(f"e{i}", i, [("account", f"v{labels[i]}"), ("account", f"v{labels[i + 1]}")]) for i in range(n)]
    con, report = run(events, unlimited())
    assert report.n_customers == 1
    assert report.n_identifiers == n + 1
    assert report.passes <= 20
    assert len(set(keys(con).values())) == 1


def test_blocked_values_never_link() -> None:
    junk = ["", "  ", "unknown", "NULL", "0", "-1", "0000", "aaaa", "test@example.com", "N/A"]
    events = [(f"e{i}", i, [("customer_id", f"c{i}"), ("cookie_id", j)]) for i, j in enumerate(junk)]
    events.append(("only_junk", 99, [("cookie_id", "unknown"), ("email", "")]))
    con, report = run(events)
    assert report.n_customers == len(junk)
    assert report.n_events_unresolved == 1
    assert keys(con)["only_junk"] is None
    assert db.fetch(con, "select count(*) from identity_map where id_type = 'cookie_id'")[0][0] == 0


def test_invalid_blocked_pattern_is_a_clear_error() -> None:
    bad = Settings(identity=IdentityConfig(blocked_patterns=["(?<=x)y"]))
    with pytest.raises(ValueError, match="blocked_patterns"):
        run([("e1", 0, [("email", "a")])], bad)


def test_default_repeated_character_rule_is_plain_re2() -> None:
    # The default spells "one character repeated" out per character; a backreference is refused clearly.
    junk = ["zz", "----", "9999999", "XXXX", "...."]
    kept = ["z", "zzy", "12121"]
    events = [(f"e{i}", i, [("customer_id", f"c{i}"), ("cookie_id", v)]) for i, v in enumerate(junk + kept)]
    con, _ = run(events)
    linked = db.fetch(con, "select id_value from identity_map where id_type = 'cookie_id' order by 1")
    assert [v for (v,) in linked] == sorted(kept)
    with pytest.raises(ValueError, match="backreferences"):
        run(events, Settings(identity=IdentityConfig(blocked_patterns=[r"^(.)\1+$"])))


def test_merging_is_transitive() -> None:
    events = [
        ("e1", 0, [("email", "a"), ("phone", "1")]),
        ("e2", 1, [("phone", "1"), ("device_id", "d")]),
        ("e3", 2, [("device_id", "d"), ("cookie_id", "k")]),
        ("e4", 3, [("cookie_id", "k")]),
        ("x", 4, [("cookie_id", "other")]),
    ]
    con, _ = run(events)
    k = keys(con)
    assert k["e1"] == k["e2"] == k["e3"] == k["e4"] != k["x"]


def test_first_and_last_seen_span_each_identifier_and_customer() -> None:
    events = [
        ("e1", 10, [("email", "a"), ("phone", "1")]),
        ("e2", 40, [("phone", "1")]),
        ("e3", 25, [("email", "a")]),
        ("f1", 5, [("email", "b")]),
    ]
    con, _ = run(events)
    seen = db.fetch(
        con, "select id_type, id_value, first_seen_at, last_seen_at, n_events from identity_map order by 1, 2"
    )
    at = [T0 + timedelta(minutes=m) for m in (5, 10, 25, 40)]
    assert seen == [("email", "a", at[1], at[2], 2), ("email", "b", at[0], at[0], 1), ("phone", "1", at[1], at[3], 2)]
    k = keys(con)
    customers = db.fetch(
        con, "select customer_key, first_seen_at, last_seen_at, n_events, n_identifiers from customers order by 2"
    )
    assert customers == [(k["f1"], at[0], at[0], 1, 1), (k["e1"], at[1], at[3], 3, 2)]


@pytest.mark.parametrize("buckets", [7, 16])
def test_bucket_is_the_first_32_bits_of_sha256_of_the_key_mod_buckets(buckets: int) -> None:
    con, _ = run([(f"e{i}", i, [("cookie_id", f"c{i}")]) for i in range(12)], Settings(buckets=buckets))
    rows = db.fetch(con, "select customer_key, bucket from customers")
    want = {key: int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % buckets for key, _ in rows}
    assert dict(rows) == want
    assert len(rows) == 12 and len(set(want.values())) > 1


# --- guardrails ---------------------------------------------------------------------------------------


def test_shared_device_does_not_fuse_two_customer_ids() -> None:
    events = [
        ("a1", 0, [("customer_id", "A"), ("device_id", "tablet")]),
        ("a2", 1, [("customer_id", "A"), ("email", "a@x")]),
        ("b1", 2, [("customer_id", "B"), ("device_id", "tablet")]),
        ("b2", 3, [("customer_id", "B"), ("email", "b@x")]),
    ]
    con, report = run(events)
    k = keys(con)
    assert k["a1"] == k["a2"] != k["b1"] == k["b2"]
    assert report.n_customers == 2
    assert db.fetch(con, "select id_type, id_value, n_customers, n_events from shared_identifiers") == [
        ("device_id", "tablet", 2, 2)
    ]
    assert db.fetch(con, "select is_shared from identity_map where id_value = 'tablet'") == [(True,)]


def test_devices_linked_on_one_event_do_not_fuse_two_customer_ids() -> None:
    events = [
        ("a1", 0, [("customer_id", "A"), ("device_id", "d1")]),
        ("b1", 1, [("customer_id", "B"), ("device_id", "d2")]),
        ("both", 2, [("device_id", "d1"), ("device_id", "d2")]),
    ]
    con, _ = run(events)
    k = keys(con)
    assert k["a1"] != k["b1"]
    assert k["both"] == k["a1"]  # highest-priority identifier of the event (smallest value on a tie of type)


def test_event_with_only_a_shared_device_goes_to_best_supported_customer() -> None:
    events = [
        ("a1", 0, [("customer_id", "A"), ("device_id", "tv")]),
        ("a2", 1, [("customer_id", "A"), ("device_id", "tv")]),
        ("a3", 2, [("customer_id", "A"), ("device_id", "tv")]),
        ("b1", 3, [("customer_id", "B"), ("device_id", "tv")]),
        ("tv_only", 4, [("device_id", "tv")]),
    ]
    con, report = run(events)
    k = keys(con)
    assert k["tv_only"] == k["a1"] != k["b1"]
    assert report.n_events_unresolved == 0
    assert db.fetch(con, "select customer_key from identity_map where id_value = 'tv'")[0][0] == k["a1"]


def test_per_type_limit_keeps_best_supported_values() -> None:
    events = [("c", 0, [("customer_id", "C"), ("email", "e0")])]
    for i in range(6):
        # e1 has one event, the others two: e1 is the least supported and gives way
        events += [(f"m{i}_{j}", 1 + i, [("customer_id", "C"), ("email", f"e{i}")]) for j in range(1 if i == 1 else 2)]
    con, report = run(events)
    linked = db.fetch(con, "select id_value from identity_map where id_type = 'email' and not is_shared order by 1")
    assert [v for (v,) in linked] == ["e0", "e2", "e3", "e4", "e5"]
    assert db.fetch(con, "select id_value from shared_identifiers") == [("e1",)]
    assert report.n_customers == 1  # the shared e-mail still maps to the customer it was seen with


def test_link_rows_do_not_count_as_support_for_the_per_type_limit() -> None:
    # e1 has one event and three link rows: support counts events only, so e1 is still the one held back.
    events = [("c", 0, [("customer_id", "C"), ("email", "e0")])]
    for i in range(6):
        events += [(f"m{i}_{j}", 1 + i, [("customer_id", "C"), ("email", f"e{i}")]) for j in range(1 if i == 1 else 2)]
    con = db.connect()
    load_events(con, events)
    db.execute(con, f"create table links ({', '.join(f'{c} {t}' for c, t in LINK_SCHEMA.items())})")
    db.execute(
        con,
        "insert into links (link_id, identifiers) select 'cdp:' || i::varchar,"
        " [{'id_type': 'customer_id', 'id_value': 'C'}, {'id_type': 'email', 'id_value': 'e1'}]"
        " from range(3) as r(i)",
    )
    resolve_identities(con, Settings(), run_at=RUN_AT)
    assert db.fetch(con, "select id_value from shared_identifiers") == [("e1",)]


def test_link_rows_link_identifiers_but_are_no_events_of_a_customer() -> None:
    # A link row joins C and e into one customer, but it is not an event: not in int_event_customers, not counted.
    con = db.connect()
    load_events(con, [("a", 0, [("customer_id", "C")]), ("b", 5, [("email", "e")])])
    db.execute(con, f"create table links ({', '.join(f'{c} {t}' for c, t in LINK_SCHEMA.items())})")
    db.execute(
        con,
        "insert into links (link_id, identifiers) values"
        " ('cdp:0', [{'id_type': 'customer_id', 'id_value': 'C'}, {'id_type': 'email', 'id_value': 'e'}])",
    )
    resolve_identities(con, Settings(), run_at=RUN_AT)
    rows = db.fetch(con, "select event_id, customer_key from int_event_customers order by event_id")
    assert [e for e, _ in rows] == ["a", "b"] and rows[0][1] == rows[1][1] is not None
    customers = db.fetch(con, "select first_seen_at, last_seen_at, n_events, n_identifiers from customers")
    assert customers == [(T0, T0 + timedelta(minutes=5), 2, 2)]


def test_a_per_type_limit_tie_in_support_keeps_the_smallest_values() -> None:
    # 100 customers with six e-mails of two events each (limit 5): the tie keeps e0..e4 and holds back e5, for
    # every customer, however the rows reach the ranking window.
    events = []
    for n in range(100):
        for i in (5, 3, 0, 4, 1, 2):
            events += [(f"c{n}_{i}_{j}", j, [("customer_id", f"C{n}"), ("email", f"c{n}_e{i}")]) for j in range(2)]
    con, _ = run(events)
    held = db.fetch(con, "select id_value from shared_identifiers order by 1")
    assert held == sorted((f"c{n}_e5",) for n in range(100))


def test_events_with_only_shared_values_of_one_type_follow_the_smallest_value() -> None:
    # For each n: devices a{n} (best supported by A{n}) and b{n} (by B{n}) are both shared; an event with only
    # the two devices goes to the customer of the smaller value, a{n}, whatever order node ids were given in.
    events = []
    for n in range(100):
        for dev, best, other in ((f"b{n}", f"B{n}", f"Y{n}"), (f"a{n}", f"A{n}", f"X{n}")):
            events += [(f"{dev}_{i}", i, [("customer_id", best), ("device_id", dev)]) for i in range(3)]
            events += [(f"{dev}_o", 3, [("customer_id", other), ("device_id", dev)])]
        events += [(f"both{n}", 9, [("device_id", f"b{n}"), ("device_id", f"a{n}")])]
    con, _ = run(events)
    k = keys(con)
    assert all(k[f"both{n}"] == k[f"a{n}_0"] != k[f"b{n}_0"] for n in range(100))


def test_emails_chaining_two_customer_ids_are_not_fused() -> None:
    events = [
        ("a", 0, [("customer_id", "A"), ("email", "x1")]),
        ("bridge", 1, [("email", "x1"), ("email", "x2")]),
        ("b", 2, [("customer_id", "B"), ("email", "x2")]),
    ]
    con, _ = run(events)
    k = keys(con)
    assert k["a"] != k["b"]


def test_plain_connected_components_score_lower_than_guardrails(tmp_path: Path) -> None:
    rng = random.Random(3)
    events: list[Event] = []
    truth: list[tuple[str, str]] = []
    for p in range(30):
        household = f"hh{p // 3}"  # three people per household device
        for j in range(4):
            eid = f"p{p}_{j}"
            ids = [("customer_id", f"cust{p}")] if j % 2 == 0 else [("email", f"mail{p}")]
            if j == 1:
                ids.append(("customer_id", f"cust{p}"))
            if rng.random() < 0.7:
                ids.append(("device_id", household))
            events.append((eid, p * 10 + j, ids))
            truth.append((eid, f"person{p}"))
    truth_path = tmp_path / "truth.parquet"
    write_truth(truth, truth_path)

    con, _ = run(events)
    guarded = score_identity(con, str(truth_path))
    con_plain = db.connect()
    load_events(con_plain, events)
    connected_components_without_guardrails(con_plain, Settings(), run_at=RUN_AT)
    plain = score_identity(con_plain, str(truth_path))
    assert guarded["precision"] == 1.0
    assert guarded["persons_fused"] == 0
    assert plain["precision"] < guarded["precision"]
    assert plain["persons_fused"] > 0
    assert plain["f1"] < guarded["f1"]


# --- stable keys and merges ---------------------------------------------------------------------------


def write_map(con: duckdb.DuckDBPyConnection, path: Path) -> str:
    con.table("identity_map").write_parquet(str(path))
    return str(path)


def test_keys_are_stable_across_runs(tmp_path: Path) -> None:
    first = [
        ("e1", 0, [("email", "ann@x"), ("cookie_id", "k1")]),
        ("e2", 5, [("email", "bob@x")]),
    ]
    con1, _ = run(first)
    k1 = keys(con1)
    prev = write_map(con1, tmp_path / "map1.parquet")

    # A higher-priority customer_id joins Ann: a fresh key would now derive from it, but Ann keeps hers.
    second = [*first, ("e3", 10, [("customer_id", "ANN"), ("cookie_id", "k1")]), ("e4", 11, [("email", "new@x")])]
    con2, report = run(second, previous_identity_map=prev)
    k2 = keys(con2)
    assert k2["e1"] == k1["e1"] == k2["e3"]
    assert k2["e2"] == k1["e2"]
    assert k2["e4"] not in {k1["e1"], k1["e2"]}
    assert report.n_merges == 0


def test_adding_an_event_with_known_identifiers_changes_no_key() -> None:
    rng = random.Random(11)
    events: list[Event] = []
    for p in range(40):
        for j in range(3):
            ids = [("email", f"m{p}"), ("customer_id", f"c{p}") if j == 0 else ("device_id", f"d{p}")]
            if j == 2:
                ids.append(("cookie_id", f"k{rng.randrange(60)}"))
            events.append((f"p{p}_{j}", p * 5 + j, ids))
    con1, _ = run(events)
    before = keys(con1)
    extra = [*events, ("again", 999, [("device_id", "d7"), ("customer_id", "c7")])]
    con2, _ = run(extra)
    after = keys(con2)
    assert {e: after[e] for e in before} == before
    assert after["again"] == before["p7_0"]


def test_bridging_event_merges_previous_customers(tmp_path: Path) -> None:
    first = [
        ("x1", 0, [("email", "x@x"), ("device_id", "dx")]),
        ("y1", 60, [("email", "y@x")]),
    ]
    con1, _ = run(first)
    k1 = keys(con1)
    prev = write_map(con1, tmp_path / "map1.parquet")
    second = [*first, ("bridge", 120, [("email", "y@x"), ("device_id", "dx")])]
    con2, report = run(second, previous_identity_map=prev)
    k2 = keys(con2)
    assert k2["x1"] == k2["y1"] == k2["bridge"] == k1["x1"]  # x was seen first: it survives
    assert report.n_merges == 1
    assert db.fetch(
        con2, "select merged_at, survivor_key, merged_key, via_id_type, via_id_value from identity_merges"
    ) == [(RUN_AT, k1["x1"], k1["y1"], "device_id", "dx")]

    # Same inputs, same outputs: the survivor does not depend on run order or repetition.
    con3, _ = run(list(reversed(second)), previous_identity_map=prev)
    assert keys(con3) == k2


def test_customers_first_seen_at_one_instant_merge_into_the_smaller_key(tmp_path: Path) -> None:
    first = [("x1", 0, [("email", "x@x"), ("device_id", "dx")]), ("y1", 0, [("email", "y@x")])]
    con1, _ = run(first)
    k1 = keys(con1)
    prev = write_map(con1, tmp_path / "map1.parquet")
    second = [*first, ("bridge", 120, [("email", "y@x"), ("device_id", "dx")])]
    for events in (second, list(reversed(second))):
        con2, _ = run(events, previous_identity_map=prev)
        assert set(keys(con2).values()) == {min(k1["x1"], k1["y1"])}  # a tie on first seen: the smaller key


def test_many_merges_of_customers_first_seen_at_one_instant_all_keep_the_smaller_key(tmp_path: Path) -> None:
    # The two-customer case above, 300 times over: enough rows for the survivor window to meet ties in
    # another order than the keys', so only the key's own tie-break keeps the smaller one.
    first = []
    for n in range(300):
        first += [(f"x{n}", 0, [("email", f"x{n}@x"), ("device_id", f"d{n}")]), (f"y{n}", 0, [("email", f"y{n}@x")])]
    con1, _ = run(first)
    k1 = keys(con1)
    prev = write_map(con1, tmp_path / "map1.parquet")
    second = [*first, *[(f"bridge{n}", 120, [("email", f"y{n}@x"), ("device_id", f"d{n}")]) for n in range(300)]]
    k2 = keys(run(second, previous_identity_map=prev)[0])
    assert all(k2[f"x{n}"] == k2[f"y{n}"] == min(k1[f"x{n}"], k1[f"y{n}"]) for n in range(300))


def test_merge_history_survives_a_rerun_that_merges_nothing(tmp_path: Path) -> None:
    first = [("x1", 0, [("email", "x@x"), ("device_id", "dx")]), ("y1", 60, [("email", "y@x")])]
    con1, _ = run(first)
    second = [*first, ("bridge", 120, [("email", "y@x"), ("device_id", "dx")])]
    history = {"identity_merges": tmp_path / "merges.parquet", "identity_splits": tmp_path / "splits.parquet"}
    con2, report2 = run(
        second,
        previous_identity_map=write_map(con1, tmp_path / "map1.parquet"),
        batch_id="night-2",
        audit_history=history,
    )
    assert report2.n_merges == 1
    for table, path in history.items():
        db.execute(con2, f"copy {table} to '{path}' (format parquet)")
    # The next night finds nothing new to merge; the audit still shows night 2's merge, and only once.
    con3, report3 = run(
        second,
        previous_identity_map=write_map(con2, tmp_path / "map2.parquet"),
        batch_id="night-3",
        audit_history=history,
    )
    assert report3.n_merges == 0
    assert db.fetch(con3, "select batch_id, merged_key from identity_merges") == [("night-2", keys(con1)["y1"])]


def test_customer_split_by_a_new_shared_device_keeps_one_owner_of_the_key(tmp_path: Path) -> None:
    first = [
        ("a", 0, [("customer_id", "A"), ("device_id", "d")]),
        ("e", 1, [("device_id", "d"), ("email", "e@x")]),
    ]
    con1, _ = run(first)
    k1 = keys(con1)
    prev = write_map(con1, tmp_path / "map1.parquet")
    con2, _ = run(
        [*first, ("b", 2, [("customer_id", "B"), ("device_id", "d")])], previous_identity_map=prev, batch_id="night-2"
    )
    k2 = keys(con2)
    assert k2["a"] == k1["a"]  # customer_id A outranks the e-mail: its component owns the previous key
    assert len({k2["a"], k2["b"], k2["e"]}) == 3
    assert db.fetch(con2, "select count(*), count(distinct customer_key) from customers") == [(3, 3)]
    # the e-mail's component left the key: a split caused by new events, recorded like one caused by a rule
    # the device is shared now, so only the e-mail moved
    assert db.fetch(
        con2,
        "select split_at, batch_id, previous_key, kept_key, new_key, n_identifiers_moved, via_id_type, via_id_value"
        " from identity_splits",
    ) == [(RUN_AT, "night-2", k1["a"], k1["a"], k2["e"], 1, "email", "e@x")]


# --- splits after a rule change ----------------------------------------------------------------------

SPLIT_COLUMNS = "split_at, previous_key, kept_key, new_key, n_identifiers_moved, via_id_type, via_id_value"


def test_newly_blocked_bridge_splits_the_previous_customer(tmp_path: Path) -> None:
    events = [
        ("a", 0, [("customer_id", "A"), ("cookie_id", "k-shared")]),
        ("m1", 1, [("email", "m@x"), ("cookie_id", "k-shared")]),
        ("m2", 2, [("email", "m@x"), ("phone", "5550123")]),
    ]
    con1, report1 = run(events)
    k1 = keys(con1)
    assert len(set(k1.values())) == 1 and report1.n_splits == 0
    assert db.fetch(con1, "select count(*) from identity_splits") == [(0,)]  # created even without a previous map
    prev = write_map(con1, tmp_path / "map1.parquet")

    stricter = Settings(identity=IdentityConfig(blocked_patterns=[*IdentityConfig().blocked_patterns, "^k-"]))
    con2, report2 = run(events, stricter, previous_identity_map=prev, run_at=RUN_AT + timedelta(days=1))
    k2 = keys(con2)
    old = k1["a"]
    # {m@x, 5550123} holds two of the three previous identifiers: it owns the key; {A} leaves with a new one
    assert k2["m1"] == k2["m2"] == old != k2["a"]
    assert report2.n_splits == 1 and report2.n_merges == 0
    assert db.fetch(con2, f"select {SPLIT_COLUMNS} from identity_splits") == [
        (RUN_AT + timedelta(days=1), old, old, k2["a"], 1, "customer_id", "A")
    ]
    # the split-off key is fresh and deterministic, never the previous one reused
    con3, _ = run(events, stricter, previous_identity_map=prev, run_at=RUN_AT + timedelta(days=1))
    assert keys(con3) == k2


def test_lower_limit_splits_into_one_row_per_component_that_left(tmp_path: Path) -> None:
    events = [
        ("a", 0, [("customer_id", "A"), ("email", "fam@x")]),
        ("b", 1, [("customer_id", "B"), ("email", "fam@x")]),
        ("c", 2, [("customer_id", "C"), ("email", "fam@x")]),
        ("a2", 3, [("customer_id", "A"), ("device_id", "da")]),
        ("b2", 4, [("customer_id", "B"), ("device_id", "db1"), ("cookie_id", "kb")]),
    ]
    loose = Settings(
        identity=IdentityConfig(max_values_per_type={**IdentityConfig().max_values_per_type, "customer_id": 3})
    )
    con1, _ = run(events, loose)
    k1 = keys(con1)
    assert len(set(k1.values())) == 1
    prev = write_map(con1, tmp_path / "map1.parquet")

    con2, report = run(events, previous_identity_map=prev)  # default: one customer_id per customer
    k2 = keys(con2)
    old = k1["a"]
    # the family e-mail is now a shared bridge; B's component has most identifiers (B, db1, kb) and keeps the key
    assert k2["b"] == k2["b2"] == old
    assert len({k2["a"], k2["b"], k2["c"]}) == 3
    assert report.n_splits == 2
    assert db.fetch(con2, f"select {SPLIT_COLUMNS} from identity_splits order by via_id_value") == [
        (RUN_AT, old, old, k2["a"], 2, "customer_id", "A"),
        (RUN_AT, old, old, k2["c"], 1, "customer_id", "C"),
    ]
    assert db.fetch(con2, "select id_value, is_shared from identity_map where id_type = 'email'") == [("fam@x", True)]


def test_no_split_when_nothing_changed(tmp_path: Path) -> None:
    events = [
        ("a", 0, [("customer_id", "A"), ("device_id", "tv")]),
        ("b", 1, [("customer_id", "B"), ("device_id", "tv")]),  # shared from the start: no split later
        ("a2", 2, [("customer_id", "A"), ("email", "a@x")]),
    ]
    con1, _ = run(events)
    prev = write_map(con1, tmp_path / "map1.parquet")
    con2, report = run([*events, ("a3", 3, [("email", "a@x"), ("phone", "1")])], previous_identity_map=prev)
    assert report.n_splits == 0
    assert keys(con2)["a"] == keys(con1)["a"]


# --- properties ---------------------------------------------------------------------------------------

identifier = st.tuples(
    st.sampled_from(["customer_id", "email", "device_id", "cookie_id"]),
    st.sampled_from(["a", "b", "c", "d", "e", "f", "unknown"]),
)
event_lists = st.lists(st.lists(identifier, min_size=0, max_size=3), min_size=1, max_size=25)


def as_events(raw: list[list[tuple[str, str]]]) -> list[Event]:
    return [(f"e{i:03d}", i, ids) for i, ids in enumerate(raw)]


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=event_lists, seed=st.integers(0, 10_000))
def test_result_does_not_depend_on_input_order(raw: list[list[tuple[str, str]]], seed: int) -> None:
    events = as_events(raw)
    rng = random.Random(seed)
    shuffled = [(eid, m, rng.sample(ids, len(ids))) for eid, m, ids in events]
    rng.shuffle(shuffled)
    tight = Settings(identity=IdentityConfig(max_values_per_type={"customer_id": 1, "email": 2, "device_id": 2}))
    con1, _ = run(events, tight)
    con2, _ = run(shuffled, tight)
    assert keys(con1) == keys(con2)
    q = "select * from identity_map order by id_type, id_value"
    assert db.fetch(con1, q) == db.fetch(con2, q)
    # invariants: no customer holds more linked values of a type than its limit; every event with a
    # usable identifier is resolved
    over = db.fetch(
        con1,
        """
        select customer_key, id_type, count(*) from identity_map where not is_shared group by all
        having count(*) > case id_type when 'customer_id' then 1 when 'email' then 2 when 'device_id' then 2 end
    """,
    )
    assert over == []
    usable = sum(1 for _, _, ids in events if any(v != "unknown" for _, v in ids))
    assert db.fetch(con1, "select count(customer_key) from int_event_customers")[0][0] == usable


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=event_lists)
def test_without_limits_customers_are_connected_components(raw: list[list[tuple[str, str]]]) -> None:
    events = as_events(raw)
    con, report = run(events, unlimited())
    # reference: union-find over events sharing a usable identifier
    parent = {eid: eid for eid, _, _ in events}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_with: dict[tuple[str, str], str] = {}
    usable = {eid: [i for i in ids if i[1] != "unknown"] for eid, _, ids in events}
    for eid, ids in usable.items():
        for ident in ids:
            if ident in first_with:
                parent[find(eid)] = find(first_with[ident])
            else:
                first_with[ident] = eid
    expected: dict[str, set[str]] = {}
    for eid, ids in usable.items():
        expected.setdefault(find(eid) if ids else f"none:{eid}", set()).add(eid)
    assert partition(keys(con)) == {frozenset(g) for g in expected.values()}
    assert report.n_events_unresolved == sum(1 for ids in usable.values() if not ids)


# --- scoring ------------------------------------------------------------------------------------------


def test_score_identity_on_hand_made_truth(tmp_path: Path) -> None:
    con = db.connect()
    db.execute(con, "create table int_event_customers (event_id varchar, customer_key varchar)")
    db.execute(
        con,
        "insert into int_event_customers values ('1','A'),('2','A'),('3','A'),('4','B'),('5','B'),('6',null)",
    )
    truth = tmp_path / "truth.parquet"
    write_truth([("1", "p"), ("2", "p"), ("3", "q"), ("4", "q"), ("5", "q"), ("6", "r")], truth)
    s = score_identity(con, str(truth))
    # predicted pairs: A 3, B 1 = 4; truth pairs: p 1, q 3 = 4; true pairs: (A,p) 1 + (B,q) 1 = 2
    assert (s["predicted_pairs"], s["truth_pairs"], s["true_pairs"]) == (4, 4, 2)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(0.5)
    assert s["persons_fused"] == 2  # p and q share customer A
    assert s["persons_split"] == 1  # q spans A and B


def test_many_held_back_values_of_a_once_per_customer_type_warn_with_the_fix() -> None:
    from journeys.quality import LIMIT_TRAP_MIN, identity_limit_warnings

    # Repeat buyers whose order-level id was mapped as customer_id: each person "has" two customer ids.
    def buyers(n: int) -> list[Event]:
        return [
            ev
            for p in range(n)
            for ev in (
                (f"o{p}a", p * 10, [("email", f"p{p}@x"), ("customer_id", f"order-{p}-a")]),
                (f"o{p}b", p * 10 + 1, [("email", f"p{p}@x"), ("customer_id", f"order-{p}-b")]),
            )
        ]

    settings = Settings()
    con, _ = run(buyers(LIMIT_TRAP_MIN), settings)
    assert identity_limit_warnings(con, settings) == [
        f"identity: {LIMIT_TRAP_MIN} held-back identifiers (e.g. email) each join customers that hold one"
        f" customer_id each; identity.max_values_per_type.customer_id = 1 keeps those {2 * LIMIT_TRAP_MIN} customers"
        " apart. If one person legitimately has several customer_id values (an order-level id), map that column"
        " to a per-order identifier type or raise the limit"
    ]
    con, _ = run(buyers(LIMIT_TRAP_MIN - 1), settings)
    assert identity_limit_warnings(con, settings) == []  # a few held back: the guardrail at work, no alarm


# --- hubs ---------------------------------------------------------------------------------------------


def call_centre(n_visitors: int, n_calls: int) -> list[Event]:
    """Cookie-only visitors who typed the call centre's own number into a web form, and calls carrying only it."""
    events: list[Event] = []
    for v in range(n_visitors):
        events.append((f"v{v:03d}_form", v, [("cookie_id", f"k{v:03d}"), ("phone", "hub")]))
        events.append((f"v{v:03d}_page", v, [("cookie_id", f"k{v:03d}")]))
    events += [(f"call{c:04d}", c, [("phone", "hub")]) for c in range(n_calls)]
    # one real customer whose own events carry the number too (an agent logged in as herself)
    events += [(f"agent{j}", j, [("customer_id", "AGENT"), ("phone", "hub")]) for j in range(3)]
    return events


def test_hub_phone_on_500_visitors_is_held_back_and_fuses_no_one() -> None:
    events = call_centre(500, 2_500)
    con, report = run(events)
    k = keys(con)
    assert report.n_customers == 501  # 500 visitors and the agent, not one
    assert report.n_hubs == 1
    assert all(k[f"v{v:03d}_form"] == k[f"v{v:03d}_page"] is not None for v in range(500))
    assert len({k[f"v{v:03d}_form"] for v in range(500)} | {k["agent0"]}) == 501
    assert db.fetch(con, "select id_type, id_value, reason, n_customers, n_events from shared_identifiers") == [
        ("phone", "hub", "hub", 501, 3_003)
    ]
    # Its own calls go to no customer (not the agent, not the visitor seen with it most): they stay unresolved.
    assert {k[f"call{c:04d}"] for c in range(2_500)} == {None}
    assert report.n_events_unresolved == 2_500
    assert db.fetch(con, "select customer_key, is_shared from identity_map where id_value = 'hub'") == [(None, True)]
    assert db.fetch(con, "select count(*), max(n_events) from customers") == [(501, 3)]

    # Without the check the per-type limits hold back the cookies instead of the hub: one customer takes it all.
    con_off, off = run(events, Settings(identity=IdentityConfig(max_links_per_value=None)))
    assert off.n_hubs == 0
    assert db.fetch(con_off, "select max(n_events) from customers")[0][0] > 2_500


def test_hub_of_the_highest_priority_type_is_held_back_too() -> None:
    # A till's default customer id on every walk-in's receipt: linked first, it would keep one e-mail and shed
    # the rest, and every walk-in's receipts would go to one person.
    events = [(f"r{i}", i, [("customer_id", "WALK-IN"), ("email", f"m{i}@x")]) for i in range(6)]
    events += [(f"w{i}", 10 + i, [("email", f"m{i}@x"), ("device_id", f"d{i}")]) for i in range(6)]
    hub = Settings(identity=IdentityConfig(max_links_per_value=5))
    con, report = run(events, hub)
    k = keys(con)
    assert report.n_customers == 6
    assert all(k[f"r{i}"] == k[f"w{i}"] for i in range(6))
    assert db.fetch(con, "select id_value, reason, n_customers from shared_identifiers") == [("WALK-IN", "hub", 6)]


def test_hub_threshold_is_more_than_max_links_per_value() -> None:
    def shared_by(n: int) -> list[Event]:
        return [(f"e{i}", i, [("phone", "desk"), ("cookie_id", f"k{i}")]) for i in range(n)]

    settings_ = Settings(identity=IdentityConfig(max_links_per_value=4, max_values_per_type={}))
    con, report = run(shared_by(4), settings_)
    assert (report.n_customers, report.n_hubs) == (1, 0)  # at the limit: one customer, linked as before
    con, report = run(shared_by(5), settings_)
    assert (report.n_customers, report.n_hubs) == (5, 1)
    assert db.fetch(con, "select id_value, reason from shared_identifiers") == [("desk", "hub")]


def test_event_with_only_shared_identifiers_follows_the_highest_priority_one() -> None:
    # tv (a device) is best supported by A, ck (a cookie, lower priority) by D; both are held back as shared.
    events = [(f"a{i}", i, [("customer_id", "A"), ("device_id", "tv")]) for i in range(3)]
    events += [("b", 3, [("customer_id", "B"), ("device_id", "tv")])]
    events += [("c", 4, [("customer_id", "C"), ("cookie_id", "ck")])]
    events += [(f"d{i}", 5 + i, [("customer_id", "D"), ("cookie_id", "ck")]) for i in range(3)]
    events += [("both", 9, [("cookie_id", "ck"), ("device_id", "tv")])]
    con, _ = run(events)
    k = keys(con)
    assert db.fetch(con, "select id_value from shared_identifiers order by 1") == [("ck",), ("tv",)]
    assert len({k["a0"], k["b"], k["c"], k["d0"]}) == 4
    assert k["both"] == k["a0"]


def test_components_may_take_exactly_the_pass_limit_and_not_one_more(monkeypatch: pytest.MonkeyPatch) -> None:
    from journeys import identity

    def labels_of_a_chain() -> tuple[int, list[tuple[int, int]]]:
        con = db.connect()
        # A path numbered from its middle outwards: the smallest label needs several hooking passes to spread.
        db.execute(
            con,
            "create temp table int_identity_cc_edges as"
            " select a, b from (values (5, 3), (3, 1), (1, 2), (2, 4), (4, 6), (6, 8), (8, 7)) as v(a, b)",
        )
        passes = identity.connected_components(con)
        return passes, db.fetch(con, "select node_id, label from int_identity_cc_labels order by node_id")

    passes, labels = labels_of_a_chain()
    assert passes >= 2 and labels == [(n, 1) for n in range(1, 9)]
    monkeypatch.setattr(identity, "_MAX_CC_PASSES", passes)
    assert labels_of_a_chain() == (passes, labels)
    monkeypatch.setattr(identity, "_MAX_CC_PASSES", passes - 1)
    with pytest.raises(RuntimeError, match=f"connected components did not converge in {passes - 1} passes"):
        labels_of_a_chain()
