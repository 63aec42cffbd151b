"""The table comparison the cluster tests rely on can fail: a changed key, a changed value, a
float beyond its tolerance."""

from __future__ import annotations

import datetime as dt

import pytest

from shopsense.core import tables
from tests.cluster.compare import assert_tables_equal
from tests.helpers import make_conf

NOW = dt.datetime(2024, 1, 1)


def _write(spark, conf, rows, run_id):
    df = spark.createDataFrame([(*r, dt.date(2024, 1, 1), run_id, NOW) for r in rows],
                               "sku string, on_hand double, on_order double, as_of date, "
                               "run_id string, computed_at timestamp")
    tables.overwrite(df, conf, "silver.inventory")


@pytest.fixture
def two(spark, tmp_path):
    a, b = make_conf(tmp_path / "a"), make_conf(tmp_path / "b")
    _write(spark, a, [("A", 10.0, 0.0), ("B", 1.0 / 3.0, None)], "run-a")
    return a, b


def test_same_rows_in_another_run_are_equal(spark, two):
    a, b = two
    _write(spark, b, [("B", 1.0 / 3.0, None), ("A", 10.0, 0.0)], "run-b")  # run_id differs
    assert assert_tables_equal(spark, a, b, "silver.inventory", ["sku"]) == 2


@pytest.mark.parametrize("rows, message", [
    ([("A", 10.0, 0.0), ("C", 1.0 / 3.0, None)], "different keys"),
    ([("A", 10.0, 0.0)], "1 rows on the cluster, 2 in local mode"),
    ([("A", 10.0, 0.0), ("B", 1.0 / 3.0, 5.0)], r"on_order \(1 rows"),
    ([("A", 10.0 * (1 + 1e-6), 0.0), ("B", 1.0 / 3.0, None)], r"on_hand \(1 rows"),
])
def test_differences_fail(spark, two, rows, message):
    a, b = two
    _write(spark, b, rows, "run-b")
    with pytest.raises(AssertionError, match=message):
        assert_tables_equal(spark, a, b, "silver.inventory", ["sku"])


def test_a_float_within_its_tolerance_passes(spark, two):
    a, b = two
    _write(spark, b, [("A", 10.0 * (1 + 1e-6), 0.0), ("B", 1.0 / 3.0, None)], "run-b")
    assert_tables_equal(spark, a, b, "silver.inventory", ["sku"], {"on_hand": dict(rtol=1e-4, atol=0)})
