"""The customer-value job: what each customer is worth and how likely they are to buy soon, as
of the as-of date, from BG/NBD (repeat purchases) and Gamma-Gamma (order value); see
:mod:`shopsense.customers.value_models` for the models and docs/value.md for the contract.

Data flow, none of it on the driver but the fit's grouped input:

1. Spark: each identified customer's purchase days up to as_of (product sale lines; several
   orders on one day are one purchase, as the literature counts them) and from them (x, t_x, T)
   in the model's time unit (``value.time_unit_days``, weeks by default) and m_x, the mean value
   of the repeat purchase days.
2. Spark: the customers grouped by (x, t_x, T) with their count; when there are more groups than
   ``value.max_fit_groups``, t_x and T are grouped to a coarser grid of days (2, 4, 8, …; each
   group at its mean t_x and T) until there are not. Repeat buyers likewise by (x, m_x to
   ``value.value_digits`` significant digits). Only those groups reach the driver.
3. scipy: maximum likelihood on the groups, counts as weights. A fit that does not converge is
   tried again with a small penalty (``value.penalty``), and the run record says so; if that
   fails too, the job fails with the reason and writes nothing.
4. Spark (``mapInPandas``, parameters in the closure): every customer scored.

With ``value.holdout_days`` set, the models are also fitted as of as_of − holdout_days and their
predicted repeat purchases in the hold-out days compared, customer by customer, with the actual
ones and with a naive constant-rate prediction (x / T per unit of time): gold.customer_value_metrics.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.core.config import Conf
from shopsense.core.errors import require_columns
from shopsense.core.runs import JobRun
from shopsense.core.settings import ValueSection
from shopsense.customers import value_models as M
from shopsense.customers.features import filter_customer_lines

# Sources of a row's order value.
SOURCE_MODEL = "model"                       # repeat buyer: Gamma-Gamma's posterior mean
SOURCE_POPULATION = "population_order_value"  # no repeat purchase: the population mean
SOURCE_NO_VALUE = "no_order_value_model"      # Gamma-Gamma not identified: no value, no CLV

CUSTOMER_VALUE = T.StructType([
    T.StructField(C.CUSTOMER_ID, T.StringType(), False),
    T.StructField(C.AS_OF, T.DateType(), False),
    T.StructField("first_purchase_date", T.DateType(), False),
    T.StructField("frequency", T.LongType(), False),          # x: repeat purchase days
    T.StructField("recency", T.DoubleType(), False),          # t_x, time units after the first
    T.StructField("age", T.DoubleType(), False),              # T, time units since the first
    T.StructField("time_unit_days", T.DoubleType(), False),
    T.StructField("mean_repeat_value", T.DoubleType(), True),  # m_x; null without a repeat
    T.StructField("p_alive", T.DoubleType(), False),
    T.StructField("expected_purchases_30d", T.DoubleType(), False),
    T.StructField("expected_purchases_90d", T.DoubleType(), False),
    T.StructField("expected_purchases_365d", T.DoubleType(), False),
    T.StructField("p_purchase_30d", T.DoubleType(), False),
    T.StructField("expected_order_value", T.DoubleType(), True),
    T.StructField("clv_12m", T.DoubleType(), True),
    T.StructField("source", T.StringType(), False),
    *tables.RUN_COLUMNS,
])

CUSTOMER_VALUE_METRICS = T.StructType([
    T.StructField(C.AS_OF, T.DateType(), False),
    T.StructField("scope", T.StringType(), False),   # fit | holdout
    T.StructField("model", T.StringType(), False),   # bgnbd | gamma_gamma | naive
    T.StructField("metric", T.StringType(), False),
    T.StructField("value", T.DoubleType(), True),
    T.StructField("note", T.StringType(), True),
    *tables.RUN_COLUMNS,
])

REQUIRED_INPUT = (C.CUSTOMER_ID, C.IS_GUEST, C.IS_PRODUCT, C.LINE_TYPE, C.ORDER_DATE, C.REVENUE)
_SCORED = tables.without_run_columns(CUSTOMER_VALUE)
_METRICS = tables.without_run_columns(CUSTOMER_VALUE_METRICS)


class CustomerValueError(ValueError):
    """The value job's input or models do not allow a result; the message says why."""


# --------------------------------------------------------------------------------------------
# Spark: purchase days and summaries

def purchase_days(order_lines: DataFrame, as_of: dt.date, start: dt.date | None = None) -> DataFrame:
    """(customer_id, order_date, value): one row per identified customer and day with a product
    sale on or before ``as_of`` (after ``start`` when given), value the day's sales revenue."""
    require_columns(order_lines, REQUIRED_INPUT, "order lines", CustomerValueError)
    keep = (F.col(C.LINE_TYPE) == C.LINE_SALE) & (F.col(C.ORDER_DATE) <= F.lit(as_of))
    if start is not None:
        keep &= F.col(C.ORDER_DATE) > F.lit(start)
    return (filter_customer_lines(order_lines).filter(keep)
            # exact decimal sums: the same value whatever order Spark adds the lines in
            .groupBy(C.CUSTOMER_ID, C.ORDER_DATE)
            .agg(F.sum(F.col(C.REVENUE).cast("decimal(30,6)")).alias("value")))


def summaries(days: DataFrame, as_of: dt.date, unit_days: float) -> DataFrame:
    """One row per customer: first_purchase_date, x (repeat purchase days), t_x and T in time
    units (and in days: t_x_days, T_days), m_x (mean value of the repeat days; null when x = 0)."""
    first = F.min(C.ORDER_DATE)
    per = days.groupBy(C.CUSTOMER_ID).agg(
        first.alias("first_purchase_date"), F.max(C.ORDER_DATE).alias("last"),
        F.count("*").alias("n"), F.sum("value").alias("total"),
        F.min_by("value", C.ORDER_DATE).alias("first_value"))
    t_x_days = F.datediff("last", "first_purchase_date")
    T_days = F.datediff(F.lit(as_of), "first_purchase_date")
    return per.select(
        C.CUSTOMER_ID, "first_purchase_date",
        (F.col("n") - 1).alias("x"),
        t_x_days.alias("t_x_days"), T_days.alias("T_days"),
        (t_x_days / F.lit(unit_days)).alias("t_x"), (T_days / F.lit(unit_days)).alias("T"),
        F.when(F.col("n") > 1, ((F.col("total") - F.col("first_value")) / (F.col("n") - 1))
               .cast("double")).alias("m_x"))


def bgnbd_groups(summary: DataFrame, unit_days: float, max_groups: int) -> tuple[pd.DataFrame, int]:
    """The fit's input: (x, t_x, T, weight) grouped at the finest grid of days (1, 2, 4, …) that
    gives at most ``max_groups`` groups, each group at its customers' mean t_x and T; returns
    (groups, grid days)."""
    grid = 1
    while True:
        grouped = (summary.groupBy("x", F.floor(F.col("t_x_days") / grid).alias("_t"),
                                   F.floor(F.col("T_days") / grid).alias("_T"))
                   # means of whole days (exact sums in any order), then in time units
                   .agg((F.avg("t_x_days") / F.lit(unit_days)).alias("t_x"),
                        (F.avg("T_days") / F.lit(unit_days)).alias("T"), F.count("*").alias("weight")))
        # one action, and never more than max_groups + 1 rows on the driver
        groups = grouped.select("x", "t_x", "T", "weight")
        groups = (groups if grid >= 4096 else groups.limit(max_groups + 1)).toPandas()
        if len(groups) <= max_groups or grid >= 4096:
            # sorted: the likelihood sums in the same order in every run
            return groups.sort_values(["x", "t_x", "T"], ignore_index=True), grid
        grid *= 2


def gamma_gamma_groups(summary: DataFrame, digits: int, max_groups: int) -> tuple[pd.DataFrame, int]:
    """Repeat buyers with a positive mean value grouped by (x, m_x rounded to ``digits``
    significant digits), each group at its rounded value, fewer digits until at most
    ``max_groups`` groups; returns (groups, digits). (The rounded value, not the group's mean:
    a mean of sums taken in another order differs in its last bits, and the fit with it.)"""
    buyers = summary.filter((F.col("x") > 0) & (F.col("m_x") > 0))
    while True:
        magnitude = F.pow(F.lit(10.0), F.floor(F.log10("m_x")) - (digits - 1))
        grouped = (buyers.groupBy("x", F.round(F.col("m_x") / magnitude).alias("_m"), magnitude.alias("_e"))
                   .agg(F.count("*").alias("weight"))
                   .withColumn("m_x", F.col("_m") * F.col("_e")))
        groups = grouped.select("x", "m_x", "weight")
        groups = (groups if digits <= 1 else groups.limit(max_groups + 1)).toPandas()
        if len(groups) <= max_groups or digits <= 1:
            return groups.sort_values(["x", "m_x"], ignore_index=True), digits
        digits -= 1


def simulated_summaries(spark, params: dict, n_customers: int, max_age_days: int, seed: int,
                        unit_days: float = 7.0, partitions: int = 8) -> DataFrame:
    """Summaries (the columns of :func:`summaries`, m_x null) of ``n_customers`` drawn from the
    BG/NBD model with ``params``, first purchases spread uniformly over ``max_age_days`` before
    as_of, whole days as in real data: for benchmarks and scale tests. Each partition draws
    its own customers (seeded by seed and partition), so nothing of the size reaches the driver."""
    per = -(-n_customers // partitions)

    def draw(batches):
        for batch in batches:
            for part in batch["part"]:
                rng = np.random.default_rng([seed, int(part)])
                n = min(per, n_customers - int(part) * per)
                if n <= 0:
                    continue
                T_days = rng.integers(0, max_age_days + 1, n)
                x, t_x = M.bgnbd_simulate(params, n, T_days / unit_days, rng)
                t_x_days = np.minimum(np.round(t_x * unit_days), T_days).astype("int64")
                yield pd.DataFrame({
                    C.CUSTOMER_ID: [f"c{part}-{i}" for i in range(n)],
                    "first_purchase_date": dt.date(2000, 1, 1), "x": x.astype("int64"),
                    "t_x_days": t_x_days, "T_days": T_days.astype("int64"),
                    "t_x": t_x_days / unit_days, "T": T_days / unit_days, "m_x": np.nan})

    schema = ("customer_id string, first_purchase_date date, x long, t_x_days long, T_days long, "
              "t_x double, T double, m_x double")
    parts = spark.range(partitions).withColumnRenamed("id", "part").repartition(partitions)
    return parts.mapInPandas(draw, schema)


# --------------------------------------------------------------------------------------------
# Fitting, with the retry

def fit_with_retry(run: JobRun | None, what: str, fit, penalty: float) -> M.Fit:
    """``fit(penalty)``: plain maximum likelihood, then once more with ``penalty`` when it did
    not converge (noted in the run record). Raises ModelNotIdentified when neither converged."""
    result = fit(0.0)
    if result.converged:
        return result
    retried = fit(penalty)
    if run is not None:
        run.note(f"{what}: the maximum-likelihood fit did not converge ({result.message}); "
                 f"fitted again with penalty {penalty} on the squared parameters: "
                 f"{'converged' if retried.converged else 'did not converge either'}")
    if not retried.converged:
        raise M.ModelNotIdentified(f"{what}: the fit did not converge, not even with penalty "
                                   f"{penalty} ({retried.message}; parameters {retried.params})")
    return retried


def fit_bgnbd(run: JobRun | None, summary: DataFrame, settings: ValueSection) -> tuple[M.Fit, dict]:
    """(BG/NBD fit, info: its group count and grid) on the grouped summaries, with the retry."""
    groups, grid = bgnbd_groups(summary, settings.time_unit_days, settings.max_fit_groups)
    info = {"bgnbd_groups": len(groups), "bgnbd_grid_days": grid}
    bgnbd = fit_with_retry(run, "BG/NBD", lambda pen: M.fit_bgnbd(
        groups["x"], groups["t_x"], groups["T"], groups["weight"], penalty=pen), settings.penalty)
    return bgnbd, info


def fit_models(run: JobRun | None, summary: DataFrame, settings: ValueSection
               ) -> tuple[M.Fit, M.Fit | None, dict]:
    """(BG/NBD fit, Gamma-Gamma fit or None with the reason in info, info: group counts, grids)."""
    bgnbd, info = fit_bgnbd(run, summary, settings)
    values, digits = gamma_gamma_groups(summary, settings.value_digits, settings.max_fit_groups)
    info.update(gamma_gamma_groups=len(values), gamma_gamma_digits=digits)
    try:
        gamma_gamma = fit_with_retry(run, "Gamma-Gamma", lambda pen: M.fit_gamma_gamma(
            values["x"], values["m_x"], values["weight"], penalty=pen), settings.penalty)
        if gamma_gamma.params["q"] <= 1:
            raise M.ModelNotIdentified(f"Gamma-Gamma q = {gamma_gamma.params['q']:.3f} <= 1: the "
                                       f"population's mean order value is not finite")
    except M.ModelNotIdentified as exc:
        info["gamma_gamma_reason"] = str(exc)
        gamma_gamma = None
    return bgnbd, gamma_gamma, info


# --------------------------------------------------------------------------------------------
# Scoring (Spark, mapInPandas)

def score(summary: DataFrame, as_of: dt.date, bgnbd: M.Fit, gamma_gamma: M.Fit | None,
          settings: ValueSection) -> DataFrame:
    """gold.customer_value without run columns: every customer of ``summary`` scored with the
    fitted parameters (a closure: each task gets them with its code)."""
    unit, months, rate = settings.time_unit_days, settings.clv_months, settings.annual_discount_rate
    p_bg = dict(bgnbd.params)
    p_gg = None if gamma_gamma is None else dict(gamma_gamma.params)
    window = settings.propensity_days

    def scored(batches):
        for b in batches:
            x, t_x, T_ = b["x"].to_numpy(float), b["t_x"].to_numpy(float), b["T"].to_numpy(float)
            out = pd.DataFrame({
                C.CUSTOMER_ID: b[C.CUSTOMER_ID], C.AS_OF: as_of,
                "first_purchase_date": b["first_purchase_date"], "frequency": b["x"].astype("int64"),
                "recency": t_x, "age": T_, "time_unit_days": float(unit), "mean_repeat_value": b["m_x"],
                "p_alive": M.bgnbd_p_alive(p_bg, x, t_x, T_),
                **{f"expected_purchases_{d}d": M.bgnbd_expected(p_bg, d / unit, x, t_x, T_)
                   for d in (30, 90, 365)},
                "p_purchase_30d": M.bgnbd_p_any(p_bg, window / unit, x, t_x, T_)})
            if p_gg is None:
                out["expected_order_value"] = np.nan
                out["clv_12m"] = np.nan
                out["source"] = SOURCE_NO_VALUE
            else:
                m = b["m_x"].fillna(0.0).to_numpy(float)
                value = M.gamma_gamma_expected_value(p_gg, np.where(m > 0, x, 0.0), m)
                out["expected_order_value"] = value
                out["clv_12m"] = M.discounted_value(p_bg, x, t_x, T_, value, months, unit, rate)
                out["source"] = np.where(m > 0, SOURCE_MODEL, SOURCE_POPULATION)
            yield out

    return summary.mapInPandas(scored, _SCORED)


# --------------------------------------------------------------------------------------------
# Hold-out

def holdout_metrics(lines: DataFrame, as_of: dt.date, settings: ValueSection,
                    run: JobRun | None = None) -> list[dict]:
    """Fit as of as_of − holdout_days and compare each customer's predicted repeat purchase days
    in the hold-out with the actual ones (customers who bought before the cut-off): MAE and
    totals for BG/NBD and for the naive constant rate x / T."""
    days_out = settings.holdout_days
    cut = as_of - dt.timedelta(days=days_out)
    unit = settings.time_unit_days
    calibration = summaries(purchase_days(lines, cut), cut, unit)
    try:
        bgnbd, _ = fit_bgnbd(None, calibration, settings)
    except M.ModelNotIdentified as exc:
        if run is not None:
            run.note(f"no hold-out: as of {cut} {exc}")
        return [{"scope": "holdout", "model": "bgnbd", "metric": "identified", "value": 0.0,
                 "note": f"as of {cut}: {exc}"}]
    actual = (purchase_days(lines, as_of, start=cut).groupBy(C.CUSTOMER_ID)
              .agg(F.count("*").alias("actual")))
    t = days_out / unit
    params = dict(bgnbd.params)

    def predict(batches):
        for b in batches:
            x, t_x, T_ = b["x"].to_numpy(float), b["t_x"].to_numpy(float), b["T"].to_numpy(float)
            naive = np.divide(x, T_, out=np.zeros_like(x), where=T_ > 0) * t
            yield pd.DataFrame({"model_pred": M.bgnbd_expected(params, t, x, t_x, T_),
                                "naive_pred": naive, "actual": b["actual"].astype(float)})

    joined = calibration.join(actual, C.CUSTOMER_ID, "left").fillna(0, ["actual"])
    preds = joined.mapInPandas(predict, "model_pred double, naive_pred double, actual double")
    agg = preds.agg(F.count("*").alias("n"), F.sum("actual").alias("actual"),
                    F.sum("model_pred").alias("model"), F.sum("naive_pred").alias("naive"),
                    F.avg(F.abs(F.col("model_pred") - F.col("actual"))).alias("mae_model"),
                    F.avg(F.abs(F.col("naive_pred") - F.col("actual"))).alias("mae_naive")).first()
    note = f"fitted as of {cut}, hold-out {days_out} days to {as_of}, {agg['n']:,} customers"
    rows = [("bgnbd", "mae", agg["mae_model"]), ("naive", "mae", agg["mae_naive"]),
            ("bgnbd", "predicted_total", agg["model"]), ("naive", "predicted_total", agg["naive"]),
            ("actual", "actual_total", agg["actual"]), ("actual", "customers", agg["n"])]
    rows += [("bgnbd", f"calibration_{k}", v) for k, v in params.items()]
    if run is not None:
        run.metric("holdout_mae_bgnbd", agg["mae_model"])
        run.metric("holdout_mae_naive", agg["mae_naive"])
    return [{"scope": "holdout", "model": m, "metric": k, "value": None if v is None else float(v),
             "note": note} for m, k, v in rows]


def fit_metrics(bgnbd: M.Fit, gamma_gamma: M.Fit | None, info: dict) -> list[dict]:
    """The fit scope of gold.customer_value_metrics: parameters, log-likelihood, iterations and
    the size of each fit's grouped input; a model not identified has one row saying why."""
    row = lambda model, metric, value, note=None: {  # noqa: E731
        "scope": "fit", "model": model, "metric": metric, "value": value, "note": note}
    rows = [row("bgnbd", "groups", float(info["bgnbd_groups"])),
            row("bgnbd", "grid_days", float(info["bgnbd_grid_days"])),
            row("gamma_gamma", "groups", float(info["gamma_gamma_groups"])),
            row("gamma_gamma", "digits", float(info["gamma_gamma_digits"]))]
    for name, fit in (("bgnbd", bgnbd), ("gamma_gamma", gamma_gamma)):
        if fit is None:
            rows.append(row(name, "identified", 0.0, info.get("gamma_gamma_reason")))
            continue
        note = f"penalty {fit.penalty}" if fit.penalty else "maximum likelihood"
        rows += [row(name, k, float(v), note) for k, v in
                 {**fit.params, "log_likelihood": fit.log_likelihood, "iterations": fit.iterations}.items()]
    return rows


# --------------------------------------------------------------------------------------------
# Job

def run(spark, conf: Conf) -> dict:
    """The value job: silver.order_lines -> gold.customer_value, gold.customer_value_metrics.
    Returns the run summary; metrics: customers, the fitted parameters, hold-out MAEs."""
    settings = conf.value
    with JobRun(spark, conf, "value", settings) as run:
        lines = run.read("silver.order_lines")
        as_of = run.as_of()
        summary = summaries(purchase_days(lines, as_of), as_of, settings.time_unit_days).cache()
        bgnbd, gamma_gamma, info = fit_models(run, summary, settings)
        record_fits(run, bgnbd, gamma_gamma, info)
        run.rows_out = run.write(score(summary, as_of, bgnbd, gamma_gamma, settings), "gold.customer_value")
        metrics = fit_metrics(bgnbd, gamma_gamma, info)
        if settings.holdout_days is not None:
            metrics += holdout_metrics(lines, as_of, settings, run)
        run.write(spark.createDataFrame([{C.AS_OF: as_of, **m} for m in metrics], _METRICS),
                  "gold.customer_value_metrics")
        run.rows_in = lines.count()
        run.metric("customers", run.rows_out, key=True)
        summary.unpersist()
    return run.summary()


def record_fits(run: JobRun, bgnbd: M.Fit, gamma_gamma: M.Fit | None, info: dict) -> None:
    """Parameters in the run's metrics; what was not identified, and coarser grids, as notes."""
    for k, v in bgnbd.params.items():
        run.metric(f"bgnbd_{k}", v)
    if gamma_gamma is None:
        run.note(f"no order value or CLV: {info['gamma_gamma_reason']}")
    else:
        for k, v in gamma_gamma.params.items():
            run.metric(f"gamma_gamma_{k}", v)
    if info["bgnbd_grid_days"] > 1:
        run.note(f"BG/NBD fitted on t_x and T grouped to {info['bgnbd_grid_days']}-day steps "
                 f"({info['bgnbd_groups']:,} groups)")
