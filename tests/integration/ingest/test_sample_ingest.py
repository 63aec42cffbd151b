"""Generated sample files go through the real ingest: catalogue, inventory, events and returns
included."""

from pyspark.sql import functions as F

from shopsense.ingest import batch as ingest
from shopsense.ingest import sample
from shopsense.core import tables
from shopsense.core.runs import read_runs


def test_sample_job_then_ingest(spark, conf_factory, tmp_path):
    out = tmp_path / "sample"
    conf = conf_factory(f"sample.out_dir={out}", "sample.n_customers=150", "sample.n_skus=40",
                        "sample.n_days=60", "ingest.source=sample",
                        f"sources.sample.orders.path={out}/orders",
                        f"sources.sample.catalogue.path={out}/catalogue",
                        f"sources.sample.inventory.path={out}/inventory",
                        f"sources.sample.events.path={out}/events")
    generated = sample.run(spark, conf)
    n_lines = generated["rows_out"]
    assert n_lines > 0 and (out / "truth" / "truth.json").exists()

    m = ingest.run(spark, conf)["metrics"]
    assert (m["rows_read"], m["rows_accepted"], m["rows_quarantined"], m["rows_duplicate"]) == (n_lines, n_lines, 0, 0)
    assert m["events_read"] == m["events_accepted"] == generated["metrics"]["rows_events"] > 0
    lines = tables.read_table(spark, conf, "silver.order_lines")
    by_type = dict(lines.groupBy("line_type").count().collect())
    assert by_type["sale"] > 0 and by_type.get("cancellation", 0) > 0 and "return" not in by_type
    assert lines.filter("is_guest").count() > 0
    products = tables.read_table(spark, conf, "silver.products")
    assert dict(products.groupBy("origin").count().collect()) == {"catalogue": 40}
    assert products.filter(F.col("lead_time_days").isNull() | F.col("unit_cost").isNull()).count() == 0
    inventory = tables.read_table(spark, conf, "silver.inventory")
    assert inventory.count() == 40 and inventory.filter("on_hand = 0").count() >= 1
    runs = read_runs(spark, conf).select("job", "status").collect()
    assert sorted((r.job, r.status) for r in runs) == [("ingest", "succeeded"), ("sample", "succeeded")]
