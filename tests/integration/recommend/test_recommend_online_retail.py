"""The recommend job on the real Online Retail export with a time split and a tiny grid."""

import pytest
from pyspark.sql import Window
from pyspark.sql import functions as F

from shopsense.recommend import als as recommend
from shopsense.core import tables

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


def test_recommend_on_online_retail_beats_best_sellers(spark, retail_conf_factory):
    conf = retail_conf_factory("recommend.grid.rank=[16]", "recommend.grid.reg_param=[0.1]",
                     "recommend.grid.alpha=[10.0]", "recommend.als.max_iter=5")
    p = conf["recommend"]
    assert p["exclude_purchased"] and not tables.table_exists(spark, conf, "gold.customer_segments")
    summary = recommend.run(spark, conf)
    metrics = {r.model: r for r in tables.read_table(spark, conf, "gold.recommendation_metrics")
               .filter("split = 'test'").collect()}
    assert metrics["als"].n_users == metrics["popularity"].n_users > 500
    assert metrics["als"].ndcg > metrics["popularity"].ndcg
    recs = tables.read_table(spark, conf, "gold.recommendations")
    assert summary["rows_out"] == recs.count() > 0

    # What each identified customer bought up to the as-of (the export's last day, no as_of is
    # set): SKUs with a positive net quantity (a SKU bought and fully returned is not bought).
    lines = tables.read_table(spark, conf, "silver.order_lines").filter("is_product AND NOT is_guest")
    net = lines.groupBy("customer_id", "sku").agg(F.sum("quantity").alias("net"))
    bought = net.filter("net > 0").select("customer_id", "sku")
    customers = (net.groupBy("customer_id").agg(F.count_if(F.col("net") > 0).alias("n_bought"))
                 .withColumn("scored", F.col("n_bought") >= p["min_items"]))
    per = (recs.groupBy("customer_id")
           .agg(F.count("*").alias("n"), F.countDistinct("sku").alias("skus"),
                F.min("rank").alias("first"), F.max("rank").alias("last"),
                F.collect_set("source").alias("sources"))
           .join(customers, "customer_id", "full"))
    # every customer gets exactly top_n distinct SKUs ranked 1..top_n
    assert per.filter(F.col("n").isNull() | F.col("n_bought").isNull()).count() == 0
    assert per.filter(f"n != {p['top_n']} OR skus != n OR first != 1 OR last != n").count() == 0
    # ALS scores the customers with at least min_items SKUs bought, the others get best-sellers
    # (overall ones: there is no segments table)
    by_kind = {(r["scored"], tuple(r["sources"])): r["count"]
               for r in per.groupBy("scored", "sources").count().collect()}
    print("customers by (scored, sources):", by_kind)
    assert set(by_kind) == {(True, ("als",)), (False, ("popular",))}
    # nothing already bought is recommended
    assert recs.join(bought, ["customer_id", "sku"]).count() == 0
    # the best-sellers are the same list for every fallback customer, less what each bought
    fallback = recs.filter("source = 'popular'")
    order = fallback.groupBy("sku").agg(F.max("score").alias("score"))
    ranked = order.withColumn("pos", F.row_number().over(Window.orderBy(F.desc("score"), "sku")))
    inversions = (fallback.join(ranked, ["sku"]).withColumn(
        "prev", F.lag("pos").over(Window.partitionBy("customer_id").orderBy("rank")))
        .filter(F.col("prev") > F.col("pos")).count())
    assert inversions == 0
