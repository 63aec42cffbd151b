"""The demand and forecast jobs on small Delta tables: daily demand, odd SKUs, parity of the
Spark overall accuracy with the pandas reference, idempotency, failures, accuracy vs naive."""

import datetime as dt
import functools
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopsense.core import columns as C
from shopsense.core.config import ConfigError
from shopsense.supply import demand
from shopsense.supply import forecast
from shopsense.core import tables
from shopsense.core.runs import read_runs
from shopsense.ingest import sample
from shopsense.supply.forecast_metrics import overall_accuracy
from tests.helpers import make_conf, silver_from_sample

D0 = dt.date(2024, 1, 1)


def order_lines(spark, rows):
    """silver.order_lines rows from (sku, date, quantity, unit_price[, line_type, is_guest,
    is_product]) tuples; the other columns get plausible values."""
    out = []
    for i, r in enumerate(rows):
        sku, day, qty, price = r[:4]
        kind = r[4] if len(r) > 4 else ("sale" if qty > 0 else "return")
        guest = r[5] if len(r) > 5 else False
        product = r[6] if len(r) > 6 else True
        ts = dt.datetime.combine(day, dt.time(10, 0))
        out.append((f"l{i}", f"o{i}", None if guest else "c1", guest, sku, None, None, None,
                    float(qty), float(price), float(qty * price), ts, day, kind, product, "f",
                    "r", ts))
    return spark.createDataFrame(out, schema=tables.ORDER_LINES)


def day(n):
    return D0 + dt.timedelta(days=n)


def test_daily_demand_is_net_zero_filled_with_promo_flag(spark, conf_factory):
    conf = conf_factory("as_of=\"2024-01-05\"")
    lines = order_lines(spark, [
        ("A", day(0), 2, 10.0),
        ("A", day(0), 1, 10.0, "sale", True),          # guest sale counts
        ("A", day(1), -1, 10.0),                       # return
        ("A", day(1), 1, 10.0),
        ("A", day(3), 4, 8.0),                         # 20 % below usual: promo
        ("A", day(3), -4, 8.0, "cancellation"),
        ("A", day(9), 5, 10.0),                        # after as_of: left out
        ("B", day(2), -2, 3.0),                        # only a return: no rows
        ("POST", day(0), 1, 18.0, "sale", False, False),  # not a product
    ])
    tables.overwrite(lines, conf, "silver.order_lines")
    summary = demand.run(spark, conf)
    got = tables.read_table(spark, conf, "gold.sku_daily_demand").drop(C.RUN_ID, C.COMPUTED_AT)
    expected = spark.createDataFrame([
        ("A", day(0), 3.0, 3.0, 0.0, 2, 10.0, 10.0, False),
        ("A", day(1), 0.0, 1.0, 1.0, 1, 10.0, 10.0, False),
        ("A", day(2), 0.0, 0.0, 0.0, 0, None, 10.0, None),
        ("A", day(3), 0.0, 4.0, 4.0, 1, 8.0, 10.0, True),
        ("A", day(4), 0.0, 0.0, 0.0, 0, None, 10.0, None),
    ], schema="sku string, date date, units double, sale_units double, return_units double, "
                    "n_orders bigint, avg_price double, usual_price double, promo boolean")
    assertDataFrameEqual(got, expected)
    assert summary["metrics"]["skus"] == 1 and summary["rows_out"] == 5


def demand_frame(spark, series: dict[str, list], end: dt.date):
    """gold.sku_daily_demand rows: each SKU's units end on ``end`` (None -> null units)."""
    rows = []
    for sku, units in series.items():
        start = end - dt.timedelta(days=len(units) - 1)
        for i, u in enumerate(units):
            rows.append((sku, start + dt.timedelta(days=i), None if u is None else float(u)))
    df = spark.createDataFrame(rows, "sku string, date date, units double")
    for name in ("sale_units", "return_units"):
        df = df.withColumn(name, F.lit(0.0))
    return (df.withColumn("n_orders", F.lit(0).cast("bigint"))
            .withColumn("avg_price", F.lit(None).cast("double"))
            .withColumn("usual_price", F.lit(None).cast("double"))
            .withColumn("promo", F.lit(None).cast("boolean"))
            .withColumn(C.RUN_ID, F.lit("test")).withColumn(C.COMPUTED_AT, F.current_timestamp()))


def smooth(n, level=20.0, seed=0):
    rng = np.random.default_rng(seed)
    week = np.array([1.0, 0.9, 0.95, 1.05, 1.2, 1.4, 0.5])
    return rng.poisson(level * week[np.arange(n) % 7]).astype(float).tolist()


def test_every_active_odd_sku_gets_horizon_rows_with_a_status(spark, conf_factory):
    end = dt.date(2024, 6, 30)
    nan_bearing = smooth(120, seed=2)
    nan_bearing[50] = None
    nan_bearing[100] = float("nan")
    lumpy = [0.0] * 150
    lumpy[70] = 40.0
    series = {
        "constant": [3.0] * 60,
        "single_day": [5.0],
        "nan_bearing": nan_bearing,
        "mostly_zero": lumpy,                 # one sale 80 days ago, nothing since
        "intermittent": ([0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 1.0] * 20),
        "very_long": smooth(5 * 365, seed=3),
        "stale": [4.0] * 30 + [0.0] * 100,    # last sale 100 days ago: not active
    }
    conf = conf_factory("forecast.horizon=7", "forecast.backtest_windows=2",
                        "forecast.max_history_days=400", "forecast.arima_fit_days=200",
                        "forecast.active_days=90", f"as_of={end}")
    tables.overwrite(demand_frame(spark, series, end), conf, "gold.sku_daily_demand")
    summary = forecast.run(spark, conf)

    fc = tables.read_table(spark, conf, "gold.demand_forecast")
    per_sku = (fc.groupBy(C.SKU).agg(
        F.count("*").alias("rows"), F.min(C.DATE).alias("first"), F.max("horizon_day").alias("h"),
        F.count_if(F.col("status").isNull() | F.col("model").isNull()).alias("no_status"),
        F.count_if((F.col("lo95") < 0) | (F.col("forecast") < F.col("lo80"))
                   | (F.col("hi95") < F.col("hi80"))).alias("bad_bounds")))
    active = [s for s in series if s != "stale"]
    assertDataFrameEqual(per_sku, spark.createDataFrame(
        [(s, 7, dt.date(2024, 7, 1), 7, 0, 0) for s in active],
        "sku string, rows bigint, first date, h int, no_status bigint, bad_bounds bigint"))
    statuses = {r["sku"]: (r["model"], r["status"], r["reason"])
                for r in fc.filter("horizon_day = 1").collect()}
    assert statuses["constant"][:2] == ("constant", "ok")
    assert statuses["single_day"][:2] == ("mean", "fallback")
    assert "too_short" in statuses["single_day"][2]
    assert "nan_values_filled" in statuses["nan_bearing"][2]
    assert statuses["very_long"][0].startswith("arima(")
    assert summary["metrics"]["skus_forecast"] == len(active)

    # The Spark overall figures mirror the pandas reference on the same per-SKU rows.
    acc = tables.read_table(spark, conf, "gold.forecast_accuracy")
    assert acc.count() == len(active)
    reference = overall_accuracy(acc.toPandas())
    overall = (tables.read_table(spark, conf, "gold.forecast_accuracy_summary")
               .filter("scope = 'all'").first().asDict())
    for key in ("n_skus", "n_points", "n_skus_mase", "mae", "rmse", "wape", "smape", "bias",
                "mase", "baseline_mae", "baseline_mase", "share_beats_baseline"):
        if isinstance(reference[key], float) and math.isnan(reference[key]):
            assert overall[key] is None or math.isnan(overall[key]), key
        else:
            assert overall[key] == pytest.approx(reference[key], rel=1e-9), key
    assert summary["metrics"]["mase"] == pytest.approx(reference["mase"])

    # Run twice: the tables are replaced with the same content.
    forecast.run(spark, conf)
    again = tables.read_table(spark, conf, "gold.demand_forecast")
    assert again.count() == fc.count()
    assertDataFrameEqual(again.drop(C.RUN_ID, C.COMPUTED_AT), fc.drop(C.RUN_ID, C.COMPUTED_AT))


def test_forecast_without_demand_table_fails_naming_it(spark, conf):
    with pytest.raises(tables.TableNotFoundError, match="gold.sku_daily_demand does not exist"):
        forecast.run(spark, conf)
    runs = read_runs(spark, conf).select("job", "status").collect()
    assert [tuple(r) for r in runs] == [("forecast", "failed")]


def test_invalid_forecast_parameters_are_named(conf_factory):
    with pytest.raises(ConfigError, match="--set: forecast.active_days must be >= 1, got 0"):
        conf_factory("forecast.active_days=0")
    with pytest.raises(ConfigError, match="--set: forecast.horizon must be >= 1, got 0"):
        conf_factory("forecast.horizon=0")


#: Big enough for 24 planted-smooth SKUs selling ~10-40 units a day: 600 customers, 40 SKUs (10
#: companions, 6 intermittent slow movers), 18 months (the forecast fits the last 52 weeks, the
#: backtest's three 28-day windows end on the last day).
SAMPLE_SPEC = sample.SampleSpec(n_customers=600, n_skus=40, n_days=548, seed=42)
#: Generator seeds the chosen models must beat seasonal naive on. Measured on 1 Dec 2026: of 24
#: planted-smooth SKUs 24, 22, 24 beat it (23, 23, 22 got ARIMA); overall MASE 0.785, 0.870,
#: 0.761 times seasonal naive's.
SAMPLE_SEEDS = (42, 43, 44)


@pytest.fixture(scope="module")
def sample_accuracy(spark, tmp_path_factory):
    """gold.forecast_accuracy of one demand + forecast run on the samples of every SAMPLE_SEEDS
    seed together, each SKU named after its seed ("42:S00001"), with the SKU's planted pattern
    and seed (pandas, one row per SKU). Every SKU's model and backtest depend on its own series
    only, so one run gives each seed's rows as a run on that seed alone would. The order lines
    go to silver directly (ingest has its own tests): demand reads nothing else."""
    conf = make_conf(tmp_path_factory.mktemp("forecast-sample") / "warehouse")
    lines, truth = [], []
    for seed in SAMPLE_SEEDS:
        spec = replace(SAMPLE_SPEC, seed=seed)
        named = F.concat(F.lit(f"{seed}:"), F.col(C.SKU))
        lines.append(silver_from_sample(sample.order_lines(spark, spec)).withColumn(C.SKU, named))
        truth.append(sample.truth_tables(spark, spec)["skus"].select(
            named.alias(C.SKU), F.lit(seed).alias("seed"), F.col("pattern").alias("planted")))
    tables.overwrite(functools.reduce(DataFrame.unionByName, lines), conf, "silver.order_lines")
    demand.run(spark, conf)
    forecast.run(spark, conf)
    return (tables.read_table(spark, conf, "gold.forecast_accuracy")
            .join(functools.reduce(DataFrame.unionByName, truth), C.SKU).toPandas())


@pytest.mark.slow
@pytest.mark.parametrize("seed", SAMPLE_SEEDS)
def test_chosen_models_beat_seasonal_naive_on_sample_data(sample_accuracy, seed):
    """The acceptance test: on the shared generator's data, the chosen models beat seasonal
    naive on MASE for at least 85 % of the planted-smooth SKUs, and overall by at least 8 %.

    "Smooth" is the generator's planted truth (truth/skus.pattern), not our classifier's label:
    the test must not be able to pass by the classifier sending hard SKUs elsewhere: every
    planted-smooth SKU is judged, whatever model it got. Nearly all get ARIMA (the classifier
    calls them smooth or erratic); a planted-smooth SKU at the thin end of its taste block can
    sell on too few days and be called intermittent (TSB), as it should."""
    acc = sample_accuracy[sample_accuracy["seed"] == seed]
    overall = overall_accuracy(acc)     # what the job's summary says of a run on this seed alone
    smooth_rows = acc[acc["planted"] == "smooth"]
    share = float((smooth_rows["mase"] < smooth_rows["baseline_mase"]).mean())
    arima = float((smooth_rows["model_family"] == "arima").mean())
    print(f"seed {seed}: planted-smooth SKUs: {len(smooth_rows)}, ARIMA {arima:.2f}, beat seasonal naive "
          f"on MASE: {share:.2f}; mean MASE {smooth_rows['mase'].mean():.3f} vs "
          f"{smooth_rows['baseline_mase'].mean():.3f}; overall MASE {overall['mase']:.3f} "
          f"vs {overall['baseline_mase']:.3f}")
    assert len(smooth_rows) >= 15, acc[["sku", "planted", "pattern", "model"]]
    assert arima >= 0.9, smooth_rows[["sku", "pattern", "model"]]
    assert share >= 0.85, smooth_rows[["sku", "model", "mase", "baseline_mase"]]
    assert overall["mase"] <= 0.92 * overall["baseline_mase"]


@pytest.mark.real_data
@pytest.mark.slow
def test_online_retail_every_recently_sold_sku_is_forecast(spark, retail_conf_factory):
    """Ingest + demand + forecast on the Online Retail export, with a short horizon and one
    backtest window to keep it to minutes (the full-setting figures are in docs/forecast.md)."""
    conf = retail_conf_factory("forecast.horizon=7", "forecast.backtest_windows=1",
                        "forecast.arima_max_models=4", "forecast.time_budget_seconds=5.0")
    demand.run(spark, conf)
    summary = forecast.run(spark, conf)

    daily = tables.read_table(spark, conf, "gold.sku_daily_demand")
    as_of = daily.agg(F.max(C.DATE)).first()[0]
    sold = (daily.filter((F.col(C.DATE) > F.lit(as_of - dt.timedelta(days=90))) & (F.col("units") > 0))
            .select(C.SKU).distinct())
    fc = tables.read_table(spark, conf, "gold.demand_forecast")
    per_sku = fc.groupBy(C.SKU).agg(F.count("*").alias("rows"),
                                    F.count_if(F.col("status").isNull()).alias("no_status"))
    assert per_sku.filter("rows != 7 or no_status > 0").count() == 0
    assert sold.join(per_sku, C.SKU, "left_anti").count() == 0
    assert per_sku.count() == sold.count() == summary["metrics"]["skus_forecast"]
    print({k: summary["metrics"].get(k) for k in ("skus_forecast", "skus_fallback", "mase",
                                                   "baseline_mase", "wape", "baseline_wape")})
