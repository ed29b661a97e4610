"""Source kinds beyond one event per row: identity link tables, several events per row, row filters."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from journeys import build, db
from journeys.config import EventSpec, MappedField, RowFilter, Settings, SourceConfig
from journeys.ingest import IngestReport, events_glob, ingest_sources, links_glob, quarantine_glob

AS_OF = datetime(2026, 3, 1)
SALT = "test-salt"

ORDERS = SourceConfig(
    name="orders",
    path="orders/*.csv",
    format="csv",
    event_id="order_id",
    occurred_at="purchased_at",
    channel=MappedField(value="web"),
    event_type=MappedField(value="purchase"),
    identifiers={"order_id": "order_id"},
)
CRM = SourceConfig(
    name="crm",
    kind="links",
    path="crm/*.csv",
    format="csv",
    identifiers={"order_id": "order_id", "person_id": "customer_id", "email": "email"},
)
WIDE = SourceConfig(
    name="orders",
    path="orders/*.csv",
    format="csv",
    event_id="order_id",
    events=[
        EventSpec(occurred_at="purchased_at", event_type="purchase"),
        EventSpec(occurred_at="approved_at", event_type="approval", optional=True),
        EventSpec(occurred_at="delivered_at", event_type="delivery", optional=True),
    ],
    channel=MappedField(value="web"),
    identifiers={"customer": "customer_id"},
)


def settings(root: Path, *sources: SourceConfig) -> Settings:
    return Settings(data_root=root, pii_salt=SALT, sources=list(sources), memory_limit="512MB", threads=1)


def land(root: Path, rel: str, text: str) -> None:
    p = root / "landing" / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


def ingest(s: Settings, batch_id: str = "b1") -> IngestReport:
    report = ingest_sources(s, as_of=AS_OF, batch_id=batch_id)
    assert report.accounting_ok()
    return report


def rows(glob: str, cols: str, order: str) -> list[tuple]:
    with duckdb.connect() as con:
        return con.sql(f"select {cols} from read_parquet($g) order by {order}", params={"g": glob}).fetchall()


def counts(report: IngestReport, source: str) -> tuple[int, int, int, int]:
    files = [f for f in report.files if f.source == source]
    return (
        sum(f.read for f in files),
        sum(f.loaded for f in files),
        sum(f.quarantined for f in files),
        sum(f.duplicates for f in files),
    )


# --- identity link tables ------------------------------------------------------------------------------


def _orders_and_crm(root: Path) -> Settings:
    land(
        root,
        "orders/a.csv",
        "order_id,purchased_at\n"
        "o1,2026-01-10 10:00:00\n"
        "o2,2026-01-20 10:00:00\n"  # the same person's second order: a repeat purchase
        "o3,2026-01-21 10:00:00\n",
    )
    land(
        root,
        "crm/people.csv",
        "order_id,person_id,email\n"
        "o1,p1,Ann@Example.com\n"
        "o2,p1,\n"
        "o3,p2,bob@example.com\n"
        "o9,p3\n",  # line 5: ragged, quarantined like an event row would be
    )
    return settings(root, ORDERS, CRM)


def test_a_link_table_joins_two_orders_into_one_customer_and_adds_no_event_or_journey(tmp_path):
    s = _orders_and_crm(tmp_path)
    started = datetime.now(UTC).replace(tzinfo=None)
    report = ingest(s)
    finished = datetime.now(UTC).replace(tzinfo=None)
    assert counts(report, "orders") == (3, 3, 0, 0)
    assert counts(report, "crm") == (4, 3, 1, 0)
    assert [f.events for f in report.files if f.source == "crm"] == [0]
    # Link rows live beside the events, never among them; e-mails are hashed exactly as events' are.
    assert rows(events_glob(s), "event_id", "event_id") == [("orders:o1",), ("orders:o2",), ("orders:o3",)]
    email = hashlib.sha256((SALT + "ann@example.com").encode()).hexdigest()
    linked = rows(links_glob(s), "source, source_line, identifiers", "source_line")
    assert [(src, line) for src, line, _ in linked] == [("crm", 2), ("crm", 3), ("crm", 4)]
    assert {"id_type": "email", "id_value": email} in linked[0][2]
    assert "Ann@Example.com" not in str(linked)
    assert rows(quarantine_glob(s), "source, line, field", "line") == [("crm", 5, "row")]

    context = build.run_context(s, AS_OF, "b1")
    with db.connect() as con:
        build.build_models(con, context)
        keys = dict(db.fetch(con, "select event_id, customer_key from int_event_customers"))
        n_events, n_links = db.fetch(con, "select (select count(*) from events), (select count(*) from links)")[0]
        journeys = db.fetch(con, "select customer_key, n_events from journeys order by n_events desc")
        customers = db.fetch(con, "select count(*), sum(n_events) from customers")[0]
    with db.connect() as published:
        # the published form of the lake views, as the warehouse holds them: with the JSON text twin
        db.set_file_search_path(published, [s.warehouse_path.parent])
        build.create_lake_views(published, s, portable=True)
        link_rows = db.fetch(
            published,
            "select source_line, source_file, identifiers, identifiers_text from links order by source_line",
        )
        batches = db.fetch(published, "select distinct batch_id, ingested_at from links")
        link_ids = db.fetch(published, "select link_id, identifiers from links order by source_line")
    assert (n_events, n_links) == (3, 3)
    # the text twin is the list as JSON; read back with Python's own parser
    assert [json.loads(text) for *_, text in link_rows] == [ids for _, _, ids, _ in link_rows]
    assert {"id_type": "email", "id_value": email} in json.loads(link_rows[0][3])
    assert [(line, file) for line, file, _, _ in link_rows] == [(n, "crm/people.csv") for n in (2, 3, 4)]
    # one batch, "b1", started (naive UTC wall clock) within the ingest call; published as UTC-aware
    # link_id: the source, then sha256 of the identifiers sorted, as compact JSON (hashlib and json, not DuckDB)
    for link_id, ids in link_ids:
        ordered = sorted(ids, key=lambda i: (i["id_type"], i["id_value"]))
        text = json.dumps(
            [{"id_type": i["id_type"], "id_value": i["id_value"]} for i in ordered], separators=(",", ":")
        )
        assert link_id == "crm:" + hashlib.sha256(text.encode()).hexdigest()
    assert len({link_id for link_id, _ in link_ids}) == 3
    [(batch, ingested_at)] = batches
    assert batch == "b1" and started <= ingested_at.astimezone(UTC).replace(tzinfo=None) <= finished
    assert set(keys) == {"orders:o1", "orders:o2", "orders:o3"}
    assert keys["orders:o1"] == keys["orders:o2"] != keys["orders:o3"]
    assert [n for _, n in journeys] == [2, 1]
    assert customers == (2, 3)


def test_a_link_table_exported_again_is_all_duplicates(tmp_path):
    s = _orders_and_crm(tmp_path)
    ingest(s)
    # A nightly full export of the CRM table: the same links again, plus one changed row (a new e-mail).
    land(tmp_path, "crm/people-2.csv", "order_id,person_id,email\no1,p1,ann@example.com\no3,p2,bob@new.example\n")
    again = ingest(s, "b2")
    assert counts(again, "crm") == (2, 1, 0, 1)


def test_a_link_table_corrected_at_the_same_path_replaces_its_earlier_links(tmp_path):
    s = _orders_and_crm(tmp_path)
    ingest(s)
    # The same export file, corrected: o2 belongs to someone else, the ragged row is fixed, o3's link is gone.
    land(tmp_path, "crm/people.csv", "order_id,person_id,email\no1,p1,ann@example.com\no2,p4,\no9,p3,\n")
    again = ingest(s, "b2")
    assert counts(again, "crm") == (3, 3, 0, 0)
    # Three links of the earlier version left the lake, and its quarantine record of the ragged row.
    assert [f.replaced for f in again.files if f.source == "crm"] == [4]
    linked = rows(links_glob(s), "source_line, identifiers, batch_id", "source_line")
    assert [(line, batch) for line, _, batch in linked] == [(2, "b2"), (3, "b2"), (4, "b2")]
    assert {"id_type": "customer_id", "id_value": "p4"} in linked[1][1]
    assert not list(s.quarantine_dir.rglob("*.parquet"))


# --- one row, several events ---------------------------------------------------------------------------

WIDE_HEADER = "order_id,customer,purchased_at,approved_at,delivered_at\n"


def test_a_wide_row_gives_one_event_per_filled_time_and_is_accounted_once(tmp_path):
    land(
        tmp_path,
        "orders/a.csv",
        WIDE_HEADER + "o1,c1,2026-01-10 10:00:00,2026-01-10 11:00:00,2026-01-15 09:00:00\n"
        "o2,c2,2026-01-11 10:00:00,,\n"  # line 3: two optional times empty: one event, nothing quarantined
        "o3,c3,,2026-01-12 10:00:00,\n"  # line 4: the required time is empty
        "o4,c4,2026-01-12 10:00:00,not a time,\n"  # line 5: an optional time that cannot be read
        "o1,c1,2026-01-10 10:00:00,2026-01-10 11:00:00,2026-01-15 09:00:00\n",  # line 6: a repeated row
    )
    s = settings(tmp_path, WIDE)
    report = ingest(s)
    (f,) = report.files
    assert (f.read, f.loaded, f.quarantined, f.duplicates) == (5, 2, 2, 1)
    assert (f.events, f.events_skipped) == (4, 2)
    assert rows(events_glob(s), "event_id, event_type, occurred_at, source_line", "occurred_at") == [
        ("orders:o1:purchase", "purchase", datetime(2026, 1, 10, 10), 2),
        ("orders:o1:approval", "approval", datetime(2026, 1, 10, 11), 2),
        ("orders:o2:purchase", "purchase", datetime(2026, 1, 11, 10), 3),
        ("orders:o1:delivery", "delivery", datetime(2026, 1, 15, 9), 2),
    ]
    # One quarantine row per physical row, naming the column of the event that failed.
    assert rows(quarantine_glob(s), 'line, field, "column"', "line") == [
        (4, "occurred_at", "purchased_at"),
        (5, "occurred_at", "approved_at"),
    ]
    with duckdb.connect() as con:
        manifest = con.sql(
            "select read, loaded, events, events_skipped from read_parquet($p)",
            params={"p": str(s.state_dir / "ingest_manifest.parquet")},
        ).fetchall()
    assert manifest == [(5, 2, 4, 2)]


def test_a_wide_row_exported_again_with_a_new_time_loads_only_that_event(tmp_path):
    land(tmp_path, "orders/a.csv", WIDE_HEADER + "o2,c2,2026-01-11 10:00:00,,\n")
    s = settings(tmp_path, WIDE)
    ingest(s)
    land(tmp_path, "orders/b.csv", WIDE_HEADER + "o2,c2,2026-01-11 10:00:00,,2026-01-14 10:00:00\n")
    (_, f) = ingest(s, "b2").files
    assert (f.read, f.loaded, f.duplicates, f.events, f.events_skipped) == (1, 1, 0, 1, 1)
    assert rows(events_glob(s), "event_id", "event_id") == [("orders:o2:delivery",), ("orders:o2:purchase",)]


def test_a_wide_row_loads_its_events_within_the_limit_and_holds_the_rest_until_as_of_passes_them(tmp_path):
    land(
        tmp_path,
        "orders/a.csv",
        WIDE_HEADER + "o1,c1,2026-02-27 10:00:00,,2026-03-20 09:00:00\n"  # delivered three weeks after as_of
        "o2,c2,2026-03-10 10:00:00,,\n",  # its only event is later than the limit
    )
    s = settings(tmp_path, WIDE)
    report = ingest(s)
    (f,) = report.files
    # A row counts once: loaded when any of its events loads, held only when none does.
    assert (f.read, f.loaded, f.quarantined, f.duplicates, f.held) == (2, 1, 0, 0, 1)
    assert report.still_held == 2
    assert rows(events_glob(s), "event_id", "event_id") == [("orders:o1:purchase",)]
    later = ingest_sources(s, as_of=datetime(2026, 4, 1), batch_id="b2")
    assert (later.read, later.released, later.still_held) == (0, 2, 0)
    assert rows(events_glob(s), "event_id, source_line", "event_id") == [
        ("orders:o1:delivery", 2),
        ("orders:o1:purchase", 2),
        ("orders:o2:purchase", 3),
    ]
    again = ingest_sources(s, as_of=datetime(2026, 5, 1), batch_id="b3")
    assert (again.released, again.still_held) == (0, 0)
    assert len(rows(events_glob(s), "event_id", "event_id")) == 3


# --- row filters ---------------------------------------------------------------------------------------


def test_row_filters_keep_only_matching_rows_and_count_the_rest(tmp_path):
    land(
        tmp_path,
        "orders/a.csv",
        "order_id,status,purchased_at\n"
        "o1,delivered,2026-01-10 10:00:00\n"
        "o2,canceled,2026-01-11 10:00:00\n"  # filtered: status
        "o3, shipped ,2026-01-12 10:00:00\n"  # kept: the value is trimmed before it is compared
        "o4,delivered,\n"  # filtered: no time (so not quarantined)
        "o5,,2026-01-13 10:00:00\n",  # filtered: an empty status is in no set
    )
    source = ORDERS.model_copy(
        update={
            "keep_rows": [
                RowFilter(column="status", one_of=["delivered", "shipped"]),
                RowFilter(column="purchased_at", not_empty=True),
            ]
        }
    )
    s = settings(tmp_path, source)
    (f,) = ingest(s).files
    assert (f.read, f.loaded, f.quarantined, f.filtered) == (2, 2, 0, 3)
    assert rows(events_glob(s), "event_id", "event_id") == [("orders:o1",), ("orders:o3",)]


# --- the whole run -------------------------------------------------------------------------------------


def test_a_run_with_wide_orders_and_a_link_table_passes_every_quality_check(tmp_path):
    from journeys import quality

    land(
        tmp_path,
        "orders/a.csv",
        WIDE_HEADER + "o1,c1,2026-01-10 10:00:00,2026-01-10 11:00:00,2026-01-15 09:00:00\n"
        "o2,c2,2026-01-20 10:00:00,,\n",
    )
    land(tmp_path, "crm/people.csv", "order_id,person_id,email\no1,p1,ann@example.com\no2,p1,\n")
    wide = WIDE.model_copy(update={"identifiers": {"order_id": "order_id", "customer": "order_customer_id"}})
    s = settings(tmp_path, wide, CRM)
    ingest(s)
    context = build.run_context(s, AS_OF, "b1")
    with db.connect() as con:
        build.build_models(con, context)
        report = quality.validate_warehouse(con, s, as_of=AS_OF, catalog=context.catalog)
        n_customers, n_events = db.fetch(con, "select count(*), sum(n_events) from customers")[0]
        no_time = db.fetch(con, "select id_type, n_events from identity_map where first_seen_at is null")
    landing = quality.validate_landing(s, batch_id="b1")
    assert report.success, report.failures
    assert landing.success, landing.failures
    assert (n_customers, n_events) == (1, 4)
    # Known only from the link table: in the identity map, with no event and no seen time.
    assert sorted(no_time) == [("customer_id", 0), ("email", 0)]


def test_a_file_whose_rows_are_all_filtered_out_passes_the_landing_checks(tmp_path):
    from journeys.quality import validate_landing

    land(tmp_path, "orders/a.csv", "order_id,status,purchased_at\no1,delivered,2026-01-10 10:00:00\n")
    land(tmp_path, "orders/b.csv", "order_id,status,purchased_at\no2,canceled,2026-01-11 10:00:00\n")
    source = ORDERS.model_copy(update={"keep_rows": [RowFilter(column="status", one_of=["delivered"])]})
    s = settings(tmp_path, source)
    assert [(f.read, f.filtered) for f in ingest(s).files] == [(1, 0), (0, 1)]
    report = validate_landing(s, batch_id="b1")
    assert report.success, report.failures


def test_a_wide_row_gives_its_revenue_to_its_first_event_only(tmp_path):
    land(
        tmp_path,
        "orders/a.csv",
        WIDE_HEADER.replace("\n", ",price\n") + "o1,c1,2026-01-10 10:00:00,,2026-01-15 09:00:00,9.50\n",
    )
    s = settings(tmp_path, WIDE.model_copy(update={"revenue": "price"}))
    ingest(s)
    assert rows(events_glob(s), "event_type, revenue", "occurred_at") == [("purchase", 9.5), ("delivery", None)]


def test_a_wide_parquet_row_reads_native_times_and_skips_null_optional_ones(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "landing" / "orders" / "a.parquet"
    path.parent.mkdir(parents=True)
    table = pa.table(
        {
            "order_id": ["o1", "o2"],
            "customer": ["c1", "c2"],
            "purchased_at": pa.array([datetime(2026, 1, 10, 10), datetime(2026, 1, 11, 10)], pa.timestamp("us")),
            "approved_at": pa.array([None, datetime(2026, 1, 11, 12)], pa.timestamp("us")),
            "delivered_at": ["2026-01-15 09:00:00", None],  # text beside native times: read with the format
        }
    )
    pq.write_table(table, path)
    source = WIDE.model_copy(
        update={"path": "orders/*.parquet", "format": "parquet", "timestamp_format": "%Y-%m-%d %H:%M:%S"}
    )
    s = settings(tmp_path, source)
    (f,) = ingest(s).files
    assert (f.read, f.loaded, f.quarantined, f.events, f.events_skipped) == (2, 2, 0, 4, 2)
    assert rows(events_glob(s), "event_id, occurred_at", "occurred_at") == [
        ("orders:o1:purchase", datetime(2026, 1, 10, 10)),
        ("orders:o2:purchase", datetime(2026, 1, 11, 10)),
        ("orders:o2:approval", datetime(2026, 1, 11, 12)),
        ("orders:o1:delivery", datetime(2026, 1, 15, 9)),
    ]


def test_a_json_lines_link_table_quarantines_an_unreadable_phone_naming_the_field(tmp_path):
    land(
        tmp_path,
        "crm/a.jsonl",
        '{"account": "a1", "phone": "+44 20 7946 0958"}\n'
        '{"account": "a2", "phone": "not a number"}\n'
        '{"account": "a3"}\n',  # a key a JSON object leaves out is an empty value, not an error
    )
    source = SourceConfig(
        name="crm",
        kind="links",
        path="crm/*.jsonl",
        format="jsonl",
        identifiers={"account": "customer_id", "phone": "phone"},
    )
    s = settings(tmp_path, source)
    (f,) = ingest(s).files
    assert (f.read, f.loaded, f.quarantined) == (3, 2, 1)
    assert rows(quarantine_glob(s), 'line, field, "column"', "line") == [(2, "phone", "phone")]
    phone = hashlib.sha256((SALT + "+442079460958").encode()).hexdigest()
    linked = rows(links_glob(s), "source_line, identifiers", "source_line")
    assert linked[0] == (1, [{"id_type": "customer_id", "id_value": "a1"}, {"id_type": "phone", "id_value": phone}])
    assert linked[1] == (3, [{"id_type": "customer_id", "id_value": "a3"}])
