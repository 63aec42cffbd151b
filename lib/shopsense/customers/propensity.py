"""The purchase-propensity job: the probability that each customer buys in the next
``propensity.window_days`` days, from two models compared on the same out-of-time split; see
docs/propensity.md for the contract.

The design (T0 = as_of, w = the window):

1. **Out of time.** Features as of the cut-off T0 − w, from the order lines up to it; the label
   is whether the customer bought (a product sale day) in the w days after it, through T0. The
   population: identified customers with a purchase on or before the cut-off.
2. **Two models on that split.** The BG/NBD model of :mod:`shopsense.customers.value` fitted on
   the purchases up to the cut-off, P(at least one purchase in w days) — it needs no labels;
   and an MLlib classifier (logistic regression or gradient-boosted trees,
   ``propensity.classifier``) on the customer features and inter-purchase statistics,
   calibrated with MLlib's isotonic regression. The classifier is **cross-fitted**: customers
   are hashed into ``propensity.folds`` folds; for each fold, the classifier is fitted on the
   folds but two, calibrated on the next fold, and predicts the fold, so every customer has a
   prediction from models that never saw them.
3. **Metrics** of both on the held-out predictions of every customer (AUC, average precision,
   Brier, expected calibration error, lift in the top decile: :mod:`propensity_metrics`) in
   gold.propensity_metrics; calibration curves and decile lift in gold.propensity_curves.
   The default model is the one with the higher average precision (``propensity.model`` can
   name one); the metrics table says which.
4. **Scoring as of T0.** Every customer with a purchase by T0: BG/NBD refitted on the purchases
   up to T0, and the mean of the fold classifiers (each calibrated) on features as of T0;
   gold.purchase_propensity holds both and the default's as ``p_purchase``.

A model that cannot be identified (no BG/NBD fit converges; fewer buyers or non-buyers than
``propensity.min_class_customers`` for the classifier) writes no number and says why, in the run
record and in the metrics table; the other model still runs. Nothing the size of the customers
reaches the driver: the fits are MLlib's, the metrics come from score histograms.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import GBTClassifier, LogisticRegression
from pyspark.ml.feature import SQLTransformer, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.ml.regression import IsotonicRegression
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.core.config import Conf
from shopsense.core.runs import JobRun
from shopsense.core.settings import PropensitySection, ValueSection
from shopsense.customers import features as FT
from shopsense.customers import propensity_metrics as PM
from shopsense.customers import value
from shopsense.customers import value_models as M
from shopsense.customers.segments import deterministic_layout

BGNBD, CLASSIFIER = "bgnbd", "classifier"

PURCHASE_PROPENSITY = T.StructType([
    T.StructField(C.CUSTOMER_ID, T.StringType(), False),
    T.StructField(C.AS_OF, T.DateType(), False),
    T.StructField("window_days", T.IntegerType(), False),
    T.StructField("p_purchase", T.DoubleType(), True),     # the default model's probability
    T.StructField("model", T.StringType(), False),         # the default model: bgnbd | classifier
    T.StructField("p_bgnbd", T.DoubleType(), True),
    T.StructField("p_classifier", T.DoubleType(), True),
    *tables.RUN_COLUMNS,
])

PROPENSITY_METRICS = T.StructType([
    T.StructField(C.AS_OF, T.DateType(), False),
    T.StructField("cutoff", T.DateType(), False),
    T.StructField("model", T.StringType(), False),
    T.StructField("metric", T.StringType(), False),
    T.StructField("value", T.DoubleType(), True),
    T.StructField("is_default", T.BooleanType(), False),
    T.StructField("note", T.StringType(), True),
    *tables.RUN_COLUMNS,
])

PROPENSITY_CURVES = T.StructType([
    T.StructField(C.AS_OF, T.DateType(), False),
    T.StructField("model", T.StringType(), False),
    T.StructField("kind", T.StringType(), False),          # calibration | decile
    T.StructField("bin", T.IntegerType(), False),          # calibration bin 0..9 | decile 1..10
    T.StructField("customers", T.DoubleType(), False),
    T.StructField("buyers", T.DoubleType(), False),
    T.StructField("mean_predicted", T.DoubleType(), True),
    T.StructField("observed_rate", T.DoubleType(), True),
    T.StructField("lift", T.DoubleType(), True),
    *tables.RUN_COLUMNS,
])

#: The classifier's inputs (all doubles, defined for every customer with a purchase).
MODEL_FEATURES = (
    "log_recency", "log_tenure", "log_purchase_days", "log_orders", "log_monetary", "log_order_value",
    "log_items_per_order", "return_rate", "log_distinct_skus", "log_mean_gap", "gap_cv", "log_overdue",
    "log_days_30", "log_days_90", "log_days_365", "log_value_90", "log_days_year_before", "bgnbd_logit")
LABEL = "label"


class PropensityError(ValueError):
    """The propensity job's input does not allow a result; the message says why."""


# --------------------------------------------------------------------------------------------
# Spark: the customer table as of a day, and the labels

def _log1p(col: Column) -> Column:
    return F.log1p(F.greatest(F.coalesce(col.cast("double"), F.lit(0.0)), F.lit(0.0)))


def customer_table(lines: DataFrame, day: dt.date, window_days: int | None, horizon_days: int) -> DataFrame:
    """One row per identified customer with a purchase day on or before ``day``: customer_id and
    MODEL_FEATURES (features.customer_features plus inter-purchase statistics of the purchase
    days: their number, mean and spread of the gaps, how overdue the next one is, how many in the
    last 30/90/365 days, value of the last 90, and how many in the ``horizon_days`` that followed
    the same day a year before: a seasonal buyer's)."""
    days = value.purchase_days(lines, day)
    gap = F.datediff(C.ORDER_DATE, F.lag(C.ORDER_DATE).over(
        Window.partitionBy(C.CUSTOMER_ID).orderBy(C.ORDER_DATE)))
    within = lambda n: F.col(C.ORDER_DATE) > F.lit(day - dt.timedelta(days=n))  # noqa: E731
    per = (days.withColumn("_gap", gap).groupBy(C.CUSTOMER_ID).agg(
        F.count("*").alias("_days"), F.min(C.ORDER_DATE).alias("_first"), F.max(C.ORDER_DATE).alias("_last"),
        F.stddev_pop("_gap").alias("_gap_sd"),
        *[F.count(F.when(within(n), 1)).alias(f"_d{n}") for n in (30, 90, 365)],
        F.sum(F.when(within(90), F.col("value"))).cast("double").alias("_v90"),
        F.count(F.when(F.col(C.ORDER_DATE).between(F.lit(day - dt.timedelta(days=364)),
                                                    F.lit(day - dt.timedelta(days=365 - horizon_days))), 1)
                ).alias("_season")))
    recency = F.datediff(F.lit(day), "_last").cast("double")
    mean_gap = F.when(F.col("_days") > 1, F.datediff("_last", "_first") / (F.col("_days") - 1))
    feats = FT.customer_features(lines, day, window_days)
    out = per.join(feats, C.CUSTOMER_ID, "left").select(
        C.CUSTOMER_ID,
        _log1p(recency).alias("log_recency"),
        _log1p(F.datediff(F.lit(day), "_first")).alias("log_tenure"),
        _log1p(F.col("_days")).alias("log_purchase_days"),
        _log1p(F.col(FT.FREQUENCY)).alias("log_orders"),
        _log1p(F.col(FT.MONETARY)).alias("log_monetary"),
        _log1p(F.col(FT.AVG_ORDER_VALUE)).alias("log_order_value"),
        _log1p(F.col(FT.ITEMS_PER_ORDER)).alias("log_items_per_order"),
        F.coalesce(F.col(FT.RETURN_RATE), F.lit(0.0)).alias("return_rate"),
        _log1p(F.col(FT.DISTINCT_SKUS)).alias("log_distinct_skus"),
        _log1p(mean_gap).alias("log_mean_gap"),
        F.coalesce(F.col("_gap_sd") / mean_gap, F.lit(0.0)).alias("gap_cv"),
        _log1p(F.least(recency / mean_gap, F.lit(100.0))).alias("log_overdue"),
        *[_log1p(F.col(f"_d{n}")).alias(f"log_days_{n}") for n in (30, 90, 365)],
        _log1p(F.col("_v90")).alias("log_value_90"),
        _log1p(F.col("_season")).alias("log_days_year_before"))
    return out


def with_bgnbd(table: DataFrame, bg: DataFrame | None) -> DataFrame:
    """``table`` with p_bgnbd (null when BG/NBD is not identified) and the classifier's feature
    bgnbd_logit, its log-odds (0 without it): the BG/NBD model needs no labels, so the
    classifier may build on what it makes of each customer's purchase history."""
    if bg is None:
        table = table.withColumn("p_bgnbd", F.lit(None).cast("double"))
    else:
        table = table.join(bg, C.CUSTOMER_ID, "left")
    p = F.least(F.greatest(F.col("p_bgnbd"), F.lit(1e-6)), F.lit(1 - 1e-6))
    return table.withColumn("bgnbd_logit", F.coalesce(F.log(p / (1 - p)), F.lit(0.0)))


def labelled(lines: DataFrame, cutoff: dt.date, as_of: dt.date, window_days: int | None,
             bg: DataFrame | None) -> DataFrame:
    """The customer table as of ``cutoff`` (with_bgnbd) and ``label`` 1.0 for a purchase day
    in (cutoff, as_of], else 0.0; in a layout fixed by its content (the fits are then the same
    whatever files the lines came from)."""
    bought = (value.purchase_days(lines, as_of, start=cutoff).select(C.CUSTOMER_ID).distinct()
              .withColumn(LABEL, F.lit(1.0)))
    horizon = (as_of - cutoff).days
    table = with_bgnbd(customer_table(lines, cutoff, window_days, horizon), bg).join(bought, C.CUSTOMER_ID, "left")
    return deterministic_layout(table.fillna(0.0, [LABEL]))


# --------------------------------------------------------------------------------------------
# BG/NBD: P(at least one purchase in the window)

def bgnbd_probability(run: JobRun | None, lines: DataFrame, day: dt.date, settings: ValueSection,
                      window_days: int) -> tuple[DataFrame | None, str | None]:
    """((customer_id, p_bgnbd) for every customer with a purchase by ``day``, None) from the
    BG/NBD model fitted on the purchases up to ``day``; (None, why) when it is not identified."""
    unit = settings.time_unit_days
    summary = value.summaries(value.purchase_days(lines, day), day, unit)
    try:
        bgnbd, _ = value.fit_bgnbd(run, summary, settings)
    except M.ModelNotIdentified as exc:
        return None, f"BG/NBD as of {day}: {exc}"
    params, t = dict(bgnbd.params), window_days / unit

    def predict(batches):
        for b in batches:
            x, t_x, T_ = (b[c].to_numpy(float) for c in ("x", "t_x", "T"))
            yield pd.DataFrame({C.CUSTOMER_ID: b[C.CUSTOMER_ID], "p_bgnbd": M.bgnbd_p_any(params, t, x, t_x, T_)})

    return summary.select(C.CUSTOMER_ID, "x", "t_x", "T").mapInPandas(
        predict, f"{C.CUSTOMER_ID} string, p_bgnbd double"), None


# --------------------------------------------------------------------------------------------
# The classifier, cross-fitted and calibrated

def _fold(settings: PropensitySection) -> Column:
    return F.pmod(F.xxhash64(F.col(C.CUSTOMER_ID), F.lit(settings.seed)), F.lit(settings.folds)).cast("int")


def _estimator(settings: PropensitySection, k: int):
    if settings.classifier == "gbt":
        est = GBTClassifier(maxIter=settings.max_iter, maxDepth=settings.max_depth,
                            stepSize=settings.step_size, seed=settings.seed)
    else:
        est = LogisticRegression(maxIter=settings.max_iter, regParam=settings.reg_param)
    # fold k's columns have names of their own: the folds' models transform one table in turn
    return (est.setFeaturesCol("_features").setLabelCol(LABEL).setProbabilityCol(f"_prob{k}")
            .setRawPredictionCol(f"_rawp{k}").setPredictionCol(f"_pred{k}"))


def _calibrator(settings: PropensitySection, k: int):
    """Fold k's calibration of ``_raw{k}`` into ``_cal{k}``: isotonic regression (monotone,
    steps: ties within a step), or Platt scaling (a logistic regression on the log-odds:
    strictly monotone, the ranking kept; its probability in ``_cp{k}``)."""
    if settings.calibration == "isotonic":
        return IsotonicRegression(featuresCol=f"_raw{k}", labelCol=LABEL, predictionCol=f"_cal{k}")
    clamp = f"least(greatest(_raw{k}, 1e-9), 1 - 1e-9)"
    return Pipeline(stages=[
        SQLTransformer(statement=f"SELECT *, ln({clamp} / (1 - {clamp})) AS _lg{k} FROM __THIS__"),
        VectorAssembler(inputCols=[f"_lg{k}"], outputCol=f"_lv{k}"),
        LogisticRegression(featuresCol=f"_lv{k}", labelCol=LABEL, regParam=0.0, probabilityCol=f"_cp{k}",
                           rawPredictionCol=f"_cr{k}", predictionCol=f"_cpred{k}")])


def _assembled(df: DataFrame) -> DataFrame:
    return VectorAssembler(inputCols=list(MODEL_FEATURES), outputCol="_features").transform(df)


def _raw(model: PipelineModel, df: DataFrame, k: int) -> DataFrame:
    return model.transform(df).withColumn(f"_raw{k}", vector_to_array(f"_prob{k}")[1])


def cross_fit(train: DataFrame, settings: PropensitySection) -> list[tuple[PipelineModel, object]]:
    """One (classifier, calibration) per fold k: the classifier fitted on the
    customers of every fold but k and k + 1, the calibration on fold k + 1."""
    data = _assembled(train.withColumn("_fold", _fold(settings))).cache()
    models = []
    for k in range(settings.folds):
        cal = (k + 1) % settings.folds
        fit_part = data.filter((F.col("_fold") != k) & (F.col("_fold") != cal))
        model = Pipeline(stages=[_estimator(settings, k)]).fit(fit_part)
        models.append((model, _calibrator(settings, k).fit(_raw(model, data.filter(F.col("_fold") == cal), k))))
    data.unpersist()
    return models


def predict_all(models: list, table: DataFrame) -> DataFrame:
    """``table`` with ``_cal0`` .. ``_cal{K-1}``: every fold's calibrated probability."""
    out = _assembled(table)
    for k, (model, calibration) in enumerate(models):
        out = calibration.transform(_raw(model, out, k))
        if f"_cal{k}" not in out.columns:     # Platt scaling: a logistic regression's probability
            out = out.withColumn(f"_cal{k}", vector_to_array(f"_cp{k}")[1])
    return out


def held_out(models: list, train: DataFrame, settings: PropensitySection) -> DataFrame:
    """(customer_id, p_classifier): each customer's probability from its own fold's models,
    fitted and calibrated without it."""
    preds = predict_all(models, train.withColumn("_fold", _fold(settings)))
    own = F.element_at(F.array(*[F.col(f"_cal{k}") for k in range(len(models))]), F.col("_fold") + 1)
    return preds.select(C.CUSTOMER_ID, own.alias("p_classifier"))


def mean_of_folds(models: list, table: DataFrame) -> DataFrame:
    """(customer_id, p_classifier): the mean of the fold models' calibrated probabilities."""
    mean = sum(F.col(f"_cal{k}") for k in range(len(models))) / F.lit(float(len(models)))
    return predict_all(models, table).select(C.CUSTOMER_ID, mean.alias("p_classifier"))


def classifier_identified(train: DataFrame, settings: PropensitySection) -> str | None:
    """None when every fold has at least ``min_class_customers`` buyers and non-buyers (each
    fold is somebody's calibration set and somebody's test set), else why not."""
    counts = (train.groupBy(_fold(settings).alias("fold"))
              .agg(F.sum(LABEL).alias("buyers"), F.count("*").alias("customers")).collect())
    least = settings.min_class_customers
    short = [r["fold"] for r in counts if min(r["buyers"], r["customers"] - r["buyers"]) < least]
    if len(counts) < settings.folds or short:
        total = sum(r["buyers"] for r in counts)
        return (f"classifier: fewer than {least} buyers or non-buyers in a fold (folds {short or 'empty'}; "
                f"{int(total):,} buyers of {sum(r['customers'] for r in counts):,} customers)")
    return None


# --------------------------------------------------------------------------------------------
# Evaluation and the choice of model

def evaluate(scored: DataFrame, models: list[str]) -> dict[str, tuple[dict, pd.DataFrame]]:
    """Per model (a column p_<model> of ``scored``): (its PM.METRICS, its histogram)."""
    out = {}
    for name in models:
        hist = PM.histogram(scored, f"p_{name}", LABEL)
        out[name] = (PM.metrics(hist), hist)
    return out


def choose(evaluated: dict[str, tuple[dict, pd.DataFrame]], wanted: str) -> str:
    """The default model: ``wanted`` when it is one of the evaluated, else the one with the
    higher average precision (BG/NBD on a tie: it needs no labels)."""
    if wanted in evaluated:
        return wanted
    ap = {name: m["average_precision"] for name, (m, _) in evaluated.items()
          if m["average_precision"] is not None}
    if not ap:
        return next(iter(evaluated))
    return max(ap, key=lambda name: (ap[name], name == BGNBD))


def metric_rows(evaluated: dict, default: str | None, reasons: dict[str, str], note: str) -> list[dict]:
    rows = [{"model": name, "metric": k, "value": None if v is None else float(v),
             "is_default": name == default, "note": note}
            for name, (m, _) in evaluated.items() for k, v in m.items()]
    rows += [{"model": name, "metric": "identified", "value": 0.0, "is_default": False, "note": why}
             for name, why in reasons.items()]
    return rows


def curve_rows(evaluated: dict) -> list[dict]:
    rows = []
    for name, (_, hist) in evaluated.items():
        for r in PM.calibration_curve(hist).itertuples():
            rows.append({"model": name, "kind": "calibration", "bin": int(r.bin), "customers": float(r.customers),
                         "buyers": float(r.buyers), "mean_predicted": float(r.mean_predicted),
                         "observed_rate": float(r.observed_rate), "lift": None})
        for r in PM.decile_lift(hist).itertuples():
            rows.append({"model": name, "kind": "decile", "bin": int(r.decile), "customers": float(r.customers),
                         "buyers": float(r.buyers), "mean_predicted": None,
                         "observed_rate": _num(r.observed_rate), "lift": _num(r.lift)})
    return rows


def _num(v) -> float | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


# --------------------------------------------------------------------------------------------
# Job

def run(spark, conf: Conf) -> dict:
    """The propensity job: silver.order_lines -> gold.purchase_propensity, gold.propensity_metrics,
    gold.propensity_curves. Metrics: customers scored, each model's held-out AUC/AP/Brier/ECE."""
    settings = conf.propensity
    with JobRun(spark, conf, "propensity", settings) as run:
        lines = run.read("silver.order_lines")
        as_of = run.as_of()
        cutoff = as_of - dt.timedelta(days=settings.window_days)
        train, reasons = training_set(run, lines, cutoff, as_of, conf)
        scored, models = held_out_scores(run, train, settings, reasons)
        evaluated = evaluate(scored, [m for m in (BGNBD, CLASSIFIER) if m not in reasons])
        if not evaluated:
            raise PropensityError(f"no model could be identified as of {cutoff}: {'; '.join(reasons.values())}")
        default = choose(evaluated, settings.model)
        record_evaluation(run, evaluated, default)
        current = scores_as_of(run, lines, as_of, conf, models, default)
        write_evaluation(run, as_of, cutoff, evaluated, default, reasons)
        run.rows_out = run.write(current, "gold.purchase_propensity")
        run.metric("customers", run.rows_out, key=True)
        train.unpersist()
        scored.unpersist()
    return run.summary()


def training_set(run: JobRun, lines: DataFrame, cutoff: dt.date, as_of: dt.date, conf: Conf
                 ) -> tuple[DataFrame, dict[str, str]]:
    """(the labelled customer table as of the cut-off, cached; {model: why not identified})."""
    reasons: dict[str, str] = {}
    bg, why = bgnbd_probability(run, lines, cutoff, conf.value, conf.propensity.window_days)
    if why:
        reasons[BGNBD] = why
    return labelled(lines, cutoff, as_of, conf.features.window_days, bg).cache(), reasons


def write_evaluation(run: JobRun, as_of: dt.date, cutoff: dt.date, evaluated: dict, default: str,
                     reasons: dict[str, str]) -> None:
    """gold.propensity_metrics and gold.propensity_curves."""
    settings, spark = run.conf.propensity, run.spark
    note = (f"features as of {cutoff}, bought in the {settings.window_days} days to {as_of}; classifier "
            f"{settings.classifier} ({settings.calibration} calibration), {settings.folds} folds")
    rows = [{C.AS_OF: as_of, "cutoff": cutoff, **r} for r in metric_rows(evaluated, default, reasons, note)]
    run.write(spark.createDataFrame(rows, tables.without_run_columns(PROPENSITY_METRICS)),
              "gold.propensity_metrics")
    curves = [{C.AS_OF: as_of, **r} for r in curve_rows(evaluated)]
    run.write(spark.createDataFrame(curves, tables.without_run_columns(PROPENSITY_CURVES)),
              "gold.propensity_curves")


def held_out_scores(run: JobRun, train: DataFrame, settings: PropensitySection,
                    reasons: dict[str, str]) -> tuple[DataFrame, list]:
    """(customer_id, label, p_bgnbd, p_classifier held out; the fold models); a classifier that
    cannot be identified gets its reason in ``reasons`` and a null column. Reasons are noted."""
    scored = train.select(C.CUSTOMER_ID, LABEL, "p_bgnbd")
    why = classifier_identified(train, settings)
    models = []
    if why:
        reasons[CLASSIFIER] = why
        scored = scored.withColumn("p_classifier", F.lit(None).cast("double"))
    else:
        models = cross_fit(train, settings)
        scored = scored.join(held_out(models, train, settings), C.CUSTOMER_ID, "left")
    for text in reasons.values():
        run.note(f"not identified, no number written: {text}")
    return scored.cache(), models


def scores_as_of(run: JobRun, lines: DataFrame, as_of: dt.date, conf: Conf, models: list,
                 default: str) -> DataFrame:
    """gold.purchase_propensity without run columns: every customer with a purchase by as_of."""
    settings = conf.propensity
    bg, why = bgnbd_probability(run, lines, as_of, conf.value, settings.window_days)
    if why:
        run.note(f"no BG/NBD score as of {as_of}: {why}")
    table = with_bgnbd(customer_table(lines, as_of, conf.features.window_days, settings.window_days), bg).cache()
    out = table.select(C.CUSTOMER_ID, "p_bgnbd")
    if models:
        out = out.join(mean_of_folds(models, table), C.CUSTOMER_ID, "left")
    else:
        out = out.withColumn("p_classifier", F.lit(None).cast("double"))
    return out.select(C.CUSTOMER_ID, F.lit(as_of).alias(C.AS_OF),
                      F.lit(settings.window_days).alias("window_days"),
                      F.col(f"p_{default}").alias("p_purchase"), F.lit(default).alias("model"),
                      "p_bgnbd", "p_classifier")


def record_evaluation(run: JobRun, evaluated: dict, default: str) -> None:
    """Each model's held-out figures in the run's metrics, and the choice as a note."""
    for name, (m, _) in evaluated.items():
        for k in ("auc", "average_precision", "brier", "ece", "lift_top_decile"):
            run.metric(f"{name}_{k}", m[k])
    aps = ", ".join(f"{n} {m['average_precision']:.4f}" for n, (m, _) in evaluated.items()
                    if m["average_precision"] is not None)
    run.note(f"default model: {default} (held-out average precision: {aps or 'not defined'})")
