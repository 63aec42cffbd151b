"""Positions and running sums over a whole frame, computed partition by partition, equal
Python's sort and running sum of all the rows."""

from __future__ import annotations

import itertools

from pyspark.sql import functions as F

from shopsense.core.ordered import with_position, with_sum_before

ROWS = [(f"s{i:03d}", float(i % 5), None if i % 17 == 0 else float((i * 37) % 11)) for i in range(200)]
SCHEMA = "sku string, buyers double, revenue double"


def test_positions_in_a_descending_order_with_a_tie_breaker(spark):
    df = spark.createDataFrame(ROWS, SCHEMA).repartition(5)
    got = with_position(df, [F.desc("buyers"), F.asc("sku")], "pos")
    reference = sorted(ROWS, key=lambda r: (-r[1], r[0]))
    assert sorted(map(tuple, got.collect()), key=lambda r: r[3]) == [(*r, i + 1) for i, r in enumerate(reference)]
    assert with_position(df.limit(0), [F.asc("sku")], "pos").collect() == []


def test_running_sums_before_each_row_and_the_total(spark):
    df = spark.createDataFrame(ROWS, SCHEMA).repartition(3)
    got = with_sum_before(df, F.col("revenue"), [F.desc("revenue"), F.asc("sku")], "before", total="total")
    reference = sorted(ROWS, key=lambda r: (-(r[2] if r[2] is not None else float("-inf")), r[0]))
    # Spark sorts nulls last in a descending order, as the key above does
    amounts = [r[2] or 0.0 for r in reference]
    before = [0.0, *itertools.accumulate(amounts)][:-1]
    total = sum(amounts)
    rows = {r["sku"]: (r["before"], r["total"]) for r in got.collect()}
    assert [rows[r[0]] for r in reference] == [(b, total) for b in before]
    assert with_sum_before(df.limit(0), F.col("revenue"), [F.asc("sku")], "before", total="total").count() == 0
