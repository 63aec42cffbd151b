"""The recommend job end to end on sample data with planted tastes: ALS against best-sellers,
exclusions, fallback labels, and a second run that gives the same answer."""

import pytest
from pyspark.sql import Window
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopsense.core.config import ConfigError
from shopsense.recommend import als as recommend
from shopsense.ingest import sample
from shopsense.core import tables
from tests.helpers import make_conf

# Ten planted taste blocks over 120 SKUs (each customer takes ~95% of its lines from its block):
# best-sellers hold about one SKU of each block, so a model that finds a customer's block should
# beat them clearly, also (as evaluated by default) on new SKUs only.
SPEC = sample.SampleSpec(n_customers=400, n_skus=120, n_days=180, n_tastes=10, seed=7)
OVERRIDES = ("recommend.grid.rank=[10]", "recommend.grid.reg_param=[0.1]", "recommend.grid.alpha=[10.0]",
             "recommend.als.max_iter=8")


def silver_lines(spark, spec):
    """Sample order lines in the silver.order_lines shape (what ingest makes of them)."""
    return (sample.order_lines(spark, spec)
            .withColumn("line_id", F.concat_ws("-", "order_id", "sku"))
            .withColumn("is_guest", F.col("customer_id").isNull())
            .withColumn("order_date", F.to_date("ordered_at"))
            .withColumn("line_type", F.when(F.col("quantity") < 0, "return").otherwise("sale"))
            .withColumn("is_product", F.lit(True))
            .withColumn("revenue", F.col("quantity") * F.col("unit_price"))
            .withColumn("source_file", F.lit("sample"))
            .withColumn("run_id", F.lit("test"))
            .withColumn("ingested_at", F.current_timestamp()))


@pytest.fixture(scope="module")
def job(spark, tmp_path_factory):
    conf = make_conf(tmp_path_factory.mktemp("recommend") / "warehouse", *OVERRIDES)
    tables.overwrite(silver_lines(spark, SPEC), conf, "silver.order_lines")
    stamp = {"run_id": F.lit("test"), "computed_at": F.current_timestamp()}
    tables.overwrite(sample.inventory(spark, SPEC).withColumns(stamp), conf, "silver.inventory")
    truth = sample.truth_tables(spark, SPEC)["customers"]
    segments = truth.select("customer_id", F.col("group").alias("segment_name"),
                            F.dense_rank().over(Window.orderBy("group"))
                            .alias("segment_id"))
    # the segment job's other columns (distance, profile features) are not read here: null
    schema = tables.schema("gold.customer_segments")
    segments = segments.select(*[F.col(f.name).cast(f.dataType) if f.name in segments.columns
                                 else F.lit(None).cast(f.dataType).alias(f.name) for f in schema.fields])
    tables.overwrite(segments.fillna({"run_id": "test"}).withColumn("computed_at", F.current_timestamp()),
                     conf, "gold.customer_segments")
    first = recommend.run(spark, conf)
    recs = tables.read_table(spark, conf, "gold.recommendations").cache()
    metrics = tables.read_table(spark, conf, "gold.recommendation_metrics").cache()
    recs.count(), metrics.count()
    return conf, first, recs, metrics


def test_als_beats_best_sellers_twice_on_planted_tastes(job):
    conf, summary, _, metrics = job
    assert conf["recommend"]["evaluation"]["exclude_purchased"]   # new SKUs only, as the output
    test = {r.model: r for r in metrics.filter("split = 'test'").collect()}
    assert set(test) == {"als", "popularity"} and test["als"].n_users == test["popularity"].n_users > 50
    assert test["als"].precision >= 2 * test["popularity"].precision, (test["als"], test["popularity"])
    assert test["als"].ndcg > test["popularity"].ndcg
    assert summary["metrics"]["test_precision_at_10_als"] == pytest.approx(test["als"].precision)


def test_no_already_bought_or_out_of_stock_sku_is_recommended(spark, job):
    conf, _, recs, _ = job
    lines = tables.read_table(spark, conf, "silver.order_lines")
    bought = recommend.interactions(lines).select("customer_id", "sku")
    assert recs.join(bought, ["customer_id", "sku"]).count() == 0
    oos = tables.read_table(spark, conf, "silver.inventory").filter("on_hand <= 0").select("sku")
    assert oos.count() >= 1 and recs.join(oos, "sku").count() == 0
    # every identified customer gets a list, ranks 1..n without gaps, at most top_n
    per = recs.groupBy("customer_id").agg(F.count("*").alias("n"), F.max("rank").alias("top"),
                                          F.countDistinct("sku").alias("skus"))
    assert per.filter("n != top OR n != skus OR n > 10").count() == 0
    customers = lines.filter("NOT is_guest").select("customer_id").distinct()
    assert customers.join(per, "customer_id", "left_anti").count() == 0


def test_fallback_source_labels(spark, job):
    conf, _, recs, _ = job
    lines = tables.read_table(spark, conf, "silver.order_lines")
    n_items = recommend.interactions(lines).groupBy("customer_id").count()
    sources = recs.join(n_items, "customer_id", "left").select(
        "source", (F.coalesce("count", F.lit(0)) >= 2).alias("scorable")).distinct()
    got = {(r.source, r.scorable) for r in sources.collect()}
    assert ("als", True) in got and ("segment_popular", False) in got
    assert got <= {("als", True), ("segment_popular", False), ("popular", False)}


def test_rerun_replaces_output_with_the_same_answer(spark, job):
    conf, first, recs, metrics = job
    second = recommend.run(spark, conf)
    assert second["run_id"] != first["run_id"]
    again = tables.read_table(spark, conf, "gold.recommendations")
    assert again.select("run_id").distinct().collect()[0][0] == second["run_id"]
    cols = ["customer_id", "rank", "sku", "source"]
    assertDataFrameEqual(again.select(*cols, F.round("score", 4).alias("score")),
                         recs.select(*cols, F.round("score", 4).alias("score")))
    again_m = tables.read_table(spark, conf, "gold.recommendation_metrics").drop("run_id", "computed_at")
    assertDataFrameEqual(again_m, metrics.drop("run_id", "computed_at"), rtol=1e-6)


def test_bad_grid_stops_the_job(spark, tmp_path):
    with pytest.raises(ConfigError, match=r"--set: recommend.grid.rank needs at least 1 value\(s\), got \[\]"):
        make_conf(tmp_path / "warehouse", "recommend.grid.rank=[]")
