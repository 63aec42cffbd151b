"""Deterministic sample data with planted structure: order lines, a catalogue, an inventory
snapshot, and the truth that later jobs must recover.

Everything is built in Spark from built-in functions, so the generator scales to tens of millions
of order lines without collecting anything that grows with the data. Randomness comes from hashes
of (seed, salt, keys) instead of ``F.rand()``: the same :class:`SampleSpec` gives the same rows
whatever the partitioning, the number of cores or the order in which tasks run.

Planted structure (see the ``truth/`` tables written by :func:`generate`):

* **Customer groups** -- champions, loyal, at_risk and new differ by about an order of magnitude
  in recency, frequency and/or spend, so KMeans on log-standardised RFM recovers them.
* **Product pairs** -- ``n_pairs`` "companion" SKUs are only ever sold through their pair: an
  order that contains the antecedent gets one line of the companion with probability
  ``confidence``, so P(companion in basket | antecedent in basket) = confidence in expectation.
* **SKU demand** -- per-SKU linear trend on quantity, fewer orders at weekends, a Q4 peak,
  two-week promotions (quantity x1.8, price -20%) on eligible SKUs, and intermittent slow movers.
* **Customer journeys** -- sessions of views, add-to-cart and purchases (``events/``) with
  planted step probabilities per customer group, P(add_to_cart | view) and
  P(purchase | add_to_cart); see :mod:`shopsense.ingest.sample_events` (purchase events are not
  tied to order lines; events and orders share the customer ids).
* **Latent tastes** -- non-companion SKUs fall into ``n_tastes`` blocks; a customer takes about
  95% of its lines from its own block (Zipf-like within it), the rest from global popularity.
  Sharp on purpose: with 75% the lines outside the block were most of what a customer bought
  *new* (its block's few SKUs are soon all bought), so recommending the customer's taste beat
  best-sellers by only 1.8x once already-bought SKUs are excluded. A SKU's list price depends on
  its position within its block, not on the block, so every taste spends alike and tastes do not
  leak into the RFM segments.

Time: ``ordered_at`` is built from epoch seconds with day boundaries in UTC, so the stored instants
do not depend on the session time zone. Calendar effects (weekday, month) are computed for UTC
days; a session in UTC (as the tests use) sees them on the intended local days.

This module is the generator's public entry point: the catalogue, inventory and truth tables,
:func:`generate` and the `sample` job. :class:`SampleSpec`, the planted parameters and the
validation are in :mod:`shopsense.ingest.sample_spec`; the column helpers, SKUs, customers and
:func:`order_lines` in :mod:`shopsense.ingest.sample_orders`. The names in ``__all__`` are
importable from here.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core.columns import (
    AS_OF,
    CATEGORY,
    CUSTOMER_ID,
    LEAD_TIME_DAYS,
    LEAD_TIME_STD_DAYS,
    MIN_ORDER_QTY,
    ON_HAND,
    ON_ORDER,
    PACK_SIZE,
    PRODUCT_NAME,
    SKU,
    UNIT_COST,
    UNIT_PRICE,
)
from shopsense.ingest.sample_events import events, events_truth
from shopsense.ingest.sample_orders import (
    ORDERS_SCHEMA,
    _customers,
    _promo_start,
    _promo_windows,
    _skus,
    _u,
    _with_schema,
    order_lines,
)
from shopsense.ingest.sample_spec import (
    _MONTH_FACTOR,
    _PROMO_DISCOUNT,
    _PROMO_LIFT,
    _TASTE_SHARE,
    _WEEKDAY_FACTOR,
    GROUPS,
    SampleSpec,
    _layout,
    _p_intermittent,
    _pairs,
    _validate,
    expected_counts,
)

__all__ = [
    "SampleSpec",
    "GROUPS",
    "ORDERS_SCHEMA",
    "generate",
    "order_lines",
    "events",
    "catalogue",
    "inventory",
    "truth_tables",
    "expected_counts",
]


# --- catalogue, inventory, truth -------------------------------------------------------------------

CATALOGUE_SCHEMA = T.StructType([
    T.StructField(SKU, T.StringType(), False),
    T.StructField(PRODUCT_NAME, T.StringType(), False),
    T.StructField(CATEGORY, T.StringType(), False),
    T.StructField(UNIT_PRICE, T.DoubleType(), False),
    T.StructField(UNIT_COST, T.DoubleType(), False),
    T.StructField(LEAD_TIME_DAYS, T.IntegerType(), False),
    T.StructField(LEAD_TIME_STD_DAYS, T.DoubleType(), False),
    T.StructField(PACK_SIZE, T.IntegerType(), False),
    T.StructField(MIN_ORDER_QTY, T.IntegerType(), False),
])

INVENTORY_SCHEMA = T.StructType([
    T.StructField(SKU, T.StringType(), False),
    T.StructField(ON_HAND, T.IntegerType(), False),
    T.StructField(ON_ORDER, T.IntegerType(), False),
    T.StructField(AS_OF, T.DateType(), False),
])


def catalogue(spark: SparkSession, spec: SampleSpec) -> DataFrame:
    """The product catalogue: one row per SKU with list price, cost, lead time and pack sizes."""
    _validate(spec)
    df = _skus(spark, spec).withColumn(UNIT_PRICE, F.col("base_price"))
    return _with_schema(df, CATALOGUE_SCHEMA)


def inventory(spark: SparkSession, spec: SampleSpec) -> DataFrame:
    """Inventory snapshot as of the last day: about 2-8 weeks of cover, a few SKUs out of stock
    (always at least the least popular regular SKU), about 30% with stock on order."""
    _validate(spec)
    seed = spec.seed
    rank = F.col("rank")
    last = date.fromisoformat(spec.start_date) + timedelta(days=spec.n_days - 1)
    out_of_stock = (_u(seed, "oos", rank) < 0.04) | (rank == _layout(spec)["n_smooth"] - 1)
    cover = 14 + 42 * _u(seed, "cover", rank)
    on_hand = F.when(out_of_stock, F.lit(0)).otherwise(F.ceil(F.col("base_rate") * cover))
    on_order = F.when(_u(seed, "on_order", rank) < 0.30,
                      F.col(PACK_SIZE) * F.ceil(F.col("base_rate") * 14 / F.col(PACK_SIZE) + 0.5)
                      ).otherwise(F.lit(0))
    df = (_skus(spark, spec)
          .withColumn(ON_HAND, on_hand.cast("int"))
          .withColumn(ON_ORDER, on_order.cast("int"))
          .withColumn(AS_OF, F.lit(last)))
    return _with_schema(df, INVENTORY_SCHEMA)


def truth_tables(spark: SparkSession, spec: SampleSpec) -> dict[str, DataFrame]:
    """The planted truth, lazily: ``customers`` (customer_id, group, taste), ``pairs``
    (antecedent, consequent, confidence), ``skus`` (sku, taste, pattern, base_rate, trend,
    promo_eligible) and ``promotions`` (sku, start_date, end_date, lift).

    ``base_rate`` is the analytic expected units per day averaged over the period, before trend,
    calendar and promotions (approximate). ``trend`` is the relative change of the mean quantity
    from the first to the last day. Promotion dates are inclusive."""
    _validate(spec)
    skus = _skus(spark, spec)
    customers = _customers(spark, spec).select(
        CUSTOMER_ID, F.col("group_name").alias("group"), "taste")
    pair_rows = spark.createDataFrame(
        [(a, b, float(c)) for _, a, b, c in _pairs(spec)],
        "a_rank int, b_rank int, confidence double")
    sku_of = skus.select("rank", SKU)
    pairs = (pair_rows
             .join(sku_of.withColumnRenamed("rank", "a_rank").withColumnRenamed(SKU, "antecedent"), "a_rank")
             .join(sku_of.withColumnRenamed("rank", "b_rank").withColumnRenamed(SKU, "consequent"), "b_rank")
             .select("antecedent", "consequent", "confidence"))
    n_windows, length = _promo_windows(spec)
    start = date.fromisoformat(spec.start_date)
    first = _promo_start(spec, F.col("rank"), F.col("k"))
    promotions = (skus.where("promo_eligible")
                  .crossJoin(spark.range(n_windows).select(F.col("id").cast("int").alias("k")))
                  .select(SKU,
                          F.date_add(F.lit(start), first).alias("start_date"),
                          F.date_add(F.lit(start), first + (length - 1)).alias("end_date"),
                          F.lit(_PROMO_LIFT).alias("lift")))
    sku_truth = skus.select(SKU, "taste", "pattern", "base_rate", "trend", "promo_eligible")
    return {"customers": customers, "pairs": pairs, "skus": sku_truth, "promotions": promotions}


def _truth_json(spark: SparkSession, spec: SampleSpec) -> dict:
    counts = {r["group_name"]: r["n"] for r in
              _customers(spark, spec).groupBy("group_name").agg(F.count("*").alias("n")).collect()}
    return {
        "spec": asdict(spec),
        "groups": [g.name for g in GROUPS],
        "group_counts": {g.name: int(counts.get(g.name, 0)) for g in GROUPS},
        "group_parameters": {g.name: {"customer_share": g.share, "orders_per_day": g.rate,
                                      "lines_per_order": g.lines, "quantity_mean": g.qty}
                             for g in GROUPS},
        "taste_share": _TASTE_SHARE,
        "intermittent_line_probability": _p_intermittent(spec),
        "promo_lift": _PROMO_LIFT,
        "promo_discount": _PROMO_DISCOUNT,
        "weekday_factor_mon_to_sun": list(_WEEKDAY_FACTOR),
        "month_factor": {str(k): v for k, v in _MONTH_FACTOR.items()},
        "expected": expected_counts(spec),
        "events": events_truth(),
        "time_zone": "UTC",
    }


def generate(spark: SparkSession, spec: SampleSpec, out_dir: str, fmt: str = "parquet",
             with_events: bool = True) -> dict:
    """Write the sample under ``out_dir`` (a local path): ``orders/`` (in ``fmt``, "parquet" or
    "csv" with a header), ``catalogue/``, ``inventory/``, ``events/`` (unless ``with_events`` is
    false) and ``truth/{customers,pairs,skus,promotions}`` as Parquet, and ``truth/truth.json``.
    Existing output is replaced.

    Returns ``{"rows": {...}, "paths": {...}, "seconds": float, "events_seconds": float}``.
    Raises ValueError for an unknown ``fmt`` or an invalid spec."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    _validate(spec)
    t0 = time.perf_counter()
    paths = {name: os.path.join(out_dir, name) for name in ("orders", "catalogue", "inventory")}
    truth_dir = os.path.join(out_dir, "truth")

    writer = order_lines(spark, spec).write.mode("overwrite")
    if fmt == "csv":
        writer.option("header", True).csv(paths["orders"])
    else:
        writer.parquet(paths["orders"])
    catalogue(spark, spec).coalesce(1).write.mode("overwrite").parquet(paths["catalogue"])
    inventory(spark, spec).coalesce(1).write.mode("overwrite").parquet(paths["inventory"])
    t_events = time.perf_counter()
    if with_events:
        paths["events"] = os.path.join(out_dir, "events")
        events(spark, spec).write.mode("overwrite").parquet(paths["events"])
    events_seconds = time.perf_counter() - t_events
    for name, df in truth_tables(spark, spec).items():
        paths[f"truth/{name}"] = os.path.join(truth_dir, name)
        df.coalesce(1).write.mode("overwrite").parquet(paths[f"truth/{name}"])

    rows = {}
    for name, path in paths.items():
        reader = spark.read.option("header", True) if (name == "orders" and fmt == "csv") else spark.read
        rows[name] = (reader.csv(path) if (name == "orders" and fmt == "csv") else reader.parquet(path)).count()

    info = _truth_json(spark, spec)
    info["rows"] = rows
    os.makedirs(truth_dir, exist_ok=True)
    paths["truth.json"] = os.path.join(truth_dir, "truth.json")
    with open(paths["truth.json"], "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2, sort_keys=True)
    return {"rows": rows, "paths": paths, "seconds": round(time.perf_counter() - t0, 2),
            "events_seconds": round(events_seconds, 2), "format": fmt}


# --- the `sample` job --------------------------------------------------------------------------

def spec_from_conf(conf) -> SampleSpec:
    """The SampleSpec conf's ``sample`` section describes."""
    fields = SampleSpec.__dataclass_fields__
    return SampleSpec(**{k: v for k, v in conf.sample.model_dump().items() if k in fields})


def run(spark: SparkSession, conf) -> dict:
    """Generate sample raw files into ``sample.out_dir`` (the `sample` job). The `sample` source
    in conf/base.yaml reads them from data/sample/: move both together."""
    from shopsense.core.config import resolve_path
    from shopsense.core.runs import JobRun

    spec = spec_from_conf(conf)
    out_dir = resolve_path(conf.sample.out_dir)
    with JobRun(spark, conf, "sample", {**asdict(spec), "out_dir": out_dir}) as job:
        result = generate(spark, spec, out_dir)
        job.rows_out = result["rows"]["orders"]
        for name, n in result["rows"].items():
            job.metric(f"rows_{name.replace('/', '_')}", n)
        job.metric("seconds", result["seconds"], key=True)
        job.metric("events_seconds", result["events_seconds"])
        job.note(f"sample raw files written to {out_dir}")
    return job.summary()
