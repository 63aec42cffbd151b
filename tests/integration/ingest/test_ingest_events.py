"""Ingest of a source's events file: every record accepted, quarantined with its reason or
counted a duplicate; customer ids pseudonymised with the orders' key, so events join orders."""

from collections import Counter

from pyspark.sql import functions as F

from shopsense.core import tables
from shopsense.ingest import batch as ingest
from shopsense.ingest import sample
from tests.integration.ingest.test_ingest import DAY1, shop_conf, write_csv

EVENTS_HEADER = "SessionId,CustomerID,ItemId,Event,Time"
#: (raw record, what ingest must make of it: None accepted, "duplicate", or the reason code)
EVENTS = [
    ("s1,17850.0,85123A,view,2010-12-01 08:20:00", None),
    ("s1,17850.0,85123A,addtocart,2010-12-01 08:21:00", None),
    ("s1,17850.0,85123A, Transaction ,2010-12-01 08:26:00", None),     # the export's spelling
    ("s1,17850.0,85123A,view,2010-12-01 08:20:00", "duplicate"),
    ("s2,,22633,view,2010-12-01 08:27:00", None),                      # an anonymous session
    ("s3,13047.0,84879,wishlist,2010-12-01 08:30:00", "unknown_event_type"),
    ("s3,13047.0,84879,view,", "missing_event_time"),
    ("s3,13047.0,84879,view,01/12/2010 08:34", "unparsable_event_time"),
    (",13047.0,84879,view,2010-12-01 08:35:00", "missing_session_id"),
    ("s4,13047.0,,view,2010-12-01 08:36:00", "missing_sku"),
    ("s4,13047.0,22960,,2010-12-01 08:37:00", "missing_event_type"),
    ("s4,13047.0,22960,view,2099-01-01 00:00:00", "future_event_time"),
    ('s4,13047.0,22960,"view,2010-12-01 08:38:00', "malformed_record"),
]
EVENTS_SPEC = """    events:
      path: {path}
      format: csv
      timestamp_format: "yyyy-MM-dd HH:mm:ss"
      columns: {{session_id: SessionId, customer_id: CustomerID, sku: ItemId, event_type: Event,
                event_at: Time}}
      event_types: {{add_to_cart: addtocart, purchase: transaction}}
"""


def test_events_are_accounted_for_quarantined_with_reasons_and_join_orders(spark, conf_factory, tmp_path):
    orders = write_csv(tmp_path / "orders.csv", DAY1)
    events_file = write_csv(tmp_path / "events.csv", [r for r, _ in EVENTS], header=EVENTS_HEADER)
    conf = shop_conf(conf_factory, tmp_path, orders, extra=EVENTS_SPEC.format(path=events_file))
    m = ingest.run(spark, conf)["metrics"]

    fate = Counter("accepted" if f is None else "duplicate" if f == "duplicate" else "quarantined"
                   for _, f in EVENTS)
    assert (m["events_read"], m["events_accepted"], m["events_quarantined"], m["events_duplicate"]) == \
        (len(EVENTS), fate["accepted"], fate["quarantined"], fate["duplicate"])
    quarantined = (tables.read_table(spark, conf, "silver.quarantine")
                   .filter(F.col("source_file").endswith("events.csv")))
    assert Counter(r["reason"] for r in quarantined.collect()) == \
        Counter(f for _, f in EVENTS if f not in (None, "duplicate"))
    assert quarantined.filter(F.col("raw_values").contains("13047")).count() == 0   # pseudonymised

    events = tables.read_table(spark, conf, "silver.events")
    assert events.count() == fate["accepted"]
    assert Counter(r["event_type"] for r in events.collect()) == \
        Counter({"view": 2, "add_to_cart": 1, "purchase": 1})
    assert events.filter(F.col("customer_id").isNull()).count() == 1
    assert events.filter(F.col("customer_id").contains("17850")).count() == 0
    lines = tables.read_table(spark, conf, "silver.order_lines")
    joined = events.select("customer_id").distinct().join(lines.select("customer_id").distinct(),
                                                          "customer_id")
    assert joined.count() == 1   # 17850's pseudonym: the same in events and order lines

    full = shop_conf(conf_factory, tmp_path, orders, "ingest.incremental=false",
                     extra=EVENTS_SPEC.format(path=events_file))
    m = ingest.run(spark, full)["metrics"]
    assert m["events_already_present"] == fate["accepted"] + fate["quarantined"]
    assert tables.read_table(spark, conf, "silver.events").count() == fate["accepted"]


def test_sample_events_are_ingested_whole_and_join_the_orders(spark, conf_factory, tmp_path):
    out = tmp_path / "sample"
    conf = conf_factory(f"sample.out_dir={out}", "sample.n_customers=150", "sample.n_skus=40",
                        "sample.n_days=60", "ingest.source=sample",
                        *(f"sources.sample.{n}.path={out}/{n}"
                          for n in ("orders", "catalogue", "inventory", "events")))
    generated = sample.run(spark, conf)["metrics"]
    assert generated["rows_events"] > 0
    m = ingest.run(spark, conf)["metrics"]
    assert (m["events_read"], m["events_accepted"], m["events_quarantined"], m["events_duplicate"]) == \
        (generated["rows_events"], generated["rows_events"], 0, 0)
    events = tables.read_table(spark, conf, "silver.events")
    customers = events.select("customer_id").distinct()
    in_orders = customers.join(tables.read_table(spark, conf, "silver.order_lines")
                               .select("customer_id").distinct(), "customer_id").count()
    # every event customer has planned orders; only one whose orders were all guest checkouts
    # (10% of orders) has none with its id
    assert in_orders >= 0.85 * customers.count()
    assert events.filter(F.col("customer_id").startswith("C0")).count() == 0
