"""A sample with planted segment migration: customers that move between behaviour states from one
calendar month to the next with known probabilities (a Markov chain), for the migration job's
recovery test (docs/migration.md).

The main generator (:mod:`shopsense.ingest.sample`) plants groups that keep their behaviour for
the whole period, which is what the segment job must recover; this one is separate so that every
test of the main sample keeps its data bit-identical. Each customer is in one state per month:

========== =============== ================= ==================
state      orders a month  lines per order   quantity per line
========== =============== ================= ==================
champions  8               1..7 (mean 4)     1..5 (mean 3)
loyal      3               1..3 (mean 2)     1..3 (mean 2)
occasional 1               1                 1
lapsed     0               -                 -
========== =============== ================= ==================

so over a one-month feature window the active states differ by a factor of about 3 in orders and
about 10 in spend, and a lapsed customer has no order at all. Orders fall on days 4..28 of their
month (in UTC), so a feature window of 28 days ending on any month end holds exactly that
month's orders. A customer joins (places a first order) in month 0 with probability
:data:`FIRST_MONTH_SHARE`, otherwise in a uniformly drawn later month; its state in the month it
joins is drawn from :data:`INITIAL` (never lapsed), and each month after from the row of
:data:`TRANSITIONS` of the month before. There are no guests and no returns.

As in the main generator, every draw is a hash of (seed, salt, keys): the same
:class:`MigrationSpec` gives the same rows whatever the partitioning.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core.columns import (CATEGORY, COUNTRY, CUSTOMER_ID, ORDER_ID, ORDERED_AT,
                                    PRODUCT_NAME, QUANTITY, SKU, UNIT_PRICE)
from shopsense.ingest.sample_orders import ORDERS_SCHEMA, _pick, _u, _with_schema

STATES = ("champions", "loyal", "occasional", "lapsed")
ORDERS_PER_MONTH = (8, 3, 1, 0)
MEAN_LINES = (4, 2, 1, 1)            # lines per order uniform on 1 .. 2 * mean - 1
MEAN_QTY = (3, 2, 1, 1)              # quantity per line uniform on 1 .. 2 * mean - 1
#: P(state next month | state this month), rows and columns in the order of STATES.
TRANSITIONS = (
    (0.70, 0.20, 0.05, 0.05),
    (0.10, 0.65, 0.15, 0.10),
    (0.05, 0.15, 0.60, 0.20),
    (0.05, 0.10, 0.25, 0.60),
)
#: P(state in the month a customer joins): a customer joins with an order, so never lapsed.
INITIAL = (0.15, 0.35, 0.50, 0.0)
FIRST_MONTH_SHARE = 0.6              # customers already buying in month 0
ORDER_DAYS = (4, 28)                 # orders fall on these days of the month (inclusive)
_N_SKUS = 50
_PRICE_RANGE = (1.0, 20.0)


@dataclass(frozen=True)
class MigrationSpec:
    """What to generate: ``n_customers`` over ``n_months`` calendar months from ``start_date``
    (the first day of a month)."""

    n_customers: int = 2000
    n_months: int = 8
    start_date: str = "2023-01-01"
    seed: int = 42

    def validate(self) -> None:
        """Raises ValueError naming every bad field."""
        problems = []
        try:
            if date.fromisoformat(self.start_date).day != 1:
                problems.append(f"start_date={self.start_date!r} (need the first day of a month)")
        except ValueError:
            problems.append(f"start_date={self.start_date!r} (need YYYY-MM-01)")
        if self.n_customers < 1:
            problems.append(f"n_customers={self.n_customers} (need >= 1)")
        if self.n_months < 2:
            problems.append(f"n_months={self.n_months} (need >= 2: a transition needs two months)")
        if problems:
            raise ValueError("invalid MigrationSpec: " + "; ".join(problems))

    def month_end(self, month: int) -> date:
        """The last day of month ``month`` (0-based) of the sample."""
        start = date.fromisoformat(self.start_date)
        year, m = divmod(start.month - 1 + month, 12)
        year += start.year
        return date(year, m + 1, calendar.monthrange(year, m + 1)[1])


def planted_transitions() -> pd.DataFrame:
    """The planted probabilities as rows (from_state, to_state, probability), with the states a
    customer joins in as from_state "(new)": the truth the migration job must recover."""
    rows = [(STATES[i], STATES[j], p) for i, row in enumerate(TRANSITIONS)
            for j, p in enumerate(row)]
    rows += [("(new)", STATES[j], p) for j, p in enumerate(INITIAL)]
    return pd.DataFrame(rows, columns=["from_state", "to_state", "probability"])


def _draw(u: Column, cumulative: list[float]) -> Column:
    """The index j of a categorical draw: the number of cumulative thresholds at or below u."""
    return sum((u >= F.lit(c)).cast("int") for c in cumulative)


def _cumulative(row) -> list[float]:
    out, acc = [], 0.0
    for p in row[:-1]:
        acc += p
        out.append(round(acc, 12))
    return out


def _next_state(seed: int, cid: Column, month: Column, prev: Column) -> Column:
    """The state of ``month`` drawn from the TRANSITIONS row of ``prev``."""
    u = _u(seed, "transition", cid, month)
    nxt = F.lit(None).cast("int")
    for i in reversed(range(len(STATES))):
        nxt = F.when(prev == i, _draw(u, _cumulative(TRANSITIONS[i]))).otherwise(nxt)
    return nxt


def customer_months(spark: SparkSession, spec: MigrationSpec) -> DataFrame:
    """One row per customer and month from the month it joins: customer_id, month (0-based),
    month_end (date), state (index into STATES), state_name. The planted truth of who was in
    which state at each month end."""
    spec.validate()
    seed, n = spec.seed, spec.n_months
    cid = F.col("cidx")
    width = max(6, len(str(spec.n_customers)))
    later = 1 + F.floor(_u(seed, "join_month", cid) * (n - 1))
    join = F.when(_u(seed, "join", cid) < FIRST_MONTH_SHARE, F.lit(0)).otherwise(later).cast("int")
    initial = _draw(_u(seed, "initial", cid), _cumulative(INITIAL))
    # The chain month by month: an array whose element m is the state of month m (-1 before
    # the customer joins); each step reads the element before it.
    states = F.aggregate(
        F.sequence(F.lit(0), F.lit(n - 1)), F.array().cast("array<int>"),
        lambda acc, m: F.concat(acc, F.array(
            F.when(m < F.col("join"), F.lit(-1)).when(m == F.col("join"), initial)
            .otherwise(_next_state(seed, cid, m, F.element_at(acc, m))))))
    ends = F.array(*[F.lit(spec.month_end(m)) for m in range(n)])
    return (spark.range(0, spec.n_customers).withColumnRenamed("id", "cidx")
            .withColumn(CUSTOMER_ID, F.concat(F.lit("M"), F.lpad((cid + 1).cast("string"), width, "0")))
            .withColumn("join", join)
            .select("cidx", CUSTOMER_ID, F.posexplode(states).alias("month", "state"))
            .filter(F.col("state") >= 0)
            .withColumn("month_end", F.element_at(ends, F.col("month") + 1))
            .withColumn("state_name", _pick(list(STATES), F.col("state"))))


def order_lines(spark: SparkSession, spec: MigrationSpec) -> DataFrame:
    """The sample's order lines (sales only), lazily, with the main sample's ORDERS_SCHEMA."""
    seed = spec.seed
    start = date.fromisoformat(spec.start_date)
    lo, hi = ORDER_DAYS
    months = customer_months(spark, spec)
    orders = (months.withColumn("n_orders", _pick(list(ORDERS_PER_MONTH), F.col("state")))
              .filter(F.col("n_orders") > 0)
              .select("cidx", CUSTOMER_ID, "month", "state",
                      F.explode(F.sequence(F.lit(0), F.col("n_orders") - 1)).alias("k"))
              .withColumn("okey", (F.col("cidx") * spec.n_months + F.col("month")) * 100 + F.col("k")))
    okey = F.col("okey")
    first_of_month = F.add_months(F.lit(start), F.col("month"))
    day = F.date_add(first_of_month, (lo - 1 + F.floor(_u(seed, "day", okey) * (hi - lo + 1))).cast("int"))
    mean_lines = _pick(list(MEAN_LINES), F.col("state"))
    n_lines = (1 + F.floor(_u(seed, "n_lines", okey) * (2 * mean_lines - 1))).cast("int")
    lines = (orders
             .withColumn("ts", F.unix_timestamp(F.to_timestamp(day))
                         + (8 * 3600 + F.floor(_u(seed, "time", okey) * 12 * 3600)).cast("long"))
             .select("*", F.explode(F.sequence(F.lit(0), n_lines - 1)).alias("pos")))
    # distinct SKUs within an order: a random first one, then steps of 7 (coprime with 50)
    sku_idx = ((F.floor(_u(seed, "sku", okey) * _N_SKUS) + 7 * F.col("pos")) % _N_SKUS).cast("int")
    price = F.round(F.lit(_PRICE_RANGE[0]) + _u(seed, "price", sku_idx)
                    * (_PRICE_RANGE[1] - _PRICE_RANGE[0]), 2)
    mean_qty = _pick(list(MEAN_QTY), F.col("state"))
    qty = 1 + F.floor(_u(seed, "qty", okey, F.col("pos")) * (2 * mean_qty - 1))
    out = lines.select(
        (okey + 1_000_000).cast("string").alias(ORDER_ID),
        F.col(CUSTOMER_ID),
        F.concat(F.lit("M"), F.lpad((sku_idx + 1).cast("string"), 3, "0")).alias(SKU),
        qty.cast("int").alias(QUANTITY),
        price.cast("double").alias(UNIT_PRICE),
        F.timestamp_seconds(F.col("ts")).alias(ORDERED_AT),
        F.concat(F.lit("ITEM "), (sku_idx + 1).cast("string")).alias(PRODUCT_NAME),
        F.lit("HOME DECOR").alias(CATEGORY),
        F.lit("United Kingdom").alias(COUNTRY),
    )
    return _with_schema(out, ORDERS_SCHEMA)


TRUTH_SCHEMA = T.StructType([
    T.StructField(CUSTOMER_ID, T.StringType(), False),
    T.StructField("month_end", T.DateType(), False),
    T.StructField("state_name", T.StringType(), False),
])


def truth(spark: SparkSession, spec: MigrationSpec) -> DataFrame:
    """The planted state of every customer at every month end from the month it joined
    (customer_id, month_end, state_name)."""
    return _with_schema(customer_months(spark, spec), TRUTH_SCHEMA)
