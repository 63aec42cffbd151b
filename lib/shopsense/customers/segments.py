"""Customer segmentation: gold.customer_features -> KMeans (MLlib) -> gold.customer_segments and
gold.segment_profiles, with human-readable segment names derived from the profiles.

The model is one MLlib Pipeline: log1p of the skewed features (SQLTransformer), VectorAssembler,
StandardScaler (mean 0, sd 1) and KMeans. The number of clusters is fixed in conf or chosen by
silhouette over ``k_min..k_max``. Clusters are then renumbered by value (segment 0 has the highest
median net revenue) and named by RFM rules on their medians (:func:`name_segments`), so the same
data gives the same ids and names. The saved PipelineModel ends with a stage that maps the raw
cluster to ``segment_id`` and ``segment_name``, so it scores new customers directly::

    PipelineModel.load(path).transform(new_features)   # adds segment_id, segment_name

Customers with only returns in the window (``has_orders`` false) are not clustered: they get
segment -1, "returns only", and a profile row of their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import IndexToString, SQLTransformer, StandardScaler, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import columns as C
from shopsense.customers import features as FT
from shopsense.core import tables
from shopsense.core.config import Conf, resolve_path
from shopsense.core.errors import require_columns
from shopsense.core.runs import JobRun

SEGMENT_ID = "segment_id"
SEGMENT_NAME = "segment_name"
DISTANCE = "distance_to_centre"
CLUSTER = "cluster"                  # raw KMeans prediction, before renumbering
RAW_VECTOR = "raw_features"
VECTOR = "features"                  # standardised feature vector the KMeans sees
RETURNS_ONLY_ID = -1
RETURNS_ONLY_NAME = "returns only"

CUSTOMER_SEGMENTS = T.StructType([
    T.StructField(C.CUSTOMER_ID, T.StringType(), False),
    T.StructField(SEGMENT_ID, T.IntegerType(), False),
    T.StructField(SEGMENT_NAME, T.StringType(), False),
    # Euclidean distance to the segment's centre in the standardised feature space; null for
    # the returns-only customers, who are not clustered.
    T.StructField(DISTANCE, T.DoubleType(), True),
    *tables.RUN_COLUMNS,
])

PROFILE_FEATURES = FT.NUMERIC_FEATURES
SEGMENT_PROFILES = T.StructType([
    T.StructField(SEGMENT_ID, T.IntegerType(), False),
    T.StructField(SEGMENT_NAME, T.StringType(), False),
    T.StructField("n_customers", T.LongType(), False),
    T.StructField("customer_share", T.DoubleType(), False),
    T.StructField("revenue_share", T.DoubleType(), True),
    *[T.StructField(f"{stat}_{f}", T.DoubleType(), True)
      for f in PROFILE_FEATURES for stat in ("mean", "median")],
    *tables.RUN_COLUMNS,
])


class SegmentError(ValueError):
    """The segmentation cannot run as configured (bad parameters, too few customers)."""


@dataclass(frozen=True)
class NamingRules:
    """Thresholds of the RFM naming rules (conf ``segment.naming``)."""

    recent_days: float = 90
    new_tenure_days: float = 90
    champion_factor: float = 3.0
    occasional_factor: float = 0.5


@dataclass(frozen=True)
class SegmentParams:
    features: tuple[str, ...]
    log_features: tuple[str, ...]
    k: int | None
    k_min: int
    k_max: int
    selection_sample: int | None
    seed: int
    max_iter: int
    naming: NamingRules
    n_init: int = 3
    silhouette_tolerance: float = 0.0

    @classmethod
    def from_conf(cls, conf: Conf) -> "SegmentParams":
        """Read and check conf ``segment``; raises SegmentError naming the bad key."""
        s = conf.segment
        return cls(features=tuple(s.features), log_features=tuple(s.log_features), k=s.k,
                   k_min=s.k_min, k_max=s.k_max, selection_sample=s.selection_sample, seed=s.seed,
                   max_iter=s.max_iter, naming=NamingRules(**s.naming.model_dump()), n_init=s.n_init,
                   silhouette_tolerance=s.silhouette_tolerance)

    def validate(self) -> None:
        unknown = [f for f in self.features if f not in FT.NUMERIC_FEATURES]
        if not self.features or unknown:
            raise SegmentError(f"segment.features must name columns of gold.customer_features "
                               f"({', '.join(FT.NUMERIC_FEATURES)}); got unknown {unknown}"
                               if unknown else "segment.features is empty")
        stray = [f for f in self.log_features if f not in self.features]
        if stray:
            raise SegmentError(f"segment.log_features {stray} are not in segment.features "
                               f"{list(self.features)}")
        if self.k is not None and self.k < 2:
            raise SegmentError(f"segment.k must be at least 2 (or null to choose it), got {self.k}")
        if self.k is None and not 2 <= self.k_min <= self.k_max:
            raise SegmentError(f"segment.k_min and k_max must satisfy 2 <= k_min <= k_max, got "
                               f"{self.k_min}..{self.k_max}")
        if self.max_iter < 1 or (self.selection_sample or 0) < 0:
            raise SegmentError("segment.max_iter must be >= 1 and segment.selection_sample >= 0")
        if self.n_init < 1:
            raise SegmentError(f"segment.n_init must be >= 1, got {self.n_init}")


# --------------------------------------------------------------------------------------------
# Model

def transformed_name(feature: str) -> str:
    return f"x_{feature}"


def preprocessing_stages(features: tuple[str, ...], log_features: tuple[str, ...]) -> list:
    """Stages before KMeans: log1p of the skewed features (null counts as 0), assembling, and
    standardising to mean 0 and unit variance."""
    exprs = []
    for f in features:
        value = f"coalesce(CAST(`{f}` AS DOUBLE), 0D)"
        exprs.append(f"{'log1p(greatest(' + value + ', 0D))' if f in log_features else value}"
                     f" AS `{transformed_name(f)}`")
    sql = SQLTransformer(statement=f"SELECT *, {', '.join(exprs)} FROM __THIS__")
    assembler = VectorAssembler(inputCols=[transformed_name(f) for f in features],
                                outputCol=RAW_VECTOR, handleInvalid="error")
    scaler = StandardScaler(inputCol=RAW_VECTOR, outputCol=VECTOR, withMean=True, withStd=True)
    return [sql, assembler, scaler]


def kmeans(k: int, seed: int, max_iter: int) -> KMeans:
    return KMeans(k=k, seed=seed, maxIter=max_iter, featuresCol=VECTOR, predictionCol=CLUSTER)


def fit_kmeans(scaled: DataFrame, k: int, seed: int, max_iter: int, n_init: int = 1):
    """The KMeansModel with the lowest training cost of ``n_init`` fits seeded seed, seed + 1, ...
    k-means|| can stop in a poor local optimum (one seed merging two groups and splitting another,
    docs/segment.md), and the silhouette search would then pass over the right k; restarts are
    the usual remedy (scikit-learn's ``n_init``)."""
    best = None
    for i in range(n_init):
        model = kmeans(k, seed + i, max_iter).fit(scaled)
        if best is None or model.summary.trainingCost < best.summary.trainingCost:
            best = model
    return best


def silhouette(predictions: DataFrame) -> float:
    """Mean silhouette (squared Euclidean, MLlib's ClusteringEvaluator); nan when KMeans left
    fewer than two non-empty clusters."""
    if predictions.select(CLUSTER).distinct().limit(2).count() < 2:
        return float("nan")
    return ClusteringEvaluator(featuresCol=VECTOR, predictionCol=CLUSTER,
                               metricName="silhouette",
                               distanceMeasure="squaredEuclidean").evaluate(predictions)


def pick_k(scores: dict[int, float], tolerance: float = 0.0) -> tuple[int, str]:
    """The k to use from each k's silhouette (NaN: fewer than two clusters, left out) and the
    rule that chose it: the highest silhouette (the smallest such k on a tie), or with a
    ``tolerance`` the largest k whose silhouette is within it of the highest (a search that would
    settle on two segments, "loyal" and everyone else, can keep more a campaign can use)."""
    valid = {k: s for k, s in scores.items() if not math.isnan(s)}
    best = max(valid.values())
    best_k = min(k for k, s in valid.items() if s == best)
    if tolerance <= 0:
        return best_k, "the highest silhouette"
    k = max(k for k, s in valid.items() if s >= best - tolerance)
    if k == best_k:
        return k, f"the highest silhouette (no larger k within {tolerance:g} of it)"
    return k, f"the largest k within segment.silhouette_tolerance {tolerance:g} of the highest silhouette (k={best_k}: {best:.3f})"


def choose_k(scaled: DataFrame, k_values: list[int], seed: int, max_iter: int, n_init: int = 1,
             tolerance: float = 0.0) -> tuple[int, dict[int, float], dict, str]:
    """Fit KMeans for each k on ``scaled`` (a standardised ``features`` column). Returns the k
    :func:`pick_k` chooses, every k's silhouette, the fitted KMeansModel of every k, and the
    rule that chose k."""
    scores: dict[int, float] = {}
    models = {}
    for k in k_values:
        models[k] = fit_kmeans(scaled, k, seed, max_iter, n_init)
        scores[k] = silhouette(models[k].transform(scaled))
    valid = {k: s for k, s in scores.items() if not math.isnan(s)}
    if not valid:
        raise SegmentError(f"no k in {k_values} gave two or more non-empty clusters: "
                           f"the customers' features barely vary")
    k, rule = pick_k(scores, tolerance)
    return k, scores, models, rule


def with_distance(predictions: DataFrame, centres: list[list[float]]) -> DataFrame:
    """Add ``distance_to_centre``: Euclidean distance of the standardised vector to the centre of
    its raw cluster (``centres`` is small: k lists of d floats)."""
    centre_arr = F.array(*[F.array(*[F.lit(float(v)) for v in c]) for c in centres])
    centre = F.element_at(centre_arr, F.col(CLUSTER) + 1)
    sq = F.zip_with(vector_to_array(F.col(VECTOR)), centre, lambda a, b: (a - b) * (a - b))
    return predictions.withColumn(
        DISTANCE, F.sqrt(F.aggregate(sq, F.lit(0.0), lambda acc, x: acc + x)))


def mapping_stage(names: dict[int, tuple[int, str]]) -> PipelineModel:
    """A final pipeline stage mapping the raw cluster to segment_id and segment_name. The names
    are an IndexToString stage's labels (kept as data in the saved model, never SQL text, so a
    name such as "can't lose" survives whole)."""
    ids = " ".join(f"WHEN {c} THEN {sid}" for c, (sid, _) in sorted(names.items()))
    to_id = SQLTransformer(statement=(
        f"SELECT *, CAST(CASE `{CLUSTER}` {ids} END AS INT) AS `{SEGMENT_ID}` FROM __THIS__"))
    labels = [names.get(c, (c, f"segment {c}"))[1] for c in range(max(names) + 1)]
    return PipelineModel(stages=[to_id, IndexToString(inputCol=CLUSTER, outputCol=SEGMENT_NAME,
                                                      labels=labels)])


# --------------------------------------------------------------------------------------------
# Profiles and names

def profile(assigned: DataFrame, group_col: str, total_customers: int,
            total_revenue: float) -> DataFrame:
    """Per group: customers, shares of customers and net revenue, mean and median of every
    numeric feature (medians are approximate percentiles, relative error 1e-4)."""
    aggs = [F.count("*").alias("n_customers"), F.sum(FT.MONETARY).alias("_revenue")]
    for f in PROFILE_FEATURES:
        aggs.append(F.avg(F.col(f).cast("double")).alias(f"mean_{f}"))
        aggs.append(F.percentile_approx(F.col(f).cast("double"), 0.5, 10000).alias(f"median_{f}"))
    return (assigned.groupBy(group_col).agg(*aggs)
            .withColumn("customer_share", F.col("n_customers") / F.lit(float(total_customers)))
            .withColumn("revenue_share", F.col("_revenue") / F.lit(float(total_revenue))
                        if total_revenue else F.lit(None).cast("double"))
            .drop("_revenue"))


def base_name(recency: float, frequency: float, monetary: float, tenure: float,
              pop_frequency: float, pop_monetary: float, rules: NamingRules) -> str:
    """The RFM name of one segment from its medians and the medians of all customers."""
    if tenure <= rules.new_tenure_days:
        return "new"
    top = (frequency >= rules.champion_factor * pop_frequency
           and monetary >= rules.champion_factor * pop_monetary)
    occasional = frequency < max(2.0, rules.occasional_factor * pop_frequency)
    if recency <= rules.recent_days:
        return "champions" if top else "promising" if occasional else "loyal"
    return "can't lose" if top else "hibernating" if occasional else "at risk"


def name_segments(profiles: pd.DataFrame, pop_frequency: float, pop_monetary: float,
                  rules: NamingRules, key: str = CLUSTER) -> dict[int, tuple[int, str]]:
    """Map each cluster (``profiles[key]``) to (segment_id, segment_name).

    ``profiles`` has one row per cluster with median_recency_days, median_frequency,
    median_monetary, median_tenure_days. Segment ids run from 0 in order of decreasing median
    net revenue (ties: lower recency, then the cluster number). Names come from
    :func:`base_name`; when several segments get the same name they are told apart by value:
    "(high value)"/"(low value)" for two, "(tier 1)", "(tier 2)", ... for more.
    """
    ordered = profiles.sort_values(["median_monetary", "median_recency_days", key],
                                   ascending=[False, True, True], kind="mergesort")
    rows = []
    for sid, row in enumerate(ordered.itertuples(index=False)):
        r = row._asdict()
        rows.append((int(r[key]), sid, base_name(r["median_recency_days"], r["median_frequency"],
                                                 r["median_monetary"], r["median_tenure_days"],
                                                 pop_frequency, pop_monetary, rules)))
    counts: dict[str, int] = {}
    for _, _, name in rows:
        counts[name] = counts.get(name, 0) + 1
    seen: dict[str, int] = {}
    out = {}
    for cluster, sid, name in rows:  # in value order, so the first of a name is its best
        if counts[name] > 1:
            seen[name] = seen.get(name, 0) + 1
            i = seen[name]
            name = (f"{name} ({'high' if i == 1 else 'low'} value)" if counts[name] == 2
                    else f"{name} (tier {i})")
        out[cluster] = (sid, name)
    return out


def adjusted_rand_index_from_table(table) -> float:
    """Adjusted Rand index (Hubert & Arabie) from a contingency table (rows: true groups,
    columns: assigned segments, cells: item counts; a small k x groups array or DataFrame).
    1 for identical partitions, about 0 for random ones."""
    table = np.asarray(table, dtype=float)
    pairs = lambda x: float((x * (x - 1) / 2.0).sum())  # noqa: E731
    n = table.sum()
    index, total = pairs(table), n * (n - 1) / 2.0
    rows, cols = pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = rows * cols / total if total else 0.0
    best = (rows + cols) / 2.0
    if best == expected:  # both partitions trivial (one cluster each, or all singletons)
        return 1.0
    return float((index - expected) / (best - expected))


def adjusted_rand_index(truth, assigned) -> float:
    """Adjusted Rand index of two equal-length labelings of the same items (small inputs; for
    a table, count the (group, segment) pairs in Spark and use
    :func:`adjusted_rand_index_from_table`)."""
    truth, assigned = list(truth), list(assigned)
    if len(truth) != len(assigned):
        raise ValueError(f"labelings differ in length: {len(truth)} vs {len(assigned)}")
    return adjusted_rand_index_from_table(
        pd.crosstab(pd.Series(truth, name="t"), pd.Series(assigned, name="a")))


# --------------------------------------------------------------------------------------------
# Job

def model_path(conf: Conf) -> str:
    """Where the fitted PipelineModel is saved."""
    configured = conf.segment.model_path
    if configured:
        return resolve_path(configured)
    return f"{resolve_path(conf.warehouse).rstrip('/')}/models/segment"


def deterministic_layout(df: DataFrame, key: str = C.CUSTOMER_ID) -> DataFrame:
    """The rows in a layout fixed by their content: hash-partitioned by ``key`` into the
    session's shuffle partitions and sorted within each. KMeans' seeded initialisation depends on
    partitions and row order, and a rewritten input table (same rows, new files) can come back
    in another order: this makes re-runs on the same data give the same segments."""
    n = int(df.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    return df.repartition(n, key).sortWithinPartitions(key)


def fit_segments(spark: SparkSession, features: DataFrame, params: SegmentParams
                 ) -> tuple[PipelineModel, DataFrame, dict]:
    """Fit the segmentation on the customers with orders. Returns the PipelineModel (ending in
    the id/name mapping stage), the customers with their raw cluster and distance_to_centre
    (cached: unpersist when done; the model's last stage adds segment_id and segment_name) and facts: k, silhouette, silhouettes by k, population
    medians, number of customers."""
    active = features.filter(F.col(FT.HAS_ORDERS)).transform(deterministic_layout)
    n = active.count()
    if n < 3:
        raise SegmentError(f"only {n} customers with orders in gold.customer_features: "
                           f"need at least 3 to segment")
    prep = Pipeline(stages=preprocessing_stages(params.features, params.log_features)).fit(active)
    scaled = prep.transform(active).select(C.CUSTOMER_ID, VECTOR)
    facts: dict = {"n_customers": n, "silhouettes": {}}
    fitted = None
    if params.k is None:
        k_values = [k for k in range(params.k_min, params.k_max + 1) if k < n]
        if not k_values:
            raise SegmentError(f"segment.k_min {params.k_min} needs more than {n} customers")
        fraction = 1.0 if not params.selection_sample else min(1.0, params.selection_sample / n)
        selection = scaled if fraction >= 1.0 else scaled.sample(False, fraction, params.seed)
        selection = selection.cache()
        try:
            k, facts["silhouettes"], models, facts["rule"] = choose_k(
                selection, k_values, params.seed, params.max_iter, params.n_init,
                params.silhouette_tolerance)
        finally:
            selection.unpersist()
        if fraction >= 1.0:  # the search already fitted this k on every customer
            fitted = PipelineModel(stages=[*prep.stages, models[k]])
            facts["silhouette"] = facts["silhouettes"][k]
    else:
        if params.k >= n:
            raise SegmentError(f"segment.k = {params.k} needs more than {n} customers")
        k = params.k
    facts["k"] = k

    if fitted is None:
        fitted = PipelineModel(stages=[*prep.stages,
                                       fit_kmeans(scaled, k, params.seed, params.max_iter, params.n_init)])
    centres = [list(map(float, c)) for c in fitted.stages[-1].clusterCenters()]
    predictions = fitted.transform(active).transform(lambda df: with_distance(df, centres))
    predictions = predictions.cache()
    if "silhouette" not in facts:
        facts["silhouette"] = silhouette(predictions)

    pop = active.agg(F.percentile_approx(F.col(FT.FREQUENCY).cast("double"), 0.5, 10000).alias("f"),
                     F.percentile_approx(F.col(FT.MONETARY), 0.5, 10000).alias("m")).first()
    facts["population_median_frequency"], facts["population_median_monetary"] = pop["f"], pop["m"]
    cluster_profiles = profile(predictions, CLUSTER, 1, 0.0).toPandas()  # k rows
    names = name_segments(cluster_profiles, pop["f"], pop["m"], params.naming)
    model = PipelineModel(stages=[*fitted.stages, mapping_stage(names)])
    return model, predictions, facts


def run(spark: SparkSession, conf: Conf) -> dict:
    """The segment job: gold.customer_features -> gold.customer_segments, gold.segment_profiles,
    the saved PipelineModel, and the RFM score segments gold.rfm_segments. Returns the run summary (metrics k, silhouette,
    silhouette_k<k> for each k tried, customers_segmented, returns_only_customers)."""
    params = SegmentParams.from_conf(conf)
    path = model_path(conf)
    with JobRun(spark, conf, "segment", {**conf.segment.model_dump(), "model_path": path}) as run:
        features = run.read("gold.customer_features")
        run.as_of()  # recorded: the features it segments are computed as of this date
        require_columns(features, (C.CUSTOMER_ID, FT.HAS_ORDERS, *FT.NUMERIC_FEATURES),
                        "gold.customer_features", SegmentError)
        model, predictions, facts = fit_segments(spark, features, params)
        try:
            assigned = assign_segments(model, predictions, features)
            run.rows_out = run.write(assigned, "gold.customer_segments")
            totals = features.agg(F.count("*").alias("n"), F.sum(FT.MONETARY).alias("m")).first()
            profiles = (profile(assigned, SEGMENT_ID, int(totals["n"]), float(totals["m"] or 0.0))
                        .join(assigned.select(SEGMENT_ID, SEGMENT_NAME).distinct(), SEGMENT_ID))
            run.write(profiles.orderBy(SEGMENT_ID), "gold.segment_profiles")
        finally:
            predictions.unpersist()
        write_rfm(run, features)
        model.write().overwrite().save(path)
        run.rows_in = int(totals["n"])
        record_fit(run, facts, params, path, int(totals["n"]) - facts["n_customers"])
        print(format_profiles(run.read_output("gold.segment_profiles")))
    return run.summary()


def write_rfm(run: JobRun, features: DataFrame) -> None:
    """gold.rfm_segments beside the KMeans segments; the score boundaries in the run record."""
    from shopsense.customers.rfm import rfm_segments

    scored, cuts = rfm_segments(features)
    rows = run.write(scored, "gold.rfm_segments")
    run.metric("rfm_customers", rows)
    run.note("RFM score boundaries (20/40/60/80 %): " + "; ".join(
        f"{name} {', '.join(f'{c:g}' for c in values)}" for name, values in cuts.items()))


def assign_segments(model: PipelineModel, predictions: DataFrame, features: DataFrame) -> DataFrame:
    """Every customer of gold.customer_features with its segment: the clustered ones through
    the model's naming stage, customers with only returns in the "returns only" segment."""
    scored = model.stages[-1].transform(predictions)
    returns_only = (features.filter(~F.col(FT.HAS_ORDERS))
                    .withColumn(SEGMENT_ID, F.lit(RETURNS_ONLY_ID))
                    .withColumn(SEGMENT_NAME, F.lit(RETURNS_ONLY_NAME))
                    .withColumn(DISTANCE, F.lit(None).cast("double")))
    cols = [C.CUSTOMER_ID, SEGMENT_ID, SEGMENT_NAME, DISTANCE, *PROFILE_FEATURES]
    return scored.select(cols).unionByName(returns_only.select(cols))


def record_fit(run: JobRun, facts: dict, params: SegmentParams, path: str, n_returns_only: int) -> None:
    """The fit's figures in the run record, and the note saying how k was chosen."""
    run.metric("k", facts["k"])
    run.metric("silhouette", facts["silhouette"], key=True)
    for k, s in facts["silhouettes"].items():
        run.metric(f"silhouette_k{k}", s)
    run.metric("customers_segmented", facts["n_customers"])
    run.metric("returns_only_customers", n_returns_only)
    how = ("fixed by segment.k" if params.k is not None else
           f"chosen by {facts['rule']} over " + ", ".join(f"k={k}: {s:.3f}"
                                                          for k, s in facts["silhouettes"].items()))
    run.note(f"k = {facts['k']} ({how}); silhouette of the final model "
             f"{facts['silhouette']:.3f}; model saved to {path}")
    print(f"segment: k = {facts['k']}, silhouette = {facts['silhouette']:.3f}")


def format_profiles(profiles: DataFrame) -> str:
    """The profile table as text (a few columns, one line per segment: it has k + 1 rows)."""
    cols = [SEGMENT_ID, SEGMENT_NAME, "n_customers", "customer_share", "revenue_share",
            "median_recency_days", "median_frequency", "median_monetary", "median_tenure_days"]
    pdf = profiles.select(cols).orderBy(SEGMENT_ID).toPandas()
    return pdf.to_string(index=False, float_format=lambda v: f"{v:.3g}")
