"""Benchmark: shopsense customer features + MLlib KMeans against scikit-learn's KMeans on the same
standardised features, in one run, on one machine.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/bench_segment.py --customers 1000000

Steps (only the ones marked [timed] are timed):
  1. synthetic order lines for N customers (four behaviour groups), written as silver.
  2. [timed] shopsense features: silver.order_lines -> customer features (Spark built-ins),
     materialised to parquet.
  3. [timed] shopsense KMeans: the segment job's MLlib Pipeline (log1p, assemble, standardise,
     KMeans with fixed k) fitted on the features.
  4. The standardised feature matrix the Pipeline produced is brought to numpy.
  5. [timed] scikit-learn KMeans (k-means++, one init, same k and iteration cap) on that matrix.
Prints the times, the ratios, both models' mean squared distance to the centre and the agreement
(adjusted Rand index) of the two labelings.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pandas as pd
from pyspark.ml import Pipeline
from pyspark.ml.functions import vector_to_array
from pyspark.sql import functions as F

from shopsense.core import columns as C
from shopsense.customers import features as FT
from shopsense.customers import segments as S
from shopsense.core import tables
from shopsense.core.config import conf_dir, load_conf
from shopsense.core.session import build_session


def synthetic_silver(spark, n_customers: int, days: int, seed: int):
    """Order lines in the silver.order_lines shape, built directly in Spark (the planted-group
    sample generator is too slow for millions of customers on a small machine): four customer
    groups with different order rates and recency, 1-3 lines per order, 3% returned lines."""
    start = F.lit("2023-01-01").cast("date")
    group = (F.rand(seed) * 4).cast("int")
    mean_orders = F.element_at(F.array(*[F.lit(v) for v in (0.3, 0.8, 2.0, 4.0)]), F.col("g") + 1)
    last_day = F.element_at(F.array(*[F.lit(v) for v in (days, days, days // 2, days)]), F.col("g") + 1)
    customers = (spark.range(n_customers)
                 .withColumn("g", group)
                 .withColumn("n_orders", (1 + F.floor(-F.log(1 - F.rand(seed + 1)) * mean_orders)).cast("int"))
                 .withColumn("last_day", last_day))
    orders = (customers
              .select("id", "last_day", F.explode(F.sequence(F.lit(1), F.col("n_orders"))).alias("o"))
              .withColumn("day", F.floor(F.rand(seed + 2) * F.col("last_day")).cast("int"))
              .withColumn("n_lines", (1 + F.floor(F.rand(seed + 3) * 3)).cast("int")))
    lines = (orders
             .select("id", "o", "day", F.explode(F.sequence(F.lit(1), F.col("n_lines"))).alias("l"))
             .withColumn("qty", (1 + F.floor(F.rand(seed + 4) * 6)).cast("double"))
             .withColumn("price", F.round(1 + F.rand(seed + 5) * 20, 2))
             .withColumn("ret", F.rand(seed + 6) < 0.03)
             .withColumn("sku_n", F.floor(F.pow(F.rand(seed + 7), 2) * 2000).cast("int")))
    sale_id = F.concat_ws("-", F.col("id"), F.col("o"))
    return (lines
            .withColumn("qty", F.when(F.col("ret"), -F.col("qty")).otherwise(F.col("qty")))
            .withColumn("day", F.when(F.col("ret"), F.least(F.col("day") + 3, F.lit(days - 1)))
                        .otherwise(F.col("day")))
            .select(
                F.concat_ws("|", sale_id, F.col("l"), F.col("ret")).alias(C.LINE_ID),
                F.when(F.col("ret"), F.concat(F.lit("C"), sale_id)).otherwise(sale_id).alias(C.ORDER_ID),
                F.concat(F.lit("U"), F.col("id").cast("string")).alias(C.CUSTOMER_ID),
                F.lit(False).alias(C.IS_GUEST),
                F.concat(F.lit("S"), F.col("sku_n").cast("string")).alias(C.SKU),
                F.concat(F.lit("CAT"), (F.col("sku_n") % 8).cast("string")).alias(C.CATEGORY),
                F.col("qty").alias(C.QUANTITY), F.col("price").alias(C.UNIT_PRICE),
                (F.col("qty") * F.col("price")).alias(C.REVENUE),
                F.date_add(start, F.col("day")).alias(C.ORDER_DATE),
                F.when(F.col("ret"), F.lit(C.LINE_RETURN)).otherwise(F.lit(C.LINE_SALE)).alias(C.LINE_TYPE),
                F.lit(True).alias(C.IS_PRODUCT), F.lit(None).cast("string").alias(C.PRODUCT_NAME),
                F.lit("UK").alias(C.COUNTRY),
                F.date_add(start, F.col("day")).cast("timestamp").alias(C.ORDERED_AT),
                F.lit("bench").alias(C.SOURCE_FILE), F.lit("bench").alias(C.RUN_ID),
                F.current_timestamp().alias(C.INGESTED_AT)))


def timed(label, fn):
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    print(f"  {label:<48} {seconds:8.1f} s", flush=True)
    return out, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365, help="days of order history to generate")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-iter", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args(argv)

    from sklearn.cluster import KMeans as SkKMeans

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-segment-")
    conf = load_conf([conf_dir() / "local.yaml"],
                     [f"warehouse={workdir}/warehouse", "spark.progress_bar=false"])
    spark = build_session(conf)
    cores = spark.sparkContext.defaultParallelism
    print(f"bench_segment: {args.customers:,} customers, {args.days} days, k={args.k}, "
          f"max_iter={args.max_iter}, Spark local with {cores} cores, "
          f"{os.cpu_count()} CPUs on the machine")

    timed("generate order lines -> silver (not compared)",
          lambda: tables.overwrite(synthetic_silver(spark, args.customers, args.days, args.seed),
                                   conf, "silver.order_lines"))
    silver = tables.read_table(spark, conf, "silver.order_lines")
    n_lines = silver.count()
    as_of = silver.agg(F.max("order_date")).first()[0]
    print(f"  silver.order_lines: {n_lines:,} lines, as of {as_of}")

    feat_path = f"{workdir}/features"
    _, feat_s = timed("[shopsense] features (Spark)",
                      lambda: FT.customer_features(silver, as_of).write.mode("overwrite")
                      .parquet(feat_path))
    feats = spark.read.parquet(feat_path).filter(F.col(FT.HAS_ORDERS)).cache()
    n_customers = feats.count()

    params = S.SegmentParams.from_conf(conf)
    pipeline = Pipeline(stages=[*S.preprocessing_stages(params.features, params.log_features),
                                S.kmeans(args.k, args.seed, args.max_iter)])
    model, kmeans_s = timed("[shopsense] log + standardise + KMeans (MLlib)",
                            lambda: pipeline.fit(feats))
    spark_km = model.stages[-1]
    spark_iters = spark_km.summary.numIter

    scored = model.transform(feats).select(
        vector_to_array(S.VECTOR).alias("x"), F.col(S.CLUSTER)).toPandas()
    X = np.vstack(scored["x"].to_numpy())
    spark_labels = scored[S.CLUSTER].to_numpy()
    spark_centres = np.array(spark_km.clusterCenters())
    spark_msd = float(((X - spark_centres[spark_labels]) ** 2).sum(axis=1).mean())

    sk, sk_s = timed("[scikit-learn] KMeans on the same matrix",
                     lambda: SkKMeans(n_clusters=args.k, init="k-means++", n_init=1,
                                      max_iter=args.max_iter, random_state=args.seed,
                                      algorithm="lloyd").fit(X))
    sk_msd = float(sk.inertia_ / len(X))
    agreement = S.adjusted_rand_index_from_table(pd.crosstab(spark_labels, sk.labels_))

    print(f"\ncustomers clustered: {n_customers:,} ({X.shape[1]} features); order lines: {n_lines:,}")
    print(f"iterations: MLlib {spark_iters}, scikit-learn {sk.n_iter_}")
    print(f"mean squared distance to centre: MLlib {spark_msd:.4f}, scikit-learn {sk_msd:.4f}")
    print(f"agreement of the two labelings (ARI): {agreement:.3f}")
    print(f"time ratio, shopsense features + KMeans / scikit-learn KMeans: "
          f"{(feat_s + kmeans_s) / sk_s:.1f}x  ({feat_s + kmeans_s:.1f} s / {sk_s:.1f} s)")
    print(f"time ratio, MLlib KMeans step / scikit-learn KMeans:          "
          f"{kmeans_s / sk_s:.1f}x  ({kmeans_s:.1f} s / {sk_s:.1f} s)")
    spark.stop()
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
