"""features + segment jobs end to end on sample data with planted customer groups."""

import datetime as dt
from dataclasses import replace

import pytest
from pyspark.ml import PipelineModel
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopsense.core import columns as C
from shopsense.customers import features
from shopsense.customers import segments as segment
from shopsense.core import tables
from shopsense.core.runs import read_runs
from shopsense.ingest.sample import GROUPS, SampleSpec, order_lines, truth_tables
from tests.helpers import make_conf, silver_from_sample

SPEC = SampleSpec(n_customers=500, n_skus=60, n_days=365, seed=7)
#: Generator seeds the planted groups must be recovered on; the other tests use SPEC.seed's run.
#: Measured on 1 Dec 2026: k = 4 and ARI 1.000 on each (silhouette 0.917, 0.904, 0.922).
SEEDS = (7, 8, 9)
# The search range includes k = 2, the usual silhouette trap; kept short for test time.
OVERRIDES = ("segment.k_min=2", "segment.k_max=6")
RETURNS_ONLY = "R-returns-only"


def planted_lines(spark, spec):
    """The generator's order lines as silver rows, plus one returns-only customer."""
    lines = order_lines(spark, spec)
    extra = spark.createDataFrame(
        [("C9999999", RETURNS_ONLY, "S00001", -2, 5.0, dt.datetime(2023, 12, 20, 10), "GIFT", "HOME DECOR",
          "UK")], schema=lines.schema)
    return silver_from_sample(lines.unionByName(extra))


@pytest.fixture(scope="module")
def planted_runs(spark, tmp_path_factory):
    """features + segment on the planted sample of a generator seed, run once per seed in this
    module: seed -> (conf, features summary, segment summary)."""
    runs = {}

    def run(seed: int):
        if seed not in runs:
            conf = make_conf(tmp_path_factory.mktemp(f"segment-seed{seed}") / "warehouse", *OVERRIDES)
            tables.overwrite(planted_lines(spark, replace(SPEC, seed=seed)), conf, "silver.order_lines")
            runs[seed] = conf, features.run(spark, conf), segment.run(spark, conf)
        return runs[seed]
    return run


@pytest.fixture(scope="module")
def planted(planted_runs):
    return planted_runs(SPEC.seed)


def without_run_columns(df):
    return df.drop(C.RUN_ID, C.COMPUTED_AT)


@pytest.mark.parametrize("seed", SEEDS)
def test_chosen_k_and_ari_recover_the_planted_groups(spark, planted_runs, seed):
    conf, _, summary = planted_runs(seed)
    segments = tables.read_table(spark, conf, "gold.customer_segments")
    truth = truth_tables(spark, replace(SPEC, seed=seed))["customers"]
    counts = (segments.join(truth, C.CUSTOMER_ID)
              .groupBy("group", segment.SEGMENT_ID).count().toPandas()   # groups x k cells
              .pivot(index="group", columns=segment.SEGMENT_ID, values="count").fillna(0))
    ari = segment.adjusted_rand_index_from_table(counts)
    print(f"planted sample, seed {seed}: k = {summary['metrics']['k']:.0f}, "
          f"silhouette = {summary['metrics']['silhouette']:.3f}, ARI = {ari:.3f}")
    assert summary["metrics"]["k"] == len(GROUPS)
    assert ari >= 0.95


@pytest.mark.parametrize("seed", SEEDS)
def test_each_planted_group_gets_its_rfm_name(spark, planted_runs, seed):
    conf, _, _ = planted_runs(seed)
    segments = tables.read_table(spark, conf, "gold.customer_segments")
    truth = truth_tables(spark, replace(SPEC, seed=seed))["customers"]
    majority = {r["group"]: r[segment.SEGMENT_NAME] for r in
                segments.join(truth, C.CUSTOMER_ID).groupBy("group", segment.SEGMENT_NAME).count()
                .orderBy(F.desc("count")).dropDuplicates(["group"]).collect()}
    assert majority == {"champions": "champions", "loyal": "loyal", "at_risk": "at risk",
                        "new": "new"}


def test_run_record_has_k_and_silhouette(spark, planted):
    conf, _, summary = planted
    record = (read_runs(spark, conf)
              .filter(F.col(C.RUN_ID) == summary["run_id"]).first())
    assert record["status"] == "succeeded"
    assert record["metrics"]["k"] == summary["metrics"]["k"]
    assert 0.5 < record["metrics"]["silhouette"] <= 1.0
    assert {f"silhouette_k{k}" for k in range(2, 7)} <= set(record["metrics"])


def test_returns_only_customer_has_its_own_segment(spark, planted):
    conf, features_summary, _ = planted
    assert features_summary["metrics"]["returns_only_customers"] == 1
    got = (tables.read_table(spark, conf, "gold.customer_segments")
           .filter(F.col(C.CUSTOMER_ID) == RETURNS_ONLY)
           .select(segment.SEGMENT_ID, segment.SEGMENT_NAME, segment.DISTANCE))
    expected = spark.createDataFrame([(-1, "returns only", None)],
                                     "segment_id int, segment_name string, distance_to_centre double")
    assertDataFrameEqual(got, expected)


def test_profiles_cover_every_customer(spark, planted):
    conf, _, summary = planted
    profiles = tables.read_table(spark, conf, "gold.segment_profiles").toPandas()
    n_features = tables.read_table(spark, conf, "gold.customer_features").count()
    assert len(profiles) == summary["metrics"]["k"] + 1          # + returns only
    assert profiles["n_customers"].sum() == n_features
    assert profiles["customer_share"].sum() == pytest.approx(1.0)
    assert profiles["revenue_share"].sum() == pytest.approx(1.0)
    assert profiles["segment_name"].is_unique
    # segment ids run by value: 0 has the highest median net revenue
    clustered = profiles[profiles["segment_id"] >= 0].sort_values("segment_id")
    assert clustered["median_monetary"].is_monotonic_decreasing


def test_saved_model_scores_customers_like_the_job(spark, planted):
    conf, _, _ = planted
    model = PipelineModel.load(segment.model_path(conf))
    feats = tables.read_table(spark, conf, "gold.customer_features").filter(F.col("has_orders"))
    scored = model.transform(feats).select(C.CUSTOMER_ID, segment.SEGMENT_ID, segment.SEGMENT_NAME)
    written = (tables.read_table(spark, conf, "gold.customer_segments")
               .filter(F.col(segment.SEGMENT_ID) >= 0)
               .select(C.CUSTOMER_ID, segment.SEGMENT_ID, segment.SEGMENT_NAME))
    assertDataFrameEqual(scored, written, checkRowOrder=False)


def test_run_twice_gives_the_same_segments_and_names(spark, planted):
    conf, _, first = planted
    before = {name: without_run_columns(tables.read_table(spark, conf, name)).toPandas()
              for name in ("gold.customer_features", "gold.customer_segments",
                           "gold.segment_profiles")}
    features.run(spark, conf)
    second = segment.run(spark, conf)
    assert second["metrics"] == first["metrics"]
    for name, frame in before.items():
        after = without_run_columns(tables.read_table(spark, conf, name))
        assertDataFrameEqual(after, spark.createDataFrame(frame, schema=after.schema),
                             checkRowOrder=False)


def test_too_few_customers_is_an_error(spark, conf_factory):
    conf = conf_factory()
    tables.overwrite(planted_lines(spark, SPEC).filter(F.col(C.CUSTOMER_ID) == RETURNS_ONLY),
                     conf, "silver.order_lines")
    features.run(spark, conf)
    with pytest.raises(segment.SegmentError, match="only 0 customers with orders"):
        segment.run(spark, conf)
    record = read_runs(spark, conf).filter("job = 'segment'").first()
    assert record["status"] == "failed"


def test_segment_needs_the_features_table(spark, conf_factory):
    with pytest.raises(tables.TableNotFoundError, match="gold.customer_features"):
        segment.run(spark, conf_factory())
