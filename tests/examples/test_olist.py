"""The Olist worked example's config (examples/olist) is valid and maps a hand-made export of the same shape."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from journeys import build, db
from journeys.config import load_settings
from journeys.ingest import events_glob, ingest_sources, links_glob

CONFIG = Path(__file__).parents[2] / "examples" / "olist" / "journeys.yaml"
AS_OF = datetime(2018, 12, 1)

# The real files' headers; rows made up. o1 and o2 are one person's two orders (two per-order customer_ids,
# one customer_unique_id); o3 was cancelled.
ORDERS = (
    '"order_id","customer_id","order_status","order_purchase_timestamp","order_approved_at",'
    '"order_delivered_carrier_date","order_delivered_customer_date","order_estimated_delivery_date"\n'
    "o1,c1,delivered,2017-10-02 10:56:33,2017-10-02 11:07:15,2017-10-04 19:55:00,2017-10-10 21:25:13,"
    "2017-10-18 00:00:00\n"
    "o2,c2,invoiced,2017-11-20 09:00:00,2017-11-20 10:00:00,,,2017-12-10 00:00:00\n"
    "o3,c3,canceled,2017-11-21 09:00:00,,,,2017-12-11 00:00:00\n"
)
CUSTOMERS = (
    '"customer_id","customer_unique_id","customer_zip_code_prefix","customer_city","customer_state"\n'
    "c1,u1,14409,franca,SP\n"
    "c2,u1,14409,franca,SP\n"
    "c3,u2,09790,sao bernardo do campo,SP\n"
)
# r2 reviews both of u1's orders (Olist has such review ids); its comment spans two lines.
REVIEWS = (
    '"review_id","order_id","review_score","review_comment_title","review_comment_message",'
    '"review_creation_date","review_answer_timestamp"\n'
    "r1,o1,5,,,2017-10-11 00:00:00,2017-10-12 03:05:13\n"
    'r2,o1,1,Ruim,"Ótimo vendedor,\nmas não chegou",2017-11-30 00:00:00,2017-12-01 10:00:00\n'
    'r2,o2,1,Ruim,"Ótimo vendedor,\nmas não chegou",2017-11-30 00:00:00,2017-12-01 10:00:00\n'
)


def test_the_olist_example_config_maps_orders_links_and_reviews(tmp_path):
    for rel, text in {
        "orders/olist_orders_dataset.csv": ORDERS,
        "customers/olist_customers_dataset.csv": CUSTOMERS,
        "reviews/olist_order_reviews_dataset.csv": REVIEWS,
    }.items():
        (tmp_path / "landing" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "landing" / rel).write_text(text, encoding="utf-8")
    s = load_settings(CONFIG, data_root=tmp_path, pii_salt="test-salt", memory_limit="512MB")
    report = ingest_sources(s, as_of=AS_OF, batch_id="b1")
    assert report.accounting_ok()
    per_source = {
        f.source: (f.read, f.loaded, f.quarantined, f.filtered, f.events, f.events_skipped) for f in report.files
    }
    # o1 gives four events, o2 two (carrier and delivery times empty: skipped), o3 is filtered out.
    assert per_source == {
        "orders": (2, 2, 0, 1, 6, 2),
        "customers": (3, 3, 0, 0, 0, 0),
        "reviews": (3, 3, 0, 0, 3, 0),
    }
    with duckdb.connect() as con:
        events = con.sql(
            "select event_id, event_type, channel, sentiment, occurred_at from read_parquet($g) order by all",
            params={"g": events_glob(s)},
        ).fetchall()
        n_links = con.sql("select count(*) from read_parquet($g)", params={"g": links_glob(s)}).fetchall()[0][0]
    assert n_links == 3
    assert [e[:4] for e in events] == [
        ("orders:o1:delivered", "delivered", "web", None),
        ("orders:o1:handed_to_carrier", "handed_to_carrier", "web", None),
        ("orders:o1:payment_approved", "payment_approved", "web", None),
        ("orders:o1:purchase", "purchase", "web", None),
        ("orders:o2:payment_approved", "payment_approved", "web", None),
        ("orders:o2:purchase", "purchase", "web", None),
        ('reviews:["r1","o1"]', "review", "survey", 1.0),
        ('reviews:["r2","o1"]', "review", "survey", -1.0),
        ('reviews:["r2","o2"]', "review", "survey", -1.0),
    ]
    # Naive times are Sao Paulo's (UTC-2 in summer time on 2017-11-20, UTC-3 on 2017-10-02).
    assert events[3][4] == datetime(2017, 10, 2, 13, 56, 33)

    context = build.run_context(s, AS_OF, "b1")
    with db.connect() as con:
        build.build_models(con, context)
        (n_customers,) = db.fetch(con, "select count(*) from customers")[0]
        stages = db.fetch(
            con,
            "select furthest_stage from journey_stages where stage_model = 'olist_marketplace' and mode = 'ordered'",
        )
    # The link table makes u1's two orders and three reviews one customer, whose second order is a repeat purchase.
    assert n_customers == 1
    assert stages == [(6,)]
