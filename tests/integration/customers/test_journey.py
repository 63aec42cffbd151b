"""The journey job: the planted step probabilities of the sample's sessions recovered by its
funnel (several generator seeds), the funnel and transitions as of a date, no events source."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.customers import journey
from shopsense.ingest import events as ingest_events
from shopsense.ingest import sample
from shopsense.ingest.sample_events import STEP_PROBABILITIES
from shopsense.ingest.sample_spec import SampleSpec
from tests.helpers import make_conf

STEPS = list(C.EVENT_TYPES)
#: Small samples generated directly (no ingest): enough sessions per group for a few points of error.
RECOVERY_SPEC = dict(n_customers=600, n_skus=40, n_days=120, n_pairs=4)
SEEDS = (3, 17, 42)
#: Standard errors allowed on each side: each one-sided bound fails by chance with p ~ 3e-5.
Z = 4.0


def silver_events(generated):
    """The generator's events in the silver.events shape, without running ingest (tested on its
    own): customer ids stay raw, so they join the truth tables."""
    key = F.sha2(F.concat_ws("|", C.SESSION_ID, C.SKU, C.EVENT_TYPE, F.unix_micros(C.EVENT_AT)), 256)
    return tables.conform(
        generated.withColumn(C.EVENT_ID, key).withColumn(C.EVENT_DATE, F.to_date(C.EVENT_AT))
        .withColumn(C.SOURCE_FILE, F.lit("sample")).withColumn(C.RUN_ID, F.lit("sample"))
        .withColumn(C.INGESTED_AT, F.lit(dt.datetime(2024, 1, 1))), ingest_events.EVENTS)


def last_day(spec: SampleSpec) -> dt.date:
    return dt.date.fromisoformat(spec.start_date) + dt.timedelta(days=spec.n_days - 1)


def test_funnel_and_transitions_of_a_few_sessions(spark):
    """A full funnel (a), views only (b: two at the same second, ordered by SKU), an anonymous
    purchase without a view (c), a purchase without a cart (d), and events after as_of (e)."""
    day, later = "2024-03-01", "2024-03-02"
    rows = [("a", "c1", "s1", "view", f"{day} 10:00:00"), ("a", "c1", "s1", "add_to_cart", f"{day} 10:01:00"),
            ("a", "c1", "s1", "purchase", f"{day} 10:05:00"),
            ("b", "c1", "s3", "view", f"{day} 11:00:00"), ("b", "c1", "s2", "view", f"{day} 11:00:00"),
            ("c", None, "s1", "purchase", f"{day} 12:00:00"),
            ("d", "c2", "s1", "view", f"{day} 13:00:00"), ("d", "c2", "s1", "purchase", f"{day} 13:02:00"),
            ("e", "c2", "s1", "view", f"{later} 09:00:00"),
            ("e", "c2", "s1", "add_to_cart", f"{later} 09:01:00")]
    generated = spark.createDataFrame(rows, "session_id string, customer_id string, sku string, "
                                            "event_type string, event_at string").withColumn(
        C.EVENT_AT, F.to_timestamp(C.EVENT_AT))
    as_of = dt.date.fromisoformat(day)
    events = journey.filter_window(silver_events(generated), as_of, None, STEPS)
    funnel = journey.funnel(journey.session_depths(events, 3), STEPS, as_of, None)
    assertDataFrameEqual(funnel.drop(C.AS_OF, "window_start"), spark.createDataFrame([
        (1, "view", 3, 2, 1.0, None, 1.0), (2, "add_to_cart", 1, 1, 1 / 3, 1 / 3, 0.5),
        (3, "purchase", 1, 1, 1 / 3, 1.0, 0.5)],
        "step_index int, step string, sessions bigint, customers bigint, share_of_first double, "
        "step_conversion double, customer_share_of_first double"))
    assertDataFrameEqual(journey.transitions(events, as_of).drop(C.AS_OF), spark.createDataFrame([
        ("start", "view", 3, 3, 0.75), ("start", "purchase", 1, 1, 0.25),
        ("view", "add_to_cart", 1, 1, 0.25), ("view", "view", 1, 1, 0.25), ("view", "exit", 1, 1, 0.25),
        ("view", "purchase", 1, 1, 0.25), ("add_to_cart", "purchase", 1, 1, 1.0),
        ("purchase", "exit", 3, 3, 1.0)],
        "from_step string, to_step string, transitions bigint, sessions bigint, probability double"))


@pytest.mark.parametrize("seed", SEEDS)
def test_planted_step_probabilities_are_recovered_per_group(spark, seed):
    spec = SampleSpec(seed=seed, **RECOVERY_SPEC)
    as_of = last_day(spec)
    events = journey.filter_window(silver_events(sample.events(spark, spec)), as_of, None, STEPS)
    groups = sample.truth_tables(spark, spec)["customers"].select(C.CUSTOMER_ID, "group")
    depths = journey.session_depths(events, len(STEPS)).join(groups, C.CUSTOMER_ID).cache()
    for group, planted in STEP_PROBABILITIES.items():
        rows = journey.funnel(depths.filter(F.col("group") == group), STEPS, as_of, None).orderBy(
            journey.STEP_INDEX).collect()
        assert rows[0]["share_of_first"] == 1.0 and rows[0]["step_conversion"] is None
        for k, p in enumerate(planted, start=1):
            n, got = rows[k - 1]["sessions"], rows[k]["step_conversion"]
            se = math.sqrt(p * (1 - p) / n)
            print(f"recovery seed={seed} group={group} step={STEPS[k]} planted={p} got={got:.4f} "
                  f"n={n} se={se:.4f}")
            assert got >= p - Z * se, f"{group} {STEPS[k]}: {got:.4f} below {p} - {Z} se ({se:.4f}, n={n})"
            assert got <= p + Z * se, f"{group} {STEPS[k]}: {got:.4f} above {p} + {Z} se ({se:.4f}, n={n})"
    depths.unpersist()


def test_nothing_depends_on_an_event_after_as_of(spark, tmp_path):
    """The job on events that go on for weeks after as_of and on the same events cut at as_of."""
    spec = SampleSpec(n_customers=150, n_skus=40, n_days=60, n_pairs=4)
    as_of = dt.date.fromisoformat(spec.start_date) + dt.timedelta(days=40)
    events = silver_events(sample.events(spark, spec)).cache()
    assert events.filter(F.col(C.EVENT_DATE) > F.lit(as_of)).count() > 0.2 * events.count()
    settings = (f"as_of={as_of}", "journey.window_days=30")
    full, cut = make_conf(tmp_path / "full", *settings), make_conf(tmp_path / "cut", *settings)
    tables.overwrite(events, full, "silver.events")
    tables.overwrite(events.filter(F.col(C.EVENT_DATE) <= F.lit(as_of)), cut, "silver.events")
    for conf in (full, cut):
        assert journey.run(spark, conf)["status"] == "succeeded"
    for name in ("gold.journey_funnel", "gold.journey_transitions"):
        a, b = (tables.read_table(spark, c, name).drop(C.RUN_ID, C.COMPUTED_AT) for c in (full, cut))
        assert b.count() > 0 and a.count() == b.count(), name
        assert a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0, name
    funnel = tables.read_table(spark, cut, "gold.journey_funnel").orderBy(journey.STEP_INDEX).collect()
    assert [r["step"] for r in funnel] == STEPS
    assert funnel[0]["window_start"] == as_of - dt.timedelta(days=29) and funnel[0][C.AS_OF] == as_of
    # the funnel counted straight from the events of the window
    window = events.filter(F.col(C.EVENT_DATE).between(as_of - dt.timedelta(days=29), as_of))
    has = window.groupBy(C.SESSION_ID).agg(
        *[F.max((F.col(C.EVENT_TYPE) == s).cast("int")).alias(s) for s in STEPS])
    expected = [has.filter(" AND ".join(f"{s} = 1" for s in STEPS[:k + 1])).count()
                for k in range(len(STEPS))]
    assert [r["sessions"] for r in funnel] == expected
    transitions = tables.read_table(spark, cut, "gold.journey_transitions")
    sums = {r[0]: r[1] for r in transitions.groupBy("from_step").agg(F.sum("probability")).collect()}
    assert set(sums) == {journey.START, *STEPS} and all(abs(v - 1) < 1e-12 for v in sums.values())
    starts = transitions.filter(F.col("from_step") == journey.START).collect()
    assert [(r["to_step"], r["transitions"]) for r in starts] == [(C.VIEW, expected[0])]


def test_without_an_events_source_nothing_is_written_and_the_job_succeeds(spark, conf_factory):
    conf = conf_factory("sources.sample.events=null", "as_of=2023-03-01")
    summary = journey.run(spark, conf)
    assert summary["status"] == "succeeded"
    assert any("no events file" in note for note in summary["notes"])
    assert not tables.table_exists(spark, conf, "gold.journey_funnel")
    assert not tables.table_exists(spark, conf, "gold.journey_transitions")


@pytest.mark.slow
def test_journey_runs_in_run_all_on_the_sample(spark, quick_pipeline):
    conf, results = quick_pipeline
    assert results["journey"]["status"] == "succeeded"
    funnel = tables.read_table(spark, conf, "gold.journey_funnel").orderBy(journey.STEP_INDEX).collect()
    assert [r["step"] for r in funnel] == STEPS
    sessions = [r["sessions"] for r in funnel]
    assert sessions[0] > 0 and sessions == sorted(sessions, reverse=True)
    assert all(r["customers"] <= r["sessions"] for r in funnel)
    # the groups' mix of planted probabilities: the overall conversion lies between them
    for k, row in enumerate(funnel[1:]):
        planted = [p[k] for p in STEP_PROBABILITIES.values()]
        assert min(planted) - 0.05 <= row["step_conversion"] <= max(planted) + 0.05, row
    assert results["journey"]["metrics"]["sessions"] == sessions[0]
