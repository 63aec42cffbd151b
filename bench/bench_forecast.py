"""Benchmark: per-SKU forecasting three ways on the same series, in one run.

1. shopsense's job: ``groupBy(sku).applyInPandas(forecast_one_sku)`` (shopsense.supply.forecast.forecast_skus)
2. statsforecast's AutoARIMA(season_length=7) (its defaults otherwise: exact likelihood,
   stepwise), one StatsForecast(n_jobs=1) per group in the same ``applyInPandas`` layout, fed the
   same last ``arima_fit_days`` (364) days shopsense's ARIMA is fitted on (``--statsforecast-days
   0``: the whole history, ~1.75x slower, same accuracy on this data)
3. shopsense's ``forecast_one_sku`` in a single-process Python loop

Fairness: both Spark methods use the same partitioning (``--partitions``, default 4 per task
slot) and the same warmed-up Python workers: before timing, every worker imports both libraries
and fits one short series with each (statsforecast 2.x compiles nothing at run time, but any
one-off set-up cost is paid there, not in the timed runs).

Each forecasts ``--horizon`` days after the first ``n_days - horizon`` days of ``--n-series``
synthetic daily retail series (Poisson demand with weekly pattern, trend, yearly swing and
level shifts; seeded); accuracy is the MASE on the held-out last ``horizon`` days (scale: the
in-sample seasonal naive MAE), also for the seasonal naive forecast. Prints times, ratios and
the machine load. Not a test: run it by hand, e.g.

    .venv/bin/pip install statsforecast psutil     # the `bench` extra
    .venv/bin/python bench/bench_forecast.py --n-series 2000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from shopsense.supply.forecast_methods import seasonal_naive_forecast  # noqa: E402
from shopsense.supply.forecast_metrics import mase_scale  # noqa: E402
from shopsense.supply.forecast_models import ForecastParams, forecast_one_sku  # noqa: E402

WEEK = np.array([1.0, 0.9, 0.95, 1.05, 1.2, 1.4, 0.5])


def make_series(n_series: int, n_days: int, seed: int) -> pd.DataFrame:
    """Long frame (sku, date, units) of smooth-to-erratic daily retail demand."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_days)
    dates = pd.date_range("2023-01-01", periods=n_days, freq="D")
    frames = []
    for k in range(n_series):
        level = float(np.exp(rng.uniform(np.log(2.0), np.log(80.0))))
        trend = rng.normal(0.0, 0.0006)
        weekly = 1 + rng.uniform(0.2, 1.0) * (WEEK - 1)
        yearly = 1 + rng.uniform(0.0, 0.25) * np.sin(2 * np.pi * (t + rng.integers(365)) / 365.25)
        shift = np.where(t >= rng.integers(n_days // 3, n_days), rng.uniform(0.7, 1.3), 1.0)
        lam = level * np.maximum(0.05, 1 + trend * t) * weekly[t % 7] * yearly * shift
        units = rng.poisson(lam).astype(float)
        frames.append(pd.DataFrame({"sku": f"sku{k:05d}", "date": dates, "units": units}))
    return pd.concat(frames, ignore_index=True)


def statsforecast_one_sku(history: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """AutoARIMA(season_length=7) for one SKU, single-threaded, as (sku, date, forecast)."""
    from statsforecast import StatsForecast
    from statsforecast.models import AutoARIMA

    df = history.rename(columns={"sku": "unique_id", "date": "ds", "units": "y"})
    df["ds"] = pd.to_datetime(df["ds"])
    sf = StatsForecast(models=[AutoARIMA(season_length=7)], freq="D", n_jobs=1)
    fc = sf.forecast(df=df, h=horizon, level=[80, 95])
    return pd.DataFrame({"sku": fc["unique_id"].astype(str).to_numpy(),
                         "date": pd.to_datetime(fc["ds"]).dt.date.to_numpy(),
                         "forecast": np.clip(fc["AutoARIMA"].to_numpy(dtype=float), 0, None)})


def warm_up(history: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Import both libraries and fit one short series with each, once per Python worker
    process (marked in its environment, which outlives tasks), so no timed method pays for
    imports or one-off set-up."""
    if not os.environ.get("SHOPSENSE_BENCH_WARM"):
        short = history.sort_values("date").tail(120)
        forecast_one_sku(short, ForecastParams(horizon=horizon))
        try:
            statsforecast_one_sku(short, horizon)
        except ImportError:
            pass
        os.environ["SHOPSENSE_BENCH_WARM"] = "1"
    return history.head(0)[["sku"]]


def spark_cpu_seconds() -> float:
    """CPU seconds used so far by this process's descendants (the Spark JVM and its Python
    workers), a load-independent measure of what the Spark runs cost; NaN without psutil."""
    try:
        import psutil
    except ImportError:
        return float("nan")
    total = 0.0
    for proc in psutil.Process().children(recursive=True):
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def mase_table(train: pd.DataFrame, test: pd.DataFrame, fc: pd.DataFrame, horizon: int) -> pd.Series:
    """Per-SKU MASE of ``fc`` (sku, date, forecast) on ``test``."""
    fc = fc.assign(date=pd.to_datetime(fc["date"]))
    merged = test.merge(fc[["sku", "date", "forecast"]], on=["sku", "date"], how="left")
    out = {}
    for sku, g in merged.groupby("sku"):
        y_train = train.loc[train["sku"] == sku, "units"].to_numpy()
        scale = mase_scale(y_train, 7)
        yhat = g["forecast"].to_numpy(dtype=float)
        out[sku] = np.mean(np.abs(g["units"].to_numpy() - yhat)) / scale if scale > 0 else np.nan
    return pd.Series(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-series", type=int, default=2000)
    parser.add_argument("--n-days", type=int, default=730)
    parser.add_argument("--horizon", type=int, default=28)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-statsforecast", action="store_true")
    parser.add_argument("--partitions", type=int, default=0, help="0: the job's default, 4 per task slot")
    parser.add_argument("--statsforecast-days", type=int, default=364,
                        help="days of history statsforecast gets (0: all); default: the 364 "
                             "days shopsense's ARIMA is fitted on")
    args = parser.parse_args()
    started = time.perf_counter()

    import functools

    from pyspark.sql import functions as F

    from shopsense.core.config import conf_dir, load_conf
    from shopsense.supply.forecast import default_partitions, forecast_skus
    from shopsense.core.session import build_session

    try:
        import psutil
        cores = psutil.cpu_count(logical=True)
    except ImportError:
        cores = os.cpu_count()
    h = args.horizon
    data = make_series(args.n_series, args.n_days, args.seed)
    cutoff = data["date"].max() - pd.Timedelta(days=h)
    train, test = data[data["date"] <= cutoff], data[data["date"] > cutoff]
    params = ForecastParams(horizon=h)

    warehouse = tempfile.mkdtemp(prefix="bench-forecast-")
    conf = load_conf([conf_dir() / "local.yaml"], [f"warehouse={warehouse}", "spark.progress_bar=false"])
    spark = build_session(conf)
    partitions = default_partitions(spark, args.partitions)
    print(f"{args.n_series} series x {args.n_days} days, horizon {h}; Spark {spark.sparkContext.master}, "
          f"{partitions} partitions, {cores} cores; load average before {os.getloadavg()}")
    sdf = spark.createDataFrame(train.assign(date=train["date"].dt.date)).persist()
    sdf.count()

    warm = functools.partial(warm_up, horizon=h)
    sdf.repartition(partitions, "sku").groupBy("sku").applyInPandas(warm, "sku string").count()
    sf_train = train
    if args.statsforecast_days:
        sf_train = train[train["date"] > cutoff - pd.Timedelta(days=args.statsforecast_days)]
    sf_sdf = spark.createDataFrame(sf_train.assign(date=sf_train["date"].dt.date)).persist()
    sf_sdf.count()
    results: dict[str, tuple[float, pd.DataFrame]] = {}

    cpu: dict[str, float] = {}
    t0, c0 = time.perf_counter(), spark_cpu_seconds()
    fc = forecast_skus(sdf, params, partitions).toPandas()
    results["shopsense job (applyInPandas)"] = (time.perf_counter() - t0, fc)
    cpu["shopsense job (applyInPandas)"] = spark_cpu_seconds() - c0
    print(f"  shopsense job done in {results['shopsense job (applyInPandas)'][0]:.1f}s; "
          f"load {os.getloadavg()}", flush=True)

    if not args.skip_statsforecast:
        fn = functools.partial(statsforecast_one_sku, horizon=h)
        t0, c0 = time.perf_counter(), spark_cpu_seconds()
        fc = (sf_sdf.repartition(partitions, "sku").groupBy("sku")
              .applyInPandas(fn, "sku string, date date, forecast double").toPandas())
        results["statsforecast AutoARIMA (applyInPandas)"] = (time.perf_counter() - t0, fc)
        cpu["statsforecast AutoARIMA (applyInPandas)"] = spark_cpu_seconds() - c0
        print(f"  statsforecast done in {results['statsforecast AutoARIMA (applyInPandas)'][0]:.1f}s; "
              f"load {os.getloadavg()}", flush=True)

    t0, c0 = time.perf_counter(), time.process_time()
    fc = pd.concat([forecast_one_sku(g, params) for _, g in train.groupby("sku")], ignore_index=True)
    results["shopsense loop (1 process)"] = (time.perf_counter() - t0, fc)
    cpu["shopsense loop (1 process)"] = time.process_time() - c0
    print(f"  shopsense loop done in {results['shopsense loop (1 process)'][0]:.1f}s; "
          f"load {os.getloadavg()}", flush=True)

    naive = []
    for sku, g in train.groupby("sku"):
        mean = seasonal_naive_forecast(g["units"].to_numpy(), h, 7).mean
        naive.append(pd.DataFrame({"sku": sku, "date": pd.date_range(cutoff + pd.Timedelta(days=1), periods=h),
                                   "forecast": mean}))
    naive_mase = mase_table(train, test, pd.concat(naive), h)

    base = results["shopsense job (applyInPandas)"][0]
    print(f"\nload average after {os.getloadavg()}")
    print(f"{'method':42s} {'seconds':>9s} {'s/series':>9s} {'vs job':>7s} {'CPU s/series':>12s} "
          f"{'MASE':>7s} {'beats naive':>11s}")
    for name, (secs, fc) in results.items():
        m = mase_table(train, test, fc, h)
        print(f"{name:42s} {secs:9.1f} {secs / args.n_series:9.3f} {secs / base:6.2f}x "
              f"{cpu[name] / args.n_series:12.3f} {m.mean():7.3f} {float((m < naive_mase).mean()):11.2f}")
    print(f"{'seasonal naive':42s} {'':9s} {'':9s} {'':7s} {naive_mase.mean():7.3f}")
    print(f"whole benchmark {time.perf_counter() - started:.0f}s")
    spark.stop()


if __name__ == "__main__":
    main()
