"""Customer features: one row per customer as of a date, from silver.order_lines, in Spark
built-ins only.

What counts (see docs/segment.md for the full table contract):

* Guest lines (``is_guest``, no customer id) are left out: they belong to nobody.
* Non-product lines (``is_product`` false: postage, fees, bank charges) are left out: they are not
  what the customer bought, and would inflate spend and basket size.
* Only lines ordered on or before ``as_of`` count, and, when ``features.window_days`` is set, only
  those of the last ``window_days`` days up to and including ``as_of``. A customer with no line in
  that window has no row (the run record counts how many customers that leaves out).
* A sale is a ``sale`` line; ``return`` and ``cancellation`` lines (negative quantity and revenue)
  are both "returns": they reduce the net revenue and raise the return rate.
* A customer whose lines in the window are all returns (the sale happened before the window or
  before the data starts) keeps a row with ``has_orders`` false, ``frequency`` 0, a negative
  ``monetary`` and null order-based features (recency, tenure, averages). The segment job gives
  such customers their own segment (``returns_only``) instead of clustering them.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.core.config import Conf
from shopsense.core.errors import require_columns
from shopsense.core.runs import JobRun

from shopsense.core.columns import (  # noqa: F401 - the feature names, used as FT.<NAME>
    HAS_ORDERS, FIRST_ORDER_DATE, LAST_ORDER_DATE, RECENCY_DAYS, FREQUENCY, MONETARY,
    SALES_REVENUE, RETURNED_REVENUE, TENURE_DAYS, AVG_ORDER_VALUE, ITEMS_PER_ORDER, RETURN_RATE,
    DISTINCT_SKUS, DISTINCT_CATEGORIES, MEAN_DAYS_BETWEEN_ORDERS, NUMERIC_FEATURES)

CUSTOMER_FEATURES = T.StructType([
    T.StructField(C.CUSTOMER_ID, T.StringType(), False),
    T.StructField(C.AS_OF, T.DateType(), False),
    T.StructField(HAS_ORDERS, T.BooleanType(), False),
    T.StructField(FIRST_ORDER_DATE, T.DateType(), True),
    T.StructField(LAST_ORDER_DATE, T.DateType(), True),
    T.StructField(RECENCY_DAYS, T.IntegerType(), True),
    T.StructField(FREQUENCY, T.LongType(), False),
    T.StructField(MONETARY, T.DoubleType(), False),
    T.StructField(SALES_REVENUE, T.DoubleType(), False),
    T.StructField(RETURNED_REVENUE, T.DoubleType(), False),
    T.StructField(TENURE_DAYS, T.IntegerType(), True),
    T.StructField(AVG_ORDER_VALUE, T.DoubleType(), True),
    T.StructField(ITEMS_PER_ORDER, T.DoubleType(), True),
    T.StructField(RETURN_RATE, T.DoubleType(), True),
    T.StructField(DISTINCT_SKUS, T.LongType(), False),
    T.StructField(DISTINCT_CATEGORIES, T.LongType(), True),
    T.StructField(MEAN_DAYS_BETWEEN_ORDERS, T.DoubleType(), True),
    *tables.RUN_COLUMNS,
])

REQUIRED_INPUT = (C.ORDER_ID, C.CUSTOMER_ID, C.IS_GUEST, C.SKU, C.CATEGORY, C.QUANTITY,
                  C.REVENUE, C.ORDER_DATE, C.LINE_TYPE, C.IS_PRODUCT)


class FeaturesError(ValueError):
    """The input cannot give customer features (missing columns, no order lines, bad dates)."""


# --------------------------------------------------------------------------------------------
# Transforms

def filter_customer_lines(order_lines: DataFrame) -> DataFrame:
    """Product lines of identified customers: guests and non-product lines removed."""
    return order_lines.filter(~F.col(C.IS_GUEST) & F.col(C.CUSTOMER_ID).isNotNull()
                              & F.col(C.IS_PRODUCT))


def filter_window(order_lines: DataFrame, as_of: dt.date, window_days: int | None) -> DataFrame:
    """Lines ordered on or before ``as_of``, and within the last ``window_days`` days of it
    (``as_of`` counts as one of them) when ``window_days`` is given."""
    keep = F.col(C.ORDER_DATE) <= F.lit(as_of)
    if window_days is not None:
        keep &= F.col(C.ORDER_DATE) > F.date_sub(F.lit(as_of), int(window_days))
    return order_lines.filter(keep)


def is_sale(line_type: str = C.LINE_TYPE) -> Column:
    """True on sale lines (false on returns and cancellations)."""
    return F.col(line_type) == F.lit(C.LINE_SALE)


def safe_ratio(numerator: Column, denominator: Column) -> Column:
    """numerator / denominator, null where the denominator is 0 or null."""
    return F.when(denominator > 0, numerator / denominator)


def aggregate_customers(lines: DataFrame) -> DataFrame:
    """One row per customer with the raw sums and counts the features are made of."""
    sale = is_sale()
    return lines.groupBy(C.CUSTOMER_ID).agg(
        F.min(F.when(sale, F.col(C.ORDER_DATE))).alias(FIRST_ORDER_DATE),
        F.max(F.when(sale, F.col(C.ORDER_DATE))).alias(LAST_ORDER_DATE),
        F.count_distinct(F.when(sale, F.col(C.ORDER_ID))).alias(FREQUENCY),
        F.sum(C.REVENUE).alias(MONETARY),
        F.coalesce(F.sum(F.when(sale, F.col(C.REVENUE))), F.lit(0.0)).alias(SALES_REVENUE),
        F.coalesce(F.sum(F.when(~sale, -F.col(C.REVENUE))), F.lit(0.0)).alias(RETURNED_REVENUE),
        F.sum(F.when(sale, F.col(C.QUANTITY))).alias("_units"),
        F.count_distinct(F.when(sale, F.col(C.SKU))).alias(DISTINCT_SKUS),
        F.count_distinct(F.when(sale, F.col(C.CATEGORY))).alias(DISTINCT_CATEGORIES),
        F.count(C.CATEGORY).alias("_category_lines"),
    )


def with_features(customers: DataFrame, as_of: dt.date) -> DataFrame:
    """Derive the features from the per-customer sums of :func:`aggregate_customers`."""
    as_of_col = F.lit(as_of)
    orders = F.col(FREQUENCY)
    has_orders = orders > 0
    return (
        customers
        .withColumn(C.AS_OF, as_of_col)
        .withColumn(HAS_ORDERS, has_orders)
        .withColumn(RECENCY_DAYS, F.datediff(as_of_col, F.col(LAST_ORDER_DATE)))
        .withColumn(TENURE_DAYS, F.datediff(as_of_col, F.col(FIRST_ORDER_DATE)))
        .withColumn(AVG_ORDER_VALUE, safe_ratio(F.col(SALES_REVENUE), orders))
        .withColumn(ITEMS_PER_ORDER, safe_ratio(F.col("_units"), orders))
        # Value share returned; capped at 1 because a return can refer to a sale made before
        # the window (or before the data starts). Null without sales.
        .withColumn(RETURN_RATE, F.when(F.col(SALES_REVENUE) > 0, F.least(
            F.lit(1.0), F.col(RETURNED_REVENUE) / F.col(SALES_REVENUE))))
        # Null when no line of the customer carries a category (the source has none).
        .withColumn(DISTINCT_CATEGORIES,
                    F.when(F.col("_category_lines") > 0, F.col(DISTINCT_CATEGORIES)))
        .withColumn(MEAN_DAYS_BETWEEN_ORDERS,
                    safe_ratio(F.datediff(F.col(LAST_ORDER_DATE), F.col(FIRST_ORDER_DATE))
                               .cast("double"), orders - 1))
        .select([f.name for f in CUSTOMER_FEATURES.fields if f.name not in (C.RUN_ID, C.COMPUTED_AT)])
    )


def customer_features(order_lines: DataFrame, as_of: dt.date,
                      window_days: int | None = None) -> DataFrame:
    """gold.customer_features (without run columns) from silver.order_lines rows: one row per
    identified customer with at least one product line in the window. Raises FeaturesError when
    a needed column is missing or ``window_days`` is not positive."""
    require_columns(order_lines, REQUIRED_INPUT, "order lines", FeaturesError)
    if window_days is not None and window_days < 1:
        raise FeaturesError(f"features.window_days must be a positive number of days or null, "
                            f"got {window_days}")
    return (order_lines
            .transform(filter_customer_lines)
            .transform(lambda df: filter_window(df, as_of, window_days))
            .transform(aggregate_customers)
            .transform(lambda df: with_features(df, as_of)))


# --------------------------------------------------------------------------------------------
# Job

def run(spark, conf: Conf) -> dict:
    """The features job: silver.order_lines -> gold.customer_features (whole-table replace).
    Returns the run summary; metrics: customers, returns_only_customers, customers_outside_window."""
    window_days = conf.features.window_days
    with JobRun(spark, conf, "features", conf.features) as run:
        lines = run.read("silver.order_lines")
        as_of = run.as_of()
        run.rows_out = run.write(customer_features(lines, as_of, window_days), "gold.customer_features")
        run.rows_in = lines.count()
        record_coverage(run, lines, as_of, window_days)
    return run.summary()


def record_coverage(run: JobRun, lines: DataFrame, as_of: dt.date, window_days: int | None) -> None:
    """Metrics and notes on who got a row: customers with only returns, customers whose lines
    all fall before the window."""
    written = run.read_output("gold.customer_features")
    counts = written.agg(F.count("*").alias("n"),
                         F.count_if(~F.col(HAS_ORDERS)).alias("returns_only")).first()
    in_history = (filter_customer_lines(lines).filter(F.col(C.ORDER_DATE) <= F.lit(as_of))
                  .select(C.CUSTOMER_ID).distinct().count())
    run.metric("customers", counts["n"], key=True)
    run.metric("returns_only_customers", counts["returns_only"])
    run.metric("customers_outside_window", in_history - int(counts["n"]))
    if counts["returns_only"]:
        run.note(f"{counts['returns_only']:,} customers have only returns in the window: "
                 f"kept with has_orders = false and null order-based features")
    if window_days is not None and in_history > counts["n"]:
        run.note(f"{in_history - counts['n']:,} customers with no order line in the last "
                 f"{window_days} days up to {as_of} have no row")
