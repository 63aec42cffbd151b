"""Inventory policy: gold.demand_forecast + gold.forecast_accuracy + silver.products +
silver.inventory + gold.sku_daily_demand -> gold.inventory_policy, gold.inventory_simulation.

Per SKU (docs/inventory.md has the whole story):

* **Classes.** ABC by share of revenue over the last ``class_window_days`` (sale revenue in
  gold.sku_daily_demand; SKUs in descending revenue order are A while the revenue before them is
  below the first threshold, 80 %, B below the second, 95 %, else C). XYZ by the coefficient
  of variation of demand per ``xyz_period_days`` bucket (weekly by default) over the same window.
  The target service level comes from the ABC class (``service_levels``).
* **Demand.** ``avg_daily_demand`` is the mean daily forecast over the forecast horizon;
  ``demand_std`` the backtest RMSE of the SKU's forecast (the error of a daily forecast), or,
  where the SKU has no backtest, the width of the 80 % forecast interval / (2 * 1.2816).
* **Policy** (continuous (s, nQ) policy reviewed every ``review_period_days``): protection
  period P = L + R; sigma_P = sqrt(P sigma_d^2 + d^2 sigma_L^2); safety stock SS = k sigma_P;
  reorder point s = max(d P + SS, 0); EOQ = sqrt(2 D S / H) with D = 365 d, S the ordering cost
  and H = holding rate * unit cost; order quantity Q = EOQ rounded up to packs, at least the
  minimum order. k depends on ``service_measure``: ``cycle`` -> k = z = Phi^-1(target) (a
  broadcast lookup per class computed on the driver); ``fill_rate`` (default) -> the k with
  sigma_P G(k) = (1 - target) Q, G the standard normal loss function (a built-in interpolation
  in a small table computed on the driver).
* **Now**: inventory position = on hand + on order; when it is at or below s, the recommended
  order is the smallest multiple of Q that lifts it above s. Status ``reorder now``, ``ok``,
  ``overstock`` (no demand but stock, or position above s + Q and more than
  ``overstock_cover_days`` of demand), ``no forecast`` (in the snapshot, not forecast).
* **Simulation**: see :func:`simulation_policy` and :mod:`shopsense.supply.replay`.

Missing catalogue values, and SKUs missing from the snapshot, take the conf defaults
(``inventory.defaults``); the ``defaults_used`` column lists them and the run record counts them.
"""

from __future__ import annotations

import datetime as dt
import functools
import math

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.core.config import Conf
from shopsense.core.ordered import with_sum_before
from shopsense.supply.demand import AVG_PRICE, SALE_UNITS, UNITS
from shopsense.supply.replay import (LOSS_K_MAX, LOSS_K_MIN, SIMULATION_SCHEMA, SimParams,
                                     normal_loss, inverse_normal_loss, simulate_one_sku,
                                     z_for_cycle_service)
from shopsense.core.runs import JobRun
from shopsense.core.settings import InventorySection
from shopsense.ingest.products import read_products

ABC = "abc_class"
XYZ = "xyz_class"
REVENUE_SHARE = "revenue_share"
DEMAND_CV = "demand_cv"
AVG_DAILY_DEMAND = "avg_daily_demand"
DEMAND_STD = "demand_std"
TARGET = "target_service_level"
STATUS = "status"
DEFAULTS_USED = "defaults_used"

REORDER_NOW = "reorder now"
OK = "ok"
OVERSTOCK = "overstock"
NO_FORECAST = "no forecast"

_RUN = [T.StructField("as_of", T.DateType(), False), *tables.RUN_COLUMNS]
_D = T.DoubleType()

#: gold.inventory_policy: one row per forecast SKU and per SKU of the snapshot.
INVENTORY_POLICY = T.StructType([
    T.StructField(C.SKU, T.StringType(), False),
    T.StructField(C.PRODUCT_NAME, T.StringType(), True),
    T.StructField(STATUS, T.StringType(), False),
    T.StructField(ABC, T.StringType(), False),
    T.StructField(XYZ, T.StringType(), False),
    T.StructField(C.REVENUE, _D, False),
    T.StructField(REVENUE_SHARE, _D, True),
    T.StructField(DEMAND_CV, _D, True),
    T.StructField("service_measure", T.StringType(), False),
    T.StructField(TARGET, _D, False),
    T.StructField(AVG_DAILY_DEMAND, _D, True),
    T.StructField(DEMAND_STD, _D, True),
    T.StructField("demand_std_source", T.StringType(), True),
    T.StructField("forecast_model", T.StringType(), True),
    T.StructField(C.LEAD_TIME_DAYS, _D, False),
    T.StructField(C.LEAD_TIME_STD_DAYS, _D, False),
    T.StructField("protection_days", _D, False),
    T.StructField("lead_time_demand", _D, True),
    T.StructField("lead_time_demand_std", _D, True),
    T.StructField("safety_factor", _D, True),
    T.StructField("safety_stock", _D, True),
    T.StructField("reorder_point", _D, True),
    T.StructField(C.UNIT_COST, _D, False),
    T.StructField("holding_cost_per_unit_year", _D, False),
    T.StructField("ordering_cost", _D, False),
    T.StructField("annual_demand", _D, True),
    T.StructField("economic_order_qty", _D, True),
    T.StructField(C.PACK_SIZE, _D, False),
    T.StructField(C.MIN_ORDER_QTY, _D, False),
    T.StructField("order_qty", _D, True),
    T.StructField(C.ON_HAND, _D, False),
    T.StructField(C.ON_ORDER, _D, False),
    T.StructField("inventory_position", _D, False),
    T.StructField("days_of_cover", _D, True),
    T.StructField("recommended_order_qty", _D, True),
    T.StructField(DEFAULTS_USED, T.ArrayType(T.StringType()), False),
    *_RUN,
])

#: gold.inventory_simulation: one row per simulated SKU.
INVENTORY_SIMULATION = T.StructType([
    T.StructField(C.SKU, T.StringType(), False),
    T.StructField(ABC, T.StringType(), False),
    T.StructField(XYZ, T.StringType(), False),
    T.StructField("service_measure", T.StringType(), False),
    T.StructField(TARGET, _D, False),
    T.StructField(AVG_DAILY_DEMAND, _D, True),
    T.StructField(DEMAND_STD, _D, True),
    T.StructField(C.LEAD_TIME_DAYS, _D, True),
    T.StructField(C.LEAD_TIME_STD_DAYS, _D, True),
    T.StructField("safety_stock", _D, True),
    T.StructField("reorder_point", _D, True),
    T.StructField("order_qty", _D, True),
    T.StructField("sim_start", T.DateType(), True),
    T.StructField("sim_end", T.DateType(), True),
    T.StructField("days", T.IntegerType(), True),
    T.StructField("demand_units", _D, True),
    T.StructField("filled_units", _D, True),
    T.StructField("fill_rate", _D, True),
    T.StructField("cycles", T.IntegerType(), True),
    T.StructField("cycles_with_stockout", T.IntegerType(), True),
    T.StructField("cycle_service_level", _D, True),
    T.StructField("stockout_days", T.IntegerType(), True),
    T.StructField("avg_on_hand", _D, True),
    T.StructField("orders_placed", T.IntegerType(), True),
    T.StructField("units_ordered", _D, True),
    T.StructField("mean_lead_time_drawn", _D, True),
    T.StructField("sim_status", T.StringType(), False),
    T.StructField("sim_reason", T.StringType(), True),
    *_RUN,
])


class InventoryError(ValueError):
    """Invalid inventory parameters or inputs (the message names the offending value)."""


# --- Column rules ----------------------------------------------------------------------------

def lead_time_demand_std(daily_demand: Column, demand_std: Column, days: Column,
                         lead_time_std: Column) -> Column:
    """sqrt(P * sigma_d^2 + d^2 * sigma_L^2), the deviation of demand over ``days`` (P)."""
    return F.sqrt(days * demand_std * demand_std
                  + daily_demand * daily_demand * lead_time_std * lead_time_std)


def safety_stock(z: Column, daily_demand: Column, demand_std: Column, lead_time: Column,
                 lead_time_std: Column) -> Column:
    """SS = z * sqrt(L * sigma_d^2 + d^2 * sigma_L^2)."""
    return z * lead_time_demand_std(daily_demand, demand_std, lead_time, lead_time_std)


def reorder_point(daily_demand: Column, lead_time: Column, safety: Column) -> Column:
    """s = d * L + SS, never below 0; null when an input is null."""
    s = daily_demand * lead_time + safety
    return F.when(s.isNotNull(), F.greatest(s, F.lit(0.0)))


def economic_order_quantity(annual_demand: Column, ordering_cost: Column,
                            holding_cost_per_unit_year: Column) -> Column:
    """Wilson's EOQ sqrt(2 D S / H); null when H is not positive."""
    return F.when(holding_cost_per_unit_year > 0,
                  F.sqrt(F.lit(2.0) * annual_demand * ordering_cost / holding_cost_per_unit_year))


def round_up_to_pack(qty: Column, pack_size: Column, min_order_qty: Column) -> Column:
    """``qty`` rounded up to whole packs, at least the minimum order (rounded up to packs);
    0 (or less) gives 0. A missing or non-positive pack counts as 1."""
    pack = F.when(pack_size > 0, pack_size).otherwise(F.lit(1.0))
    packs = lambda q: F.ceil(q / pack - F.lit(1e-9)) * pack  # noqa: E731
    return F.when(qty <= 0, F.lit(0.0)).otherwise(
        F.greatest(packs(qty), packs(F.coalesce(min_order_qty, F.lit(0.0)))).cast("double"))


@functools.lru_cache(maxsize=1)
def _loss_table(points: int = 2001) -> tuple[float, float, tuple[float, ...]]:
    """(u0, du, k values): k = G^-1(exp(u)) on a uniform grid of u = ln G from G(K_MAX) to
    G(K_MIN), for the interpolation in :func:`fill_rate_safety_factor`."""
    u_lo, u_hi = math.log(normal_loss(LOSS_K_MAX)), math.log(normal_loss(LOSS_K_MIN))
    du = (u_hi - u_lo) / (points - 1)
    ks = tuple(inverse_normal_loss(math.exp(u_lo + i * du), LOSS_K_MIN, LOSS_K_MAX)
               for i in range(points))
    return u_lo, du, ks


def fill_rate_safety_factor(target: Column, order_qty: Column, sigma: Column) -> Column:
    """The k with sigma * G(k) = (1 - target) * Q: the safety factor giving fill rate ``target``
    to a (s, Q) policy whose lead-time demand has deviation ``sigma``. Linear interpolation in
    a driver-computed table of G^-1 over ln G (built-ins only); clamped to [-4, 5]; 0 where
    sigma or Q is not positive (nothing to protect, or nothing ordered)."""
    u0, du, ks = _loss_table()
    table = F.array(*[F.lit(k) for k in ks])
    x = (F.lit(1.0) - target) * order_qty / sigma
    pos = (F.log(x) - F.lit(u0)) / F.lit(du)
    i = F.least(F.greatest(F.floor(pos), F.lit(0)), F.lit(len(ks) - 2)).cast("int")
    frac = F.least(F.greatest(pos - i, F.lit(0.0)), F.lit(1.0))
    k = (F.element_at(table, i + 1) * (F.lit(1.0) - frac) + F.element_at(table, i + 2) * frac)
    return F.when((sigma > 0) & (order_qty > 0), k).otherwise(F.lit(0.0))


def inventory_position(on_hand: Column, on_order: Column) -> Column:
    """On hand + on order (backorders, if any, are negative on hand)."""
    return on_hand + on_order


def days_of_cover(stock: Column, daily_demand: Column) -> Column:
    """Days the stock lasts at the average daily demand; null when demand is 0 or unknown."""
    return F.when(daily_demand > 0, stock / daily_demand)


def recommended_order_qty(position: Column, rop: Column, order_qty: Column) -> Column:
    """The smallest multiple of Q lifting the position above s when it is at or below s, else 0."""
    n = F.floor((rop - position) / order_qty) + 1
    return F.when(position <= rop, n * order_qty).otherwise(F.lit(0.0))


def stock_status(daily_demand: Column, position: Column, rop: Column, order_qty: Column,
                 overstock_cover_days: float) -> Column:
    """``no forecast`` / ``reorder now`` / ``overstock`` / ``ok`` (see the module docstring)."""
    return (F.when(daily_demand.isNull(), F.lit(NO_FORECAST))
            .when(daily_demand <= 0, F.when(position > 0, F.lit(OVERSTOCK)).otherwise(F.lit(OK)))
            .when(position <= rop, F.lit(REORDER_NOW))
            .when((position > rop + order_qty)
                  & (position / daily_demand > F.lit(float(overstock_cover_days))), F.lit(OVERSTOCK))
            .otherwise(F.lit(OK)))


# --- transforms ------------------------------------------------------------------------------

def class_revenue(demand: DataFrame, as_of: dt.date, window_days: int) -> DataFrame:
    """(sku, revenue) - sale revenue over the ``window_days`` days ending on ``as_of``."""
    since = as_of - dt.timedelta(days=window_days - 1)
    return (demand.filter((F.col(C.DATE) >= F.lit(since)) & (F.col(C.DATE) <= F.lit(as_of)))
            .groupBy(C.SKU)
            .agg(F.coalesce(F.sum(F.col(SALE_UNITS) * F.col(AVG_PRICE)), F.lit(0.0)).alias(C.REVENUE)))


def with_abc_class(df: DataFrame, a_share: float, b_share: float,
                   revenue_col: str = C.REVENUE) -> DataFrame:
    """Add ``revenue_share`` and ``abc_class``: in descending revenue order (ties by SKU), A
    while the revenue share before the SKU is below ``a_share``, B below ``b_share``, else C;
    zero or negative revenue is always C. The running sum is computed in parallel
    (:func:`shopsense.core.ordered.with_sum_before`), not in one task."""
    rev = F.greatest(F.coalesce(F.col(revenue_col), F.lit(0.0)), F.lit(0.0))
    summed = with_sum_before(df.withColumn("_rev", rev), F.col("_rev"),
                             [F.col("_rev").desc(), F.col(C.SKU).asc()], "_before", total="_total")
    rev, total = F.col("_rev"), F.col("_total")
    before = F.col("_before") / total
    cls = (F.when((rev <= 0) | total.isNull() | (total <= 0), F.lit("C"))
           .when(before < a_share, F.lit("A")).when(before < b_share, F.lit("B")).otherwise(F.lit("C")))
    return (summed.withColumn(REVENUE_SHARE, F.when(total > 0, rev / total))
            .withColumn(ABC, cls).drop("_rev", "_before", "_total"))


def demand_cv(demand: DataFrame, as_of: dt.date, window_days: int, period_days: int) -> DataFrame:
    """(sku, demand_cv): population std / mean of the SKU's demand per ``period_days`` bucket
    (counted back from ``as_of``) over the window; negative net days count as 0; null when
    the mean is 0."""
    since = as_of - dt.timedelta(days=window_days - 1)
    buckets = (demand.filter((F.col(C.DATE) >= F.lit(since)) & (F.col(C.DATE) <= F.lit(as_of)))
               .withColumn("bucket", F.floor(F.datediff(F.lit(as_of), F.col(C.DATE)) / period_days))
               .groupBy(C.SKU, "bucket")
               .agg(F.sum(F.greatest(F.col(UNITS), F.lit(0.0))).alias("u")))
    return buckets.groupBy(C.SKU).agg(
        F.when(F.avg("u") > 0, F.stddev_pop("u") / F.avg("u")).alias(DEMAND_CV))


def xyz_class(cv: Column, x_max: float, y_max: float) -> Column:
    """X up to ``x_max``, Y up to ``y_max``, else Z (no demand: Z)."""
    return (F.when(cv.isNull(), F.lit("Z")).when(cv <= x_max, F.lit("X"))
            .when(cv <= y_max, F.lit("Y")).otherwise(F.lit("Z")))


def read_forecast_tables(run: JobRun) -> tuple[DataFrame, DataFrame]:
    """The two forecast-job tables this job reads - the only place that knows their names."""
    return run.read("gold.demand_forecast"), run.read("gold.forecast_accuracy")


def forecast_inputs(forecast: DataFrame, accuracy: DataFrame) -> DataFrame:
    """(sku, avg_daily_demand, demand_std, demand_std_source, forecast_model) from the forecast
    (mean daily forecast over the horizon; model of the first day) and its uncertainty: the
    backtest RMSE where finite, else the mean 80 % interval half-width / 1.2816. Relies only
    on columns sku, horizon_day, forecast, lo80, hi80, model (forecast) and sku, rmse,
    n_points (accuracy)."""
    z80 = 1.2815515655446004
    per_sku = (forecast.groupBy(C.SKU).agg(
        F.avg(F.greatest(F.col("forecast"), F.lit(0.0))).alias(AVG_DAILY_DEMAND),
        F.avg((F.col("hi80") - F.col("lo80")) / F.lit(2 * z80)).alias("interval_std"),
        F.min_by(F.col("model"), F.col("horizon_day")).alias("forecast_model")))
    rmse = F.col("rmse")
    backtest = (accuracy.filter((F.col("n_points") > 0) & rmse.isNotNull() & ~F.isnan(rmse)
                                & (F.abs(rmse) != float("inf")))
                .select(C.SKU, rmse.alias("backtest_std")))
    joined = per_sku.join(backtest, C.SKU, "left")
    std = F.coalesce(F.col("backtest_std"), F.greatest(F.col("interval_std"), F.lit(0.0)))
    source = (F.when(F.col("backtest_std").isNotNull(), F.lit("backtest_rmse"))
              .when(F.col("interval_std").isNotNull(), F.lit("forecast_interval")))
    return joined.select(C.SKU, AVG_DAILY_DEMAND, std.alias(DEMAND_STD),
                         source.alias("demand_std_source"), "forecast_model")


def with_defaults(df: DataFrame, defaults: dict) -> DataFrame:
    """Fill missing catalogue values and snapshot quantities from ``defaults`` and list the
    filled inputs in ``defaults_used``. ``unit_cost`` falls back to ``unit_cost_share`` times
    the SKU's unit price, then to the flat default; non-positive costs, lead times and packs
    and negative deviations and minimum orders count as missing."""
    def missing(col: str) -> Column:
        c = F.col(col)
        if col in (C.UNIT_COST, C.LEAD_TIME_DAYS, C.PACK_SIZE):
            return c.isNull() | (c <= 0)
        if col in (C.LEAD_TIME_STD_DAYS, C.MIN_ORDER_QTY):
            return c.isNull() | (c < 0)
        return c.isNull()          # on hand may be negative (backorders)

    filled = [C.LEAD_TIME_DAYS, C.LEAD_TIME_STD_DAYS, C.PACK_SIZE, C.MIN_ORDER_QTY,
              C.ON_HAND, C.ON_ORDER]
    used = F.array_compact(F.array(*[F.when(missing(c), F.lit(c)) for c in [C.UNIT_COST, *filled]]))
    price_cost = F.when(F.col(C.UNIT_PRICE) > 0, F.col(C.UNIT_PRICE) * float(defaults["unit_cost_share"]))
    out = df.withColumn(DEFAULTS_USED, used).withColumn(
        C.UNIT_COST, F.when(missing(C.UNIT_COST),
                            F.coalesce(price_cost, F.lit(float(defaults["unit_cost"]))))
        .otherwise(F.col(C.UNIT_COST)))
    for c in filled:
        out = out.withColumn(c, F.when(missing(c), F.lit(float(defaults[c]))).otherwise(F.col(c)))
    return out


def service_targets(spark: SparkSession, levels: dict) -> DataFrame:
    """(abc_class, target_service_level, cycle_z): the per-class lookup, z computed on the
    driver with NormalDist (three rows; broadcast when joined)."""
    rows = [(cls, float(level), z_for_cycle_service(float(level))) for cls, level in sorted(levels.items())]
    return spark.createDataFrame(rows, f"{ABC} string, {TARGET} double, cycle_z double")


def capped_order_qty(eoq: Column, daily_demand: Column, max_cover_days: float | None) -> Column:
    """The EOQ, at most ``max_cover_days`` of average demand (None or 0: no cap)."""
    if not max_cover_days:
        return eoq
    return F.least(eoq, daily_demand * F.lit(float(max_cover_days)))


def with_policy(df: DataFrame, measure: str, ordering_cost: float, holding_rate: float,
                review_period_days: float, max_order_cover_days: float | None = None) -> DataFrame:
    """Add the policy columns to rows holding avg_daily_demand, demand_std, lead_time_days,
    lead_time_std_days, unit_cost, pack_size, min_order_qty, target_service_level, cycle_z.
    The order quantity is the EOQ capped at ``max_order_cover_days`` of demand, rounded up to
    packs and the minimum order."""
    d, sd = F.col(AVG_DAILY_DEMAND), F.col(DEMAND_STD)
    p = F.col(C.LEAD_TIME_DAYS) + F.lit(float(review_period_days))
    sigma = lead_time_demand_std(d, F.coalesce(sd, F.lit(0.0)), p, F.col(C.LEAD_TIME_STD_DAYS))
    if measure == "cycle":
        k = F.col("cycle_z")
    else:
        k = fill_rate_safety_factor(F.col(TARGET), F.col("order_qty"), F.col("lead_time_demand_std"))
    return (df
            .withColumn("protection_days", p)
            .withColumn("lead_time_demand", d * p)
            .withColumn("lead_time_demand_std", sigma)
            .withColumn("holding_cost_per_unit_year", F.lit(float(holding_rate)) * F.col(C.UNIT_COST))
            .withColumn("ordering_cost", F.lit(float(ordering_cost)))
            .withColumn("annual_demand", d * 365.0)
            .withColumn("economic_order_qty", economic_order_quantity(
                F.col("annual_demand"), F.col("ordering_cost"), F.col("holding_cost_per_unit_year")))
            .withColumn("order_qty", F.when(d.isNotNull(), round_up_to_pack(
                capped_order_qty(F.col("economic_order_qty"), d, max_order_cover_days),
                F.col(C.PACK_SIZE), F.col(C.MIN_ORDER_QTY))))
            .withColumn("safety_factor", F.when(d.isNotNull(), k))
            .withColumn("safety_stock", F.col("safety_factor") * F.col("lead_time_demand_std"))
            .withColumn("reorder_point", reorder_point(d, p, F.col("safety_stock"))))


def with_position_and_status(df: DataFrame, overstock_cover_days: float) -> DataFrame:
    """Add inventory_position, days_of_cover, recommended_order_qty and status."""
    d = F.col(AVG_DAILY_DEMAND)
    pos = inventory_position(F.col(C.ON_HAND), F.col(C.ON_ORDER))
    return (df.withColumn("inventory_position", pos)
            .withColumn("days_of_cover", days_of_cover(F.col(C.ON_HAND), d))
            .withColumn("recommended_order_qty", F.when(
                (d > 0), recommended_order_qty(F.col("inventory_position"), F.col("reorder_point"),
                                               F.col("order_qty")))
                .when(d.isNotNull(), F.lit(0.0)))
            .withColumn(STATUS, stock_status(d, F.col("inventory_position"), F.col("reorder_point"),
                                             F.col("order_qty"), overstock_cover_days)))


def classified_skus(demand: DataFrame, skus: DataFrame, as_of: dt.date, section: InventorySection) -> DataFrame:
    """(sku, revenue, revenue_share, abc_class, demand_cv, xyz_class) for the SKUs of ``skus``
    (ABC shares are computed over all SKUs with demand, so they do not depend on which are
    forecast)."""
    window = section.class_window_days
    a, b = section.abc_thresholds
    x, y = section.xyz_thresholds
    revenue = class_revenue(demand, as_of, window)
    all_skus = skus.select(C.SKU).unionByName(revenue.select(C.SKU)).distinct()
    classes = with_abc_class(all_skus.join(revenue, C.SKU, "left")
                             .withColumn(C.REVENUE, F.coalesce(F.col(C.REVENUE), F.lit(0.0))), a, b)
    cv = demand_cv(demand, as_of, window, section.xyz_period_days)
    return (classes.join(skus.select(C.SKU), C.SKU, "left_semi").join(cv, C.SKU, "left")
            .withColumn(XYZ, xyz_class(F.col(DEMAND_CV), x, y)))


def build_policy(spark: SparkSession, forecast_in: DataFrame, demand: DataFrame,
                 products: DataFrame | None, snapshot: DataFrame | None, as_of: dt.date,
                 section: InventorySection) -> DataFrame:
    """The gold.inventory_policy rows (without run columns) for the SKUs of ``forecast_in``
    and of ``snapshot``. ``products`` / ``snapshot`` None means the table is absent."""
    skus = forecast_in.select(C.SKU)
    if snapshot is not None:
        snap = snapshot.groupBy(C.SKU).agg(F.sum(C.ON_HAND).alias(C.ON_HAND),
                                           F.sum(C.ON_ORDER).alias(C.ON_ORDER))
        skus = skus.unionByName(snap.select(C.SKU)).distinct()
    else:
        snap = spark.createDataFrame([], f"{C.SKU} string, {C.ON_HAND} double, {C.ON_ORDER} double")
    if products is None:
        products = spark.createDataFrame([], tables.PRODUCTS)
    cat = products.select(C.SKU, C.PRODUCT_NAME, C.UNIT_PRICE, C.UNIT_COST, C.LEAD_TIME_DAYS,
                          C.LEAD_TIME_STD_DAYS, C.PACK_SIZE, C.MIN_ORDER_QTY).dropDuplicates([C.SKU])
    base = (skus.join(forecast_in, C.SKU, "left").join(cat, C.SKU, "left")
            .join(snap, C.SKU, "left")
            .join(classified_skus(demand, skus, as_of, section), C.SKU, "left")
            .withColumn(ABC, F.coalesce(F.col(ABC), F.lit("C")))
            .withColumn(XYZ, F.coalesce(F.col(XYZ), F.lit("Z")))
            .withColumn(C.REVENUE, F.coalesce(F.col(C.REVENUE), F.lit(0.0))))
    base = with_defaults(base, section.defaults.model_dump())
    targets = F.broadcast(service_targets(spark, section.service_levels.model_dump()))
    policy = with_policy(base.join(targets, ABC, "left"), section.service_measure,
                         section.ordering_cost, section.holding_cost_rate,
                         section.review_period_days, section.max_order_cover_days)
    return (with_position_and_status(policy, section.overstock_cover_days)
            .withColumn("service_measure", F.lit(section.service_measure))
            .withColumn("as_of", F.lit(as_of)))


# --- simulation ----------------------------------------------------------------------------------

def simulation_window(as_of: dt.date, days: int, fit_days: int) -> tuple[dt.date, dt.date, dt.date]:
    """(fit_start, sim_start, as_of): the policy is fitted on [fit_start, sim_start) and
    replayed on [sim_start, as_of]."""
    sim_start = as_of - dt.timedelta(days=days - 1)
    return sim_start - dt.timedelta(days=fit_days), sim_start, as_of


def simulation_policy(spark: SparkSession, policy: DataFrame, demand: DataFrame, as_of: dt.date,
                      section: InventorySection) -> DataFrame:
    """The policy the simulation replays: every column of ``policy`` (classes, targets, lead
    times, costs, packs) except demand, which is re-estimated from the fit window only (mean
    and sample std of daily units, negative days as 0), so the replayed days are unseen; the
    safety stock, reorder point and order quantity are then recomputed with the same rules."""
    sim = section.simulation
    fit_start, sim_start, _ = simulation_window(as_of, sim.days, sim.fit_days)
    fit = (demand.filter((F.col(C.DATE) >= F.lit(fit_start)) & (F.col(C.DATE) < F.lit(sim_start)))
           .groupBy(C.SKU)
           .agg(F.avg(F.greatest(F.col(UNITS), F.lit(0.0))).alias(AVG_DAILY_DEMAND),
                F.coalesce(F.stddev_samp(F.greatest(F.col(UNITS), F.lit(0.0))), F.lit(0.0)).alias(DEMAND_STD)))
    keep = [C.SKU, ABC, XYZ, C.LEAD_TIME_DAYS, C.LEAD_TIME_STD_DAYS, C.UNIT_COST, C.PACK_SIZE,
            C.MIN_ORDER_QTY]
    targets = F.broadcast(service_targets(spark, section.service_levels.model_dump()))
    return with_policy(policy.filter(F.col(AVG_DAILY_DEMAND).isNotNull()).select(*keep)
                       .join(fit, C.SKU, "inner").join(targets, ABC, "left"),
                       section.service_measure, section.ordering_cost,
                       section.holding_cost_rate, section.review_period_days,
                       section.max_order_cover_days)


def simulate_skus(sim_policy: DataFrame, days: DataFrame, seed: int, partitions: int) -> DataFrame:
    """Run :func:`shopsense.supply.replay.simulate_one_sku` per SKU over ``days`` (sku, date,
    units) joined with the policy; returns SIMULATION_SCHEMA rows."""
    rows = days.select(C.SKU, C.DATE, UNITS).join(
        sim_policy.select(C.SKU, "reorder_point", "order_qty", C.LEAD_TIME_DAYS, C.LEAD_TIME_STD_DAYS),
        C.SKU, "inner")
    fn = functools.partial(simulate_one_sku, params=SimParams(seed=seed))
    return rows.repartition(partitions, C.SKU).groupBy(C.SKU).applyInPandas(fn, SIMULATION_SCHEMA)


def fill_rate_by_class(sim: DataFrame) -> DataFrame:
    """(abc_class, target, skus, fill_rate, mean_sku_fill_rate, cycle_service_level): the
    units-weighted fill rate (units served from stock / units demanded over all SKUs of the
    class), the plain mean of SKU fill rates and the cycle service level over all cycles."""
    ok = sim.filter(F.col("sim_status") == "ok")
    return (ok.groupBy(ABC).agg(
        F.first(TARGET).alias("target"), F.count("*").alias("skus"),
        F.try_divide(F.sum("filled_units"), F.sum("demand_units")).alias("fill_rate"),
        F.avg("fill_rate").alias("mean_sku_fill_rate"),
        (F.lit(1.0) - F.try_divide(F.sum("cycles_with_stockout"), F.sum("cycles"))).alias("cycle_service_level"))
        .orderBy(ABC))


# --- the job -------------------------------------------------------------------------------------

def run(spark: SparkSession, conf: Conf) -> dict:
    """Compute gold.inventory_policy and (when ``inventory.simulation.enabled``) replay it in
    gold.inventory_simulation, both whole-table replaces. Returns the run summary; metrics:
    SKUs per status, defaults used, and the simulated fill rate per ABC class."""
    section = conf.inventory
    with JobRun(spark, conf, "inventory", section) as run:
        forecast, accuracy = read_forecast_tables(run)
        demand = run.read("gold.sku_daily_demand")
        as_of = run.as_of()
        without = "its values come from inventory.defaults"
        products = read_products(run, without)
        snapshot = run.read_optional("silver.inventory", without)
        policy = build_policy(spark, forecast_inputs(forecast, accuracy), demand, products,
                              snapshot, as_of, section)
        run.rows_out = run.write(policy, "gold.inventory_policy")
        run.rows_in = forecast.count()
        record_policy(run, run.read_output("gold.inventory_policy"))
        if section.simulation.enabled:
            replay(run, run.read_output("gold.inventory_policy"), demand, as_of, section)
    return run.summary()


def record_policy(run: JobRun, written: DataFrame) -> None:
    """SKUs per status and the conf defaults used, in the run record."""
    for row in written.groupBy(STATUS).count().collect():
        run.metric(f"skus_{row[STATUS].replace(' ', '_')}", int(row["count"]))
    used = (written.select(F.explode(DEFAULTS_USED).alias("input")).groupBy("input").count()
            .orderBy("input").collect())
    if used:
        run.note("conf defaults used (SKUs per input): "
                 + ", ".join(f"{r['input']} {r['count']:,}" for r in used))
    for r in used:
        run.metric(f"defaults_{r['input']}", int(r["count"]))


def replay(run: JobRun, policy: DataFrame, demand: DataFrame, as_of: dt.date,
           section: InventorySection) -> None:
    """Replay the policy, re-fitted on the days before the replay window, day by day on the
    window's demand: gold.inventory_simulation and the fill rate per class in the run record."""
    sim = section.simulation
    partitions = section.partitions or 2 * run.spark.sparkContext.defaultParallelism
    fit_start, sim_start, _ = simulation_window(as_of, sim.days, sim.fit_days)
    sim_policy = simulation_policy(run.spark, policy, demand, as_of, section).persist()
    try:
        window = demand.filter((F.col(C.DATE) >= F.lit(sim_start)) & (F.col(C.DATE) <= F.lit(as_of)))
        result = (simulate_skus(sim_policy, window, sim.seed, partitions)
                  .withColumnRenamed("status", "sim_status")
                  .withColumnRenamed("reason", "sim_reason")
                  .join(sim_policy.select(C.SKU, ABC, XYZ, TARGET, AVG_DAILY_DEMAND, DEMAND_STD,
                                          C.LEAD_TIME_DAYS, C.LEAD_TIME_STD_DAYS, "safety_stock",
                                          "reorder_point", "order_qty"), C.SKU, "inner")
                  .withColumn("service_measure", F.lit(section.service_measure))
                  .withColumn("as_of", F.lit(as_of)))
        run.write(result, "gold.inventory_simulation")
    finally:
        sim_policy.unpersist()
    by_class = fill_rate_by_class(run.read_output("gold.inventory_simulation")).collect()
    for r in by_class:
        run.metric(f"sim_fill_rate_{r[ABC]}", r["fill_rate"], key=(r[ABC] == "A"))
        run.metric(f"sim_target_{r[ABC]}", r["target"])
        run.metric(f"sim_cycle_service_level_{r[ABC]}", r["cycle_service_level"])
    run.note(f"simulation: policy fitted on {fit_start}..{sim_start - dt.timedelta(days=1)}, "
             f"replayed on {sim_start}..{as_of}; fill rate per class: "
             + ", ".join(f"{r[ABC]} {r['fill_rate']:.3f} (target {r['target']:.3f}, "
                         f"{r['skus']} SKUs)" for r in by_class))
