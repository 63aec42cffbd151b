"""Recommend building blocks on literal rows: interactions, indexing, block scoring, fallback,
and the Spark ranking metrics against their pandas reference."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from shopsense.recommend import als as R
from shopsense.recommend.metrics import ranking_metrics, ranking_metrics_pandas

LINES = T.StructType([
    T.StructField("customer_id", T.StringType()), T.StructField("sku", T.StringType()),
    T.StructField("quantity", T.DoubleType()), T.StructField("order_date", T.DateType()),
    T.StructField("is_guest", T.BooleanType()), T.StructField("is_product", T.BooleanType()),
])
D = dt.date


def test_interactions_net_returns_and_drop_guests_and_non_products(spark):
    lines = spark.createDataFrame([
        ("c1", "A", 3.0, D(2024, 1, 1), False, True),
        ("c1", "A", -1.0, D(2024, 1, 5), False, True),    # partial return
        ("c1", "B", 2.0, D(2024, 1, 2), False, True),
        ("c1", "B", -2.0, D(2024, 1, 9), False, True),    # fully returned: dropped
        ("c1", "POST", 1.0, D(2024, 1, 1), False, False),  # postage: not a product
        ("c2", "A", 1.0, D(2024, 1, 3), False, True),
        ("c2", "C", 4.0, D(2024, 1, 4), False, True),
        (None, "A", 5.0, D(2024, 1, 4), True, True),      # guest
    ], LINES)
    got = R.interactions(lines, strength="quantity")
    expected = spark.createDataFrame([
        ("c1", "A", 2.0, D(2024, 1, 1), 2.0),
        ("c2", "A", 1.0, D(2024, 1, 3), 1.0),
        ("c2", "C", 4.0, D(2024, 1, 4), 4.0),
    ], "customer_id string, sku string, net_quantity double, last_bought date, strength double")
    assertDataFrameEqual(got, expected)


def test_interactions_decay_and_events(spark):
    lines = spark.createDataFrame([("c1", "A", 1.0, D(2024, 1, 1), False, True),
                                   ("c1", "B", 1.0, D(2024, 1, 11), False, True)], LINES)
    events = spark.createDataFrame(
        [("c1", "B", "view", dt.datetime(2024, 1, 10)), ("c1", "C", "add_to_cart", dt.datetime(2024, 1, 10)),
         ("c1", "C", "wishlist", dt.datetime(2024, 1, 10)), (None, "C", "view", dt.datetime(2024, 1, 10))],
        "customer_id string, sku string, event_type string, event_at timestamp")
    got = R.interactions(lines, as_of=D(2024, 1, 11), half_life_days=10.0, strength="quantity",
                         events=events, event_weights={"view": 0.1, "add_to_cart": 0.5})
    expected = spark.createDataFrame([
        ("c1", "A", 1.0, D(2024, 1, 1), 0.5),          # ten days old: half weight
        ("c1", "B", 1.0, D(2024, 1, 11), 1.1),         # today's purchase + one view
        ("c1", "C", 0.0, None, 0.5),                   # only added to cart
    ], "customer_id string, sku string, net_quantity double, last_bought date, strength double")
    assertDataFrameEqual(got, expected, rtol=1e-9)


def test_interactions_reject_bad_input(spark):
    lines = spark.createDataFrame([("c1", "A", 1.0)], "customer_id string, sku string, quantity double")
    with pytest.raises(R.RecommendError, match="lacks columns.*order_date"):
        R.interactions(lines)
    full = spark.createDataFrame([("c1", "A", 1.0, D(2024, 1, 1), False, True)], LINES)
    with pytest.raises(R.RecommendError, match="strength must be"):
        R.interactions(full, strength="sqrt")


def test_index_column_is_dense_and_alphabetical(spark):
    df = spark.createDataFrame([("b",), ("a",), ("c",), ("a",)], "sku string")
    got = R.index_column(df, "sku", "item")
    assertDataFrameEqual(got, spark.createDataFrame([("a", 0), ("b", 1), ("c", 2)], "sku string, item int"))


def test_index_column_equals_a_sort_of_every_id_across_partitions(spark):
    """The index is each id's position in Python's sort of all of them (nulls first, as Spark
    sorts), however the ids are partitioned."""
    ids = [f"c{(i * 7919) % 1000:04d}" for i in range(1000)] + [None, "c0001"]
    df = spark.createDataFrame([(v,) for v in ids], "customer_id string").repartition(7)
    got = R.index_column(df, "customer_id", "user")
    expected = [None] + sorted({v for v in ids if v is not None})
    assert got.schema["user"].dataType.typeName() == "integer"
    assert sorted(map(tuple, got.collect()), key=lambda r: r[1]) == [(v, i) for i, v in enumerate(expected)]


def _factors(spark, rows):
    return spark.createDataFrame(rows, "id int, features array<float>")


def test_top_k_blocks_excludes_seen_and_ranks_by_score(spark):
    users = _factors(spark, [(0, [1.0, 0.0]), (1, [0.0, 1.0])])
    items = _factors(spark, [(10, [3.0, 0.0]), (11, [2.0, 1.0]), (12, [1.0, 2.0]), (13, [0.0, 3.0])])
    seen = spark.createDataFrame([(0, 10), (1, 12), (1, 99)], "user int, item int")  # 99: not an item
    got = R.top_k_blocks(users, items, 2, seen, block_mb=0)   # block_mb=0: one user per block
    expected = spark.createDataFrame([(0, 11, 2.0, 1), (0, 12, 1.0, 2), (1, 13, 3.0, 1), (1, 11, 1.0, 2)],
                                     "user int, item int, score double, rank int")
    assertDataFrameEqual(got, expected)
    with pytest.raises(R.RecommendError, match="k must be"):
        R.top_k_blocks(users, items, 0)


def test_fallback_sources_segments_then_overall_without_bought_or_out_of_stock(spark):
    inter = spark.createDataFrame([
        ("s1", "A"), ("s2", "A"), ("s3", "A"), ("s1", "B"), ("s2", "B"), ("s4", "C"), ("s5", "C"),
        ("s4", "D"), ("n1", "B"), ("n2", "C")],
        "customer_id string, sku string")
    segments = spark.createDataFrame([("s1", 0), ("s2", 0), ("s3", 0), ("n1", 0), ("s4", 1), ("s5", 1), ("n2", 1)],
                                     "customer_id string, segment_id int")
    customers = spark.createDataFrame([("n1",), ("n2",), ("n3",)], "customer_id string")
    oos = spark.createDataFrame([("D",)], "sku string")
    got = R.fallback_recommendations(customers, inter, 3, segments, oos).drop("score")
    expected = spark.createDataFrame([
        ("n1", 1, "A", "segment_popular"), ("n1", 2, "C", "popular"),        # B bought by n1
        ("n2", 1, "A", "popular"), ("n2", 2, "B", "popular"),                 # segment 1: only C (bought), D (out of stock)
        ("n3", 1, "A", "popular"), ("n3", 2, "B", "popular"), ("n3", 3, "C", "popular"),  # no segment
    ], "customer_id string, rank int, sku string, source string")
    assertDataFrameEqual(got, expected)
    no_segments = R.fallback_recommendations(customers.filter("customer_id = 'n3'"), inter, 2).drop("score")
    assertDataFrameEqual(no_segments, spark.createDataFrame(
        [("n3", 1, "A", "popular"), ("n3", 2, "B", "popular")], "customer_id string, rank int, sku string, source string"))


def test_ranking_metrics_spark_matches_pandas(spark):
    rng = np.random.default_rng(3)
    recs = pd.DataFrame([(u, int(i), r + 1) for u in range(30)
                         for r, i in enumerate(rng.choice(40, size=int(rng.integers(0, 12)), replace=False))],
                        columns=["user", "item", "rank"])
    relevant = pd.DataFrame([(u, int(i)) for u in range(5, 35)
                             for i in rng.choice(40, size=int(rng.integers(1, 15)), replace=False)],
                            columns=["user", "item"])
    for k in (1, 5, 10):
        want = ranking_metrics_pandas(recs, relevant, k, 40)
        got = ranking_metrics(spark.createDataFrame(recs), spark.createDataFrame(relevant), k, 40)
        assert got.keys() == want.keys()
        for name in want:
            assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), (k, name)
    # a hand-checked case: user 1 hits at ranks 1 and 3 of 3 relevant
    one = ranking_metrics_pandas(pd.DataFrame({"user": [1, 1, 1], "item": [7, 8, 9], "rank": [1, 2, 3]}),
                                 pd.DataFrame({"user": [1, 1, 1], "item": [7, 9, 5]}), 3, 10)
    assert one["precision"] == pytest.approx(2 / 3) and one["recall"] == pytest.approx(2 / 3)
    assert one["map"] == pytest.approx((1 + 2 / 3) / 3)
    assert one["ndcg"] == pytest.approx((1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3) + 1 / np.log2(4)))
