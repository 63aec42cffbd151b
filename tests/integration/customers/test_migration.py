"""Segment migration on a sample with planted migration (shopsense.ingest.sample_migration): the
planted transition probabilities recovered on several generator seeds; the job's tables in the
quick pipeline's warehouse; its error without a segment model."""

from dataclasses import replace

import pandas as pd
import pytest
from pyspark.sql import functions as F

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.customers import features as FT
from shopsense.customers import migration as MG
from shopsense.customers import segments as SG
from shopsense.ingest import sample_migration as SM
from tests.helpers import make_conf, silver_from_sample

SPEC = SM.MigrationSpec(n_customers=2000, n_months=8, seed=7)
SEEDS = (7, 8, 9)
TOLERANCE = 0.05
#: One month of orders per feature window: a window of 28 days ending on a month end holds
#: exactly the orders of the month (they fall on days 4..28).
WINDOW_DAYS = 28
#: Segments on order rate and spend: with a one-month window, recency and tenure only say where
#: in the month a customer's orders fell, which the planted states do not differ by. k is fixed
#: at the number of planted buying states (lapsed customers have no row: "(inactive)").
SEGMENT_OVERRIDES = ("segment.k=3", "segment.n_init=1", "segment.features=[frequency, monetary]",
                     "segment.log_features=[frequency, monetary]")


def majority_mapping(states, truth) -> dict[str, str]:
    """Each segment (and "(inactive)") to the planted state most of its customer-months are in."""
    counts = (states.join(truth.withColumnRenamed("month_end", MG.PERIOD_END), [C.CUSTOMER_ID, MG.PERIOD_END])
              .groupBy(MG.SEGMENT, "state_name").count().toPandas())   # segments x states cells
    best = counts.sort_values(["count", "state_name"], ascending=[False, True]).drop_duplicates(MG.SEGMENT)
    return {**dict(zip(best[MG.SEGMENT], best["state_name"])), MG.NEW: MG.NEW}


@pytest.fixture(scope="module")
def recovered(spark, tmp_path_factory):
    """Per generator seed, computed once in this module: the segment model fitted as the segment
    job fits it on the features of the last month end, every customer's state at months 1..7,
    gold.segment_transitions' rows, and the segment -> planted state mapping."""
    results = {}

    def compute(seed: int):
        if seed not in results:
            spec = replace(SPEC, seed=seed)
            conf = make_conf(tmp_path_factory.mktemp(f"migration-{seed}") / "warehouse", *SEGMENT_OVERRIDES)
            lines = silver_from_sample(SM.order_lines(spark, spec)).cache()
            ends = [spec.month_end(m) for m in range(1, spec.n_months)]
            model, predictions, _ = SG.fit_segments(
                spark, FT.customer_features(lines, ends[-1], WINDOW_DAYS), SG.SegmentParams.from_conf(conf))
            predictions.unpersist()
            states = MG.period_states(lines, model, ends, WINDOW_DAYS).cache()
            transitions = MG.transition_table(states, ends).toPandas()   # (segments + 2)^2 x periods
            mapping = majority_mapping(states, SM.truth(spark, spec))
            states.unpersist()
            lines.unpersist()
            results[seed] = transitions, mapping
        return results[seed]
    return compute


def planted_vs_estimated(transitions: pd.DataFrame, mapping: dict[str, str]) -> pd.DataFrame:
    """Every planted (from, to) probability beside the pooled estimate between the segments
    mapped to them (0 where no customer moved so)."""
    pooled = transitions[transitions[MG.SCOPE] == MG.SCOPE_POOLED]
    estimated = (pooled.assign(from_state=pooled[MG.FROM].map(mapping), to_state=pooled[MG.TO].map(mapping))
                 .groupby(["from_state", "to_state"])[MG.PROBABILITY].sum().rename("estimated"))
    out = SM.planted_transitions().join(estimated, on=["from_state", "to_state"])
    return out.assign(estimated=out["estimated"].fillna(0.0),
                      error=lambda d: (d["estimated"] - d["probability"]).abs())


@pytest.mark.parametrize("seed", SEEDS)
def test_planted_transition_probabilities_are_recovered(recovered, seed):
    transitions, mapping = recovered(seed)
    # one segment per planted state: three buying segments and "(inactive)" for the lapsed
    assert sorted(v for k, v in mapping.items() if k != MG.NEW) == sorted(SM.STATES)
    compared = planted_vs_estimated(transitions, mapping)
    worst = compared.loc[compared["error"].idxmax()]
    print(f"migration sample, seed {seed}: max |p^ - p| = {worst['error']:.4f} ({worst['from_state']} -> "
          f"{worst['to_state']}: {worst['estimated']:.3f} vs {worst['probability']})")
    assert len(compared) == len(SM.STATES) * (len(SM.STATES) + 1)
    bad = compared[compared["error"] > TOLERANCE]
    assert bad.empty, bad.to_string()


@pytest.mark.parametrize("seed", SEEDS[:1])
def test_each_period_row_sums_to_one_and_pooled_rows_add_up_the_periods(recovered, seed):
    transitions, _ = recovered(seed)
    per_row = transitions.groupby([MG.SCOPE, MG.PERIOD_END, MG.FROM])[MG.PROBABILITY].sum()
    assert per_row.to_numpy() == pytest.approx(1.0)
    period = transitions[transitions[MG.SCOPE] == MG.SCOPE_PERIOD]
    pooled = transitions[transitions[MG.SCOPE] == MG.SCOPE_POOLED].set_index([MG.FROM, MG.TO])
    assert period[MG.PERIOD_END].nunique() == SPEC.n_months - 2
    assert (period.groupby([MG.FROM, MG.TO])[MG.CUSTOMERS].sum() == pooled[MG.CUSTOMERS].sort_index()).all()
    assert not (period[MG.TO] == MG.NEW).any()


# --- the job -------------------------------------------------------------------------------

def test_job_tables_in_the_quick_pipeline(spark, quick_pipeline):
    conf, results = quick_pipeline
    summary = results["migration"]
    assert summary["status"] == "succeeded", summary
    transitions = tables.read_table(spark, conf, "gold.segment_transitions").toPandas()
    mix = tables.read_table(spark, conf, "gold.segment_mix").toPandas()
    segments = set(tables.read_table(spark, conf, "gold.segment_profiles").toPandas()[SG.SEGMENT_NAME])
    assert set(transitions[MG.TO]) <= segments | {MG.INACTIVE}
    assert set(transitions[MG.FROM]) <= segments | {MG.INACTIVE, MG.NEW}
    per_row = transitions.groupby([MG.SCOPE, MG.PERIOD_END, MG.FROM])[MG.PROBABILITY].sum()
    assert per_row.to_numpy() == pytest.approx(1.0)
    period = transitions[transitions[MG.SCOPE] == MG.SCOPE_PERIOD]
    assert period[MG.PERIOD_END].nunique() == conf.migration.periods
    assert (period[MG.PERIOD_START].map(lambda d: d.day) == 1).all()   # calendar months
    # the customers at a period end are those moving into it, and those moving out of the one before
    observed = mix[mix[MG.KIND] == MG.OBSERVED]
    into = period.groupby(MG.PERIOD_END)[MG.CUSTOMERS].sum()
    at_end = observed.groupby(MG.PERIOD_END)[MG.CUSTOMERS].sum()
    assert (at_end.loc[into.index] == into).all()
    out_of = period[period[MG.FROM] != MG.NEW].groupby(MG.PERIOD_START)[MG.CUSTOMERS].sum()
    assert list(out_of) == list(at_end.iloc[:len(out_of)])
    # the projection: the next month end, as many customers as now plus the mean new per period
    projected = mix[mix[MG.KIND] == MG.PROJECTED]
    assert projected[MG.PERIOD_END].nunique() == 1 and projected[MG.PERIOD_END].iloc[0] > at_end.index.max()
    new = period[period[MG.FROM] == MG.NEW][MG.CUSTOMERS].sum() / conf.migration.periods
    assert projected[MG.CUSTOMERS].sum() == pytest.approx(at_end.iloc[-1] + new)
    assert mix.groupby([MG.PERIOD_END, MG.KIND])[MG.SHARE].sum().to_numpy() == pytest.approx(1.0)
    assert summary["metrics"]["periods"] == conf.migration.periods
    assert 0.0 <= summary["metrics"]["stay_share"] <= 1.0


def test_job_without_a_segment_model_says_to_run_segment(spark, conf_factory):
    conf = conf_factory()
    lines = silver_from_sample(SM.order_lines(spark, replace(SPEC, n_customers=20)))
    tables.overwrite(lines, conf, "silver.order_lines")
    with pytest.raises(MG.MigrationError, match="no segment model.*run the segment job first"):
        MG.run(spark, conf)
    assert not tables.table_exists(spark, conf, "gold.segment_transitions")
    assert not tables.table_exists(spark, conf, "gold.segment_mix")
