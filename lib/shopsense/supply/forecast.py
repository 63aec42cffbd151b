"""Forecast: gold.sku_daily_demand -> gold.demand_forecast, gold.forecast_accuracy,
gold.forecast_accuracy_summary.

The per-SKU models are the plain pandas functions of :mod:`shopsense.supply.forecast_models`, run by
``groupBy(sku).applyInPandas`` with their declared output schemas and the parameters bound with
``functools.partial``. They never raise: a SKU whose fit fails, does not converge or runs past
its time budget gets a fallback forecast with ``status = "fallback"`` and the ``reason``.

Only active SKUs are forecast: those with positive net units on at least one day in the
``forecast.active_days`` days ending on the as-of date (default 90). The history of a SKU is
its zero-filled daily demand up to the as-of date, so every forecast starts the day after it.

Parallelism: every SKU is fitted once, in ONE ``applyInPandas`` pass that returns its forecast
rows and its backtest row together (:func:`shopsense.supply.forecast_models.forecast_and_backtest_one_sku`);
the result is persisted and split into the two tables, so no SKU's history is shipped to Python
twice and the tasks' tail (the last, unevenly sized tasks) is paid once. Before grouping, the
history is hash-partitioned by SKU into ``forecast.partitions`` partitions (0: four per task
slot, ``4 x spark.default.parallelism``): an explicit count, because adaptive query execution
would otherwise coalesce the small input into one partition and fit every SKU on one core; more
partitions than slots, because SKUs cost very different amounts (an ARIMA search vs a zero
forecast) and smaller tasks let the scheduler even out the slots' loads.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.core.config import Conf
from shopsense.supply.demand import UNITS
from shopsense.supply.forecast_models import (ACCURACY_SCHEMA, COMBINED_SCHEMA, FORECAST_SCHEMA, KIND,
                                       ForecastParams, backtest_one_sku,
                                       forecast_and_backtest_one_sku, forecast_one_sku,
                                       schema_fields)
from shopsense.core.runs import JobRun

AS_OF = "as_of"
HORIZON_DAY = "horizon_day"
SCOPE = "scope"

_RUN_FIELDS = [T.StructField(AS_OF, T.DateType(), False), *tables.RUN_COLUMNS]


_SPARK_TYPES = {"string": T.StringType(), "date": T.DateType(), "double": T.DoubleType(),
                "int": T.IntegerType(), "bigint": T.LongType(), "boolean": T.BooleanType()}


def _struct(ddl: str) -> T.StructType:
    """A flat DDL schema as a StructType without a session (StructType.fromDDL needs one)."""
    return T.StructType([T.StructField(name, _SPARK_TYPES[typ], True)
                         for name, typ in schema_fields(ddl)])


#: gold.demand_forecast: one row per active SKU and future day.
DEMAND_FORECAST = T.StructType(
    [*_struct(FORECAST_SCHEMA).fields[:2], T.StructField(HORIZON_DAY, T.IntegerType(), False),
     *_struct(FORECAST_SCHEMA).fields[2:], *_RUN_FIELDS])
#: gold.forecast_accuracy: one backtest row per active SKU.
FORECAST_ACCURACY = T.StructType([*_struct(ACCURACY_SCHEMA).fields, *_RUN_FIELDS])

_OVERALL_METRICS = ("mae", "rmse", "wape", "smape", "bias", "mase")
#: gold.forecast_accuracy_summary: the overall figures (scope "all") and the same per demand
#: pattern (scope "pattern=smooth", ...), for the chosen models and the seasonal naive baseline.
FORECAST_ACCURACY_SUMMARY = T.StructType(
    [T.StructField(SCOPE, T.StringType(), False),
     T.StructField("n_skus", T.LongType(), False),
     T.StructField("n_skus_mase", T.LongType(), False),
     T.StructField("n_points", T.LongType(), False)]
    + [T.StructField(f"{p}{m}", T.DoubleType(), True)
       for p in ("", "baseline_") for m in _OVERALL_METRICS]
    + [T.StructField("share_beats_baseline", T.DoubleType(), True), *_RUN_FIELDS])


def forecast_params(conf: Conf) -> ForecastParams:
    """ForecastParams from conf's (validated) ``forecast:`` section."""
    names = {f.name for f in dataclasses.fields(ForecastParams)}
    return ForecastParams(**{k: v for k, v in conf.forecast.model_dump().items() if k in names})


def active_skus(demand: DataFrame, as_of: dt.date, active_days: int) -> DataFrame:
    """SKUs with positive net units on a day in (as_of - active_days, as_of]."""
    since = as_of - dt.timedelta(days=active_days - 1)
    return (demand.filter((F.col(C.DATE) >= F.lit(since)) & (F.col(C.DATE) <= F.lit(as_of))
                          & (F.col(UNITS) > 0))
            .select(C.SKU).distinct())


def filter_active_history(demand: DataFrame, as_of: dt.date, active_days: int) -> DataFrame:
    """(sku, date, units) up to ``as_of`` of the active SKUs only."""
    return (demand.filter(F.col(C.DATE) <= F.lit(as_of))
            .join(active_skus(demand, as_of, active_days), C.SKU, "left_semi")
            .select(C.SKU, C.DATE, UNITS))


def default_partitions(spark: SparkSession, configured: int | None = None) -> int:
    """``configured`` when set, else four partitions per task slot
    (``4 x spark.default.parallelism``)."""
    return configured or 4 * spark.sparkContext.defaultParallelism


def forecast_skus(history: DataFrame, params: ForecastParams, partitions: int) -> DataFrame:
    """Per-SKU forecasts (:data:`FORECAST_SCHEMA` rows) via ``applyInPandas``."""
    fn = functools.partial(forecast_one_sku, params=params)
    return history.repartition(partitions, C.SKU).groupBy(C.SKU).applyInPandas(fn, FORECAST_SCHEMA)


def backtest_skus(history: DataFrame, params: ForecastParams, partitions: int) -> DataFrame:
    """Per-SKU backtest rows (:data:`ACCURACY_SCHEMA`) via ``applyInPandas``."""
    fn = functools.partial(backtest_one_sku, params=params)
    return history.repartition(partitions, C.SKU).groupBy(C.SKU).applyInPandas(fn, ACCURACY_SCHEMA)


def forecast_and_backtest_skus(history: DataFrame, params: ForecastParams,
                               partitions: int) -> DataFrame:
    """Forecast rows and backtest rows of every SKU (:data:`COMBINED_SCHEMA`, told apart by
    ``kind``) in one ``applyInPandas`` pass; split them with :func:`split_forecasts` and
    :func:`split_accuracy`."""
    fn = functools.partial(forecast_and_backtest_one_sku, params=params)
    return history.repartition(partitions, C.SKU).groupBy(C.SKU).applyInPandas(fn, COMBINED_SCHEMA)


def split_forecasts(combined: DataFrame) -> DataFrame:
    """The forecast rows of :func:`forecast_and_backtest_skus` (:data:`FORECAST_SCHEMA`)."""
    return (combined.filter(F.col(KIND) == "forecast")
            .select(*[name for name, _ in schema_fields(FORECAST_SCHEMA)]))


def split_accuracy(combined: DataFrame) -> DataFrame:
    """The backtest rows of :func:`forecast_and_backtest_skus` (:data:`ACCURACY_SCHEMA`)."""
    return (combined.filter(F.col(KIND) == "accuracy")
            .select(*[name for name, _ in schema_fields(ACCURACY_SCHEMA)]))


def _finite(col: str) -> Column:
    """The column where it is a finite number, else null (NaN and +-inf are not averaged)."""
    c = F.col(col)
    return F.when(c.isNotNull() & ~F.isnan(c) & (F.abs(c) != float("inf")), c)


def overall_accuracy_columns() -> list[Column]:
    """Aggregate expressions mirroring :func:`shopsense.supply.forecast_metrics.overall_accuracy`, to be
    applied to backtest rows with ``n_points > 0`` (sums over SKUs divided by the number of
    points; MASE the mean of the finite per-SKU values)."""
    n = F.sum("n_points")
    out = [F.count("*").alias("n_skus"), F.count(_finite("mase")).alias("n_skus_mase"),
           n.alias("n_points")]
    for p in ("", "baseline_"):
        out += [
            F.try_divide(F.sum(f"{p}sum_abs_error"), n).alias(f"{p}mae"),
            F.sqrt(F.try_divide(F.sum(f"{p}sum_sq_error"), n)).alias(f"{p}rmse"),
            F.try_divide(F.sum(f"{p}sum_abs_error"), F.sum("sum_abs_actual")).alias(f"{p}wape"),
            F.try_divide(F.sum(f"{p}sum_smape_terms"), n).alias(f"{p}smape"),
            F.try_divide(F.sum(f"{p}sum_error"), n).alias(f"{p}bias"),
            F.avg(_finite(f"{p}mase")).alias(f"{p}mase"),
        ]
    out.append(F.avg(F.col("beats_baseline").cast("double")).alias("share_beats_baseline"))
    return out


def accuracy_summary(accuracy: DataFrame) -> DataFrame:
    """Overall accuracy (scope ``all``) and per demand pattern (``pattern=<p>``), from the
    per-SKU backtest rows with at least one evaluated point."""
    evaluated = accuracy.filter(F.col("n_points") > 0)
    overall = evaluated.agg(*overall_accuracy_columns()).withColumn(SCOPE, F.lit("all"))
    by_pattern = (evaluated.groupBy("pattern").agg(*overall_accuracy_columns())
                  .withColumn(SCOPE, F.concat(F.lit("pattern="), F.col("pattern"))).drop("pattern"))
    return overall.unionByName(by_pattern)


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def run(spark: SparkSession, conf: Conf) -> dict:
    """Forecast every active SKU and backtest it against seasonal naive; write
    gold.demand_forecast, gold.forecast_accuracy and gold.forecast_accuracy_summary (each a
    whole-table replace). Returns the run summary; the overall accuracy is in its metrics
    (``mase``, ``baseline_mase``, ``wape``, ...) and printed."""
    params = forecast_params(conf)
    partitions = default_partitions(spark, conf.forecast.partitions)
    with JobRun(spark, conf, "forecast", conf.forecast) as run:
        demand = run.read("gold.sku_daily_demand")
        as_of = run.as_of()
        history = filter_active_history(demand, as_of, conf.forecast.active_days).persist()
        # The fits run once: the first write computes and caches every partition, the second
        # reads the cache.
        combined = forecast_and_backtest_skus(history, params, partitions).persist(
            StorageLevel.MEMORY_AND_DISK)
        try:
            run.rows_in = history.count()
            forecasts = (split_forecasts(combined)
                         .withColumn(HORIZON_DAY, F.datediff(F.col(C.DATE), F.lit(as_of))))
            run.rows_out = run.write(forecasts.withColumn(AS_OF, F.lit(as_of)), "gold.demand_forecast")
            run.write(split_accuracy(combined).withColumn(AS_OF, F.lit(as_of)), "gold.forecast_accuracy")
        finally:
            combined.unpersist()
            history.unpersist()
        summary = accuracy_summary(run.read_output("gold.forecast_accuracy"))
        run.write(summary.withColumn(AS_OF, F.lit(as_of)), "gold.forecast_accuracy_summary")
        record_accuracy(run)
    return run.summary()


def record_accuracy(run: JobRun) -> None:
    """SKUs forecast and fallen back, and the overall backtest figures, in the run record."""
    counts = (run.read_output("gold.demand_forecast").groupBy(C.SKU).agg(F.first("status").alias("status"))
              .agg(F.count("*").alias("skus"),
                   F.count_if(F.col("status") == "fallback").alias("fallback"))).first()
    run.metric("skus_forecast", int(counts["skus"]))
    run.metric("skus_fallback", int(counts["fallback"]))
    summary = (run.read_output("gold.forecast_accuracy_summary").filter(F.col(SCOPE) == "all").first())
    if summary is None:
        run.note("backtest: no SKU had enough history for a backtest window")
        return
    for name in ("n_skus", "n_points", "share_beats_baseline",
                 *_OVERALL_METRICS, *(f"baseline_{m}" for m in _OVERALL_METRICS)):
        value = summary[name]
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            run.metric(name, float(value), key=(name == "mase"))
    run.note("backtest overall: " + ", ".join(
        f"{m.upper()} {_fmt(summary[m])} (seasonal naive {_fmt(summary['baseline_' + m])})"
        for m in _OVERALL_METRICS)
        + f"; beats seasonal naive on {_fmt(summary['share_beats_baseline'])} of SKUs")
