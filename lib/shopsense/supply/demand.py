"""Demand: silver.order_lines -> gold.sku_daily_demand, net units per SKU per day.

* Products only (``is_product``); guest lines count (a guest sale is demand).
* ``units`` is the net quantity of the day: sales minus returns and cancellations booked that
  day (both carry negative quantities in silver). It can be negative on a day when returns
  exceed sales; the forecast models clip such days at 0.
* Zero-filled: every SKU has one row per day from its first sale (first ``sale`` line) to the
  as-of date, with ``units`` 0 on days without lines. Lines after the as-of date are left out.
* Price and promotion, where known: ``avg_price`` is the volume-weighted average unit price of
  the day's sale lines (sale revenue / sale quantity; null on days without a sale).
  ``usual_price`` is the SKU's median ``avg_price`` over its sale days up to the as-of date.
  ``promo`` is true when the day's ``avg_price`` is at least ``demand.promo_discount`` (default
  10 %) below the usual price, false when it is not, null when the day had no sale (price
  unknown). A 10 % cut is well beyond the rounding and quantity-tier noise of ordinary prices.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.core.config import Conf
from shopsense.core.runs import JobRun

UNITS = "units"
SALE_UNITS = "sale_units"
RETURN_UNITS = "return_units"
N_ORDERS = "n_orders"
AVG_PRICE = "avg_price"
USUAL_PRICE = "usual_price"
PROMO = "promo"
FIRST_SALE = "first_sale"

SKU_DAILY_DEMAND = T.StructType([
    T.StructField(C.SKU, T.StringType(), False),
    T.StructField(C.DATE, T.DateType(), False),
    T.StructField(UNITS, T.DoubleType(), False),        # net: sales - returns - cancellations
    T.StructField(SALE_UNITS, T.DoubleType(), False),
    T.StructField(RETURN_UNITS, T.DoubleType(), False),  # returns + cancellations, as a positive number
    T.StructField(N_ORDERS, T.LongType(), False),
    T.StructField(AVG_PRICE, T.DoubleType(), True),
    T.StructField(USUAL_PRICE, T.DoubleType(), True),
    T.StructField(PROMO, T.BooleanType(), True),
    *tables.RUN_COLUMNS,
])


class DemandError(RuntimeError):
    """The order lines cannot give a demand table (e.g. none at all, or an invalid as-of)."""


def filter_product_lines(lines: DataFrame, as_of: dt.date) -> DataFrame:
    """Product lines (guests included) dated on or before ``as_of``."""
    return lines.filter(F.col(C.IS_PRODUCT) & (F.col(C.ORDER_DATE) <= F.lit(as_of)))


def daily_totals(lines: DataFrame) -> DataFrame:
    """One row per SKU and day with lines: net, sale and returned units, orders, average price."""
    is_sale = F.col(C.LINE_TYPE) == C.LINE_SALE
    sale_qty = F.when(is_sale, F.col(C.QUANTITY))
    return (lines.groupBy(C.SKU, F.col(C.ORDER_DATE).alias(C.DATE))
            .agg(F.sum(C.QUANTITY).alias(UNITS),
                 F.coalesce(F.sum(sale_qty), F.lit(0.0)).alias(SALE_UNITS),
                 F.coalesce(F.sum(F.when(~is_sale, -F.col(C.QUANTITY))), F.lit(0.0)).alias(RETURN_UNITS),
                 F.count_distinct(F.when(is_sale, F.col(C.ORDER_ID))).alias(N_ORDERS),
                 F.try_divide(F.sum(F.when(is_sale, F.col(C.REVENUE))), F.sum(sale_qty)).alias(AVG_PRICE)))


def sku_calendar(daily: DataFrame, as_of: dt.date) -> DataFrame:
    """(sku, date) for every day from the SKU's first sale to ``as_of``; SKUs that never sold
    (only returns) have no rows."""
    first = (daily.filter(F.col(SALE_UNITS) > 0).groupBy(C.SKU)
             .agg(F.min(C.DATE).alias(FIRST_SALE)))
    return first.select(C.SKU, F.explode(F.sequence(F.col(FIRST_SALE), F.lit(as_of))).alias(C.DATE))


def is_promo(avg_price: Column, usual_price: Column, discount: float) -> Column:
    """True when the day's price is at least ``discount`` (a fraction) below the usual price;
    null when either price is unknown."""
    return avg_price <= usual_price * (1.0 - discount)


def with_usual_price_and_promo(df: DataFrame, discount: float) -> DataFrame:
    """Add ``usual_price`` (the SKU's median daily average price) and the ``promo`` flag."""
    usual = df.groupBy(C.SKU).agg(F.median(AVG_PRICE).alias(USUAL_PRICE))
    return (df.join(usual, C.SKU, "left")
            .withColumn(PROMO, is_promo(F.col(AVG_PRICE), F.col(USUAL_PRICE), discount)))


def build_daily_demand(lines: DataFrame, as_of: dt.date, promo_discount: float = 0.10) -> DataFrame:
    """The zero-filled daily demand of every product SKU (see the module docstring), without
    the run columns. ``lines`` follows the silver.order_lines schema."""
    if not 0.0 <= promo_discount < 1.0:
        raise ValueError(f"promo_discount must be in [0, 1), got {promo_discount!r}")
    daily = daily_totals(filter_product_lines(lines, as_of))
    filled = (sku_calendar(daily, as_of).join(daily, [C.SKU, C.DATE], "left")
              .fillna(0.0, subset=[UNITS, SALE_UNITS, RETURN_UNITS])
              .fillna(0, subset=[N_ORDERS]))
    return with_usual_price_and_promo(filled, promo_discount)


def run(spark: SparkSession, conf: Conf) -> dict:
    """Build gold.sku_daily_demand from silver.order_lines (whole-table replace).
    Returns the run summary; metrics: skus, days, promo_days, as_of (yyyymmdd)."""
    with JobRun(spark, conf, "demand", conf.demand) as run:
        lines = run.read("silver.order_lines")
        as_of = run.as_of()
        demand = build_daily_demand(lines, as_of, conf.demand.promo_discount)
        run.rows_out = run.write(demand, "gold.sku_daily_demand")
        run.rows_in = lines.count()
        stats = (run.read_output("gold.sku_daily_demand")
                 .agg(F.count_distinct(C.SKU).alias("skus"), F.count_if(F.col(PROMO)).alias("promo_days"))
                 .first())
        run.metric("skus", int(stats["skus"]), key=True)
        run.metric("promo_days", int(stats["promo_days"]))
        run.metric("as_of", int(as_of.strftime("%Y%m%d")))
    return run.summary()
