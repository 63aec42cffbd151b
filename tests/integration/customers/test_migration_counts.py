"""Segment migration's Spark transforms on small frames: the transition table against a pandas
brute force, the states of new, inactive and returns-only customers, the error without a model."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.feature import SQLTransformer

from shopsense.customers import migration as MG
from shopsense.ingest.sample_orders import ORDERS_SCHEMA
from tests.helpers import silver_from_sample

D = dt.date


def test_missing_model_says_to_run_the_segment_job(spark, tmp_path):
    with pytest.raises(MG.MigrationError, match="run the segment job first"):
        MG.load_segment_model(spark, str(tmp_path / "models" / "segment"))


# --- transitions ---------------------------------------------------------------------------

ENDS = [D(2024, 1, 31), D(2024, 2, 29), D(2024, 3, 31)]


def random_states(seed: int, n: int = 60) -> pd.DataFrame:
    """Customers joining at a random period end and then in a random segment at each."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n):
        for end in ENDS[rng.integers(0, len(ENDS)):]:
            rows.append((f"c{c}", end, str(rng.choice(["a", "b", "returns only", MG.INACTIVE]))))
    return pd.DataFrame(rows, columns=["customer_id", MG.PERIOD_END, MG.SEGMENT])


def brute_force_transitions(states: pd.DataFrame) -> pd.DataFrame:
    """Each customer's segment at each end against its segment at the end before, counted."""
    at = {(r.customer_id, r.period_end): r.segment for r in states.itertuples()}
    rows = []
    for (customer, end), to in at.items():
        i = ENDS.index(end)
        if i == 0:
            continue
        rows.append((ENDS[i - 1] + dt.timedelta(days=1), end, at.get((customer, ENDS[i - 1]), MG.NEW), to))
    moves = pd.DataFrame(rows, columns=[MG.PERIOD_START, MG.PERIOD_END, MG.FROM, MG.TO])
    period = moves.groupby([MG.PERIOD_START, MG.PERIOD_END, MG.FROM, MG.TO]).size().rename(MG.CUSTOMERS)
    period = period.reset_index().assign(**{MG.SCOPE: MG.SCOPE_PERIOD})
    pooled = (moves.groupby([MG.FROM, MG.TO]).size().rename(MG.CUSTOMERS).reset_index()
              .assign(**{MG.SCOPE: MG.SCOPE_POOLED, MG.PERIOD_START: ENDS[0] + dt.timedelta(days=1),
                         MG.PERIOD_END: ENDS[-1]}))
    out = pd.concat([period, pooled], ignore_index=True)
    keys = [MG.SCOPE, MG.PERIOD_START, MG.PERIOD_END, MG.FROM]
    out[MG.PROBABILITY] = out[MG.CUSTOMERS] / out.groupby(keys)[MG.CUSTOMERS].transform("sum")
    return out.sort_values([MG.SCOPE, MG.PERIOD_END, MG.FROM, MG.TO]).reset_index(drop=True)


@pytest.mark.parametrize("seed", [1, 2])
def test_transition_table_matches_a_brute_force_count(spark, seed):
    states = random_states(seed)
    schema = f"customer_id string, {MG.PERIOD_END} date, {MG.SEGMENT} string"
    got = MG.transition_table(spark.createDataFrame(states, schema), ENDS).toPandas()
    expected = brute_force_transitions(states)[got.columns]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    rows = got.groupby([MG.SCOPE, MG.PERIOD_END, MG.FROM])[MG.PROBABILITY].sum()
    assert np.allclose(rows, 1.0)


def test_a_customer_who_joins_late_comes_from_new(spark):
    states = spark.createDataFrame([("x", ENDS[0], "a"), ("x", ENDS[1], "b"), ("y", ENDS[1], "a")],
                                   f"customer_id string, {MG.PERIOD_END} date, {MG.SEGMENT} string")
    got = MG.count_transitions(states, ENDS[:2]).toPandas()
    assert sorted(zip(got[MG.FROM], got[MG.TO], got[MG.CUSTOMERS])) == [(MG.NEW, "a", 1), ("a", "b", 1)]


# --- states --------------------------------------------------------------------------------

def test_states_of_new_inactive_and_returns_only_customers(spark):
    """A two-rule model (two orders or more: "often", else "once") on a 28-day window: x buys
    in January and March (inactive at the end of February), y first buys in February, z only
    returns in its March window, a guest line counts for nobody."""
    def line(order, customer, qty, day):
        return (order, customer, "S1", qty, 2.0, dt.datetime(2024, *day, 10), "P", "HOME", "UK")
    orders = spark.createDataFrame([
        line("1", "x", 1, (1, 10)), line("2", "x", 1, (1, 20)), line("3", "x", 1, (3, 5)),
        line("4", "y", 1, (2, 10)), line("5", "z", 1, (2, 20)), line("C5", "z", -1, (3, 6)),
        line("6", None, 1, (2, 10)),
    ], ORDERS_SCHEMA)
    model = PipelineModel(stages=[SQLTransformer(statement=(
        "SELECT *, CASE WHEN frequency >= 2 THEN 'often' ELSE 'once' END AS segment_name FROM __THIS__"))])
    got = MG.period_states(silver_from_sample(orders), model, ENDS, 28).toPandas()
    assert sorted(map(tuple, got[["customer_id", MG.PERIOD_END, MG.SEGMENT]].to_numpy())) == [
        ("x", ENDS[0], "often"), ("x", ENDS[1], MG.INACTIVE), ("x", ENDS[2], "once"),
        ("y", ENDS[1], "once"), ("y", ENDS[2], MG.INACTIVE),
        ("z", ENDS[1], "once"), ("z", ENDS[2], "returns only"),
    ]
