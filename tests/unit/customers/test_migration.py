"""Segment migration's pure parts (no Spark): period ends, and the projection of the next
period's mix against numpy."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from shopsense.customers import migration as MG

D = dt.date


# --- period ends ---------------------------------------------------------------------------

@pytest.mark.parametrize("as_of, expected", [
    (D(2024, 3, 15), [D(2023, 12, 31), D(2024, 1, 31), D(2024, 2, 29)]),   # mid-month: Feb is last
    (D(2024, 3, 31), [D(2024, 1, 31), D(2024, 2, 29), D(2024, 3, 31)]),   # a month end counts
    (D(2024, 1, 1), [D(2023, 10, 31), D(2023, 11, 30), D(2023, 12, 31)]),
])
def test_month_ends_are_on_or_before_as_of(as_of, expected):
    assert MG.period_ends(as_of, "month", 2) == expected


def test_day_periods_end_at_as_of():
    assert MG.period_ends(D(2024, 3, 15), "days", 2, 7) == [D(2024, 3, 1), D(2024, 3, 8), D(2024, 3, 15)]


def test_next_period_end():
    assert MG.next_period_end(D(2024, 1, 31), "month") == D(2024, 2, 29)
    assert MG.next_period_end(D(2024, 12, 31), "month") == D(2025, 1, 31)
    assert MG.next_period_end(D(2024, 3, 15), "days", 7) == D(2024, 3, 22)


def test_bad_period_parameters_are_errors():
    with pytest.raises(MG.MigrationError, match="periods must be at least 1"):
        MG.period_ends(D(2024, 3, 15), "month", 0)
    with pytest.raises(MG.MigrationError, match="'month' or 'days', got 'week'"):
        MG.period_ends(D(2024, 3, 15), "week", 2)


# --- projection ----------------------------------------------------------------------------

def test_projection_is_the_mix_times_the_pooled_matrix():
    rng = np.random.default_rng(3)
    segments = ["a", "b", MG.INACTIVE]
    counts = rng.integers(1, 50, size=(3, 3))
    new_counts = rng.integers(1, 20, size=3)
    pooled = pd.DataFrame([(f, t, int(counts[i, j])) for i, f in enumerate(segments)
                           for j, t in enumerate(segments)]
                          + [(MG.NEW, t, int(new_counts[j])) for j, t in enumerate(segments)],
                          columns=[MG.FROM, MG.TO, MG.CUSTOMERS])
    current = pd.DataFrame({MG.SEGMENT: segments, MG.CUSTOMERS: [40.0, 25.0, 10.0]})
    got = MG.project_mix(current, pooled, n_periods=4).set_index(MG.SEGMENT)
    matrix = counts / counts.sum(axis=1, keepdims=True)
    new_per_period = new_counts.sum() / 4
    expected = current[MG.CUSTOMERS].to_numpy() @ matrix + new_per_period * new_counts / new_counts.sum()
    assert np.allclose(got.loc[segments, MG.CUSTOMERS], expected)
    assert got[MG.SHARE].sum() == pytest.approx(1.0)


def test_a_segment_without_history_stays_where_it_is():
    pooled = pd.DataFrame([("a", "a", 3), ("a", "b", 1)], columns=[MG.FROM, MG.TO, MG.CUSTOMERS])
    current = pd.DataFrame({MG.SEGMENT: ["a", "c"], MG.CUSTOMERS: [8.0, 2.0]})
    got = MG.project_mix(current, pooled, n_periods=1)
    assert list(zip(got[MG.SEGMENT], got[MG.CUSTOMERS])) == [("a", 6.0), ("b", 2.0), ("c", 2.0)]
