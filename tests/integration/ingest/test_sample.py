"""The sample generator: deterministic, schema as declared, and the planted structure is there."""

import json
import math

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopsense.core import columns as C
from shopsense.ingest.sample import (
    GROUPS,
    ORDERS_SCHEMA,
    SampleSpec,
    catalogue,
    generate,
    inventory,
    order_lines,
    truth_tables,
)
from shopsense.ingest.sample_spec import _TASTE_SHARE

SMALL = SampleSpec(n_customers=300, n_skus=60, n_days=120, n_pairs=4, n_tastes=3, seed=7)
# Big enough for the planted pair confidences to be measured to a few percent.
MEDIUM = SampleSpec(n_customers=1200, n_skus=80, n_days=240, n_pairs=5, n_tastes=4, seed=11)


def _sales(df):
    return df.where(~F.col(C.ORDER_ID).startswith("C"))


def _returns(df):
    return df.where(F.col(C.ORDER_ID).startswith("C"))


@pytest.fixture(scope="module")
def small(spark):
    return order_lines(spark, SMALL).cache()


def test_same_seed_gives_identical_rows(spark, small):
    again = order_lines(spark, SMALL)
    assertDataFrameEqual(small, again, checkRowOrder=False)


def test_rows_do_not_depend_on_partitioning(spark, small):
    assertDataFrameEqual(small, order_lines(spark, SMALL, num_partitions=5), checkRowOrder=False)


def test_different_seed_gives_different_rows(spark, small):
    other = order_lines(spark, SampleSpec(**{**SMALL.__dict__, "seed": 8}))
    assert other.exceptAll(small).count() > 0.9 * other.count()


def test_schema_is_as_declared(small):
    assert [(f.name, f.dataType) for f in small.schema.fields] == \
        [(f.name, f.dataType) for f in ORDERS_SCHEMA.fields]
    assert tuple(small.columns) == C.ORDER_COLUMNS


def test_no_nulls_except_guest_customer_ids(small):
    nulls = small.select([F.sum(F.col(c).isNull().cast("int")).alias(c) for c in small.columns]).first()
    assert {c: nulls[c] for c in small.columns if c != C.CUSTOMER_ID} == \
        {c: 0 for c in small.columns if c != C.CUSTOMER_ID}


def test_id_formats(small):
    bad = small.where(
        ~F.col(C.ORDER_ID).rlike(r"^C?[0-9]{7,}$")
        | ~F.col(C.SKU).rlike(r"^S[0-9]{5}$")
        | ~(F.col(C.CUSTOMER_ID).isNull() | F.col(C.CUSTOMER_ID).rlike(r"^C[0-9]{6}$")))
    assert bad.count() == 0


def test_returns_have_c_ids_negative_quantity_same_price_later(small):
    returns = _returns(small).alias("r")
    sales = _sales(small).alias("s")
    assert returns.where(F.col(C.QUANTITY) >= 0).count() == 0
    assert _sales(small).where(F.col(C.QUANTITY) <= 0).count() == 0
    matched = returns.join(
        sales, (F.col("r." + C.ORDER_ID) == F.concat(F.lit("C"), F.col("s." + C.ORDER_ID)))
        & (F.col("r." + C.SKU) == F.col("s." + C.SKU)), "left")
    rows = matched.select(
        F.col("s." + C.ORDER_ID).isNull().alias("orphan"),
        (F.col("r." + C.QUANTITY) == -F.col("s." + C.QUANTITY)).alias("same_qty"),
        (F.col("r." + C.UNIT_PRICE) == F.col("s." + C.UNIT_PRICE)).alias("same_price"),
        F.datediff(F.col("r." + C.ORDERED_AT), F.col("s." + C.ORDERED_AT)).alias("days"),
    ).collect()
    assert rows, "expected some returns"
    assert not any(r.orphan for r in rows)
    assert all(r.same_qty and r.same_price for r in rows)
    assert all(1 <= r.days <= 10 for r in rows)
    share = len(rows) / _sales(small).count()
    assert 0.01 < share < 0.03     # return_rate 0.02, less the few that fall after the end


def test_guest_share_about_right(small):
    orders = _sales(small).groupBy(C.ORDER_ID).agg(F.first(F.col(C.CUSTOMER_ID).isNull()).alias("guest"))
    n = orders.count()
    share = orders.where("guest").count() / n
    assert abs(share - SMALL.guest_share) < 4 * math.sqrt(0.1 * 0.9 / n)


def test_timestamps_stay_inside_the_period(small):
    lo, hi = small.agg(F.min(F.to_date(C.ORDERED_AT)), F.max(F.to_date(C.ORDERED_AT))).first()
    assert str(lo) >= SMALL.start_date
    assert (hi - lo).days <= SMALL.n_days - 1


def test_groups_differ_in_recency_and_frequency_as_planted(spark, small):
    customers = truth_tables(spark, SMALL)["customers"]
    end = F.lit(small.agg(F.max(F.to_date(C.ORDERED_AT))).first()[0])
    rfm = (_sales(small).where(F.col(C.CUSTOMER_ID).isNotNull()).groupBy(C.CUSTOMER_ID)
           .agg(F.datediff(end, F.max(F.to_date(C.ORDERED_AT))).alias("recency"),
                F.countDistinct(C.ORDER_ID).alias("frequency"),
                F.sum(F.col(C.QUANTITY) * F.col(C.UNIT_PRICE)).alias("monetary"))
           .join(customers, C.CUSTOMER_ID)
           .groupBy("group").agg(F.expr("percentile(recency, 0.5)").alias("r"),
                                 F.expr("percentile(frequency, 0.5)").alias("f"),
                                 F.expr("percentile(monetary, 0.5)").alias("m")))
    g = {row["group"]: row for row in rfm.collect()}
    assert set(g) == {grp.name for grp in GROUPS}
    assert g["champions"]["f"] > 2.5 * g["loyal"]["f"]
    assert g["champions"]["m"] > 5 * g["loyal"]["m"]
    assert g["at_risk"]["r"] > 3 * max(g["loyal"]["r"], g["champions"]["r"], 1)
    assert g["new"]["f"] <= 3 and g["new"]["r"] <= 0.1 * SMALL.n_days
    assert g["champions"]["r"] <= g["loyal"]["r"]


def test_tastes_dominate_customer_choices(spark, small):
    truth = truth_tables(spark, SMALL)
    lines = (_sales(small).where(F.col(C.CUSTOMER_ID).isNotNull())
             .join(truth["customers"].withColumnRenamed("taste", "customer_taste"), C.CUSTOMER_ID)
             .join(truth["skus"].where("pattern != 'companion'"), C.SKU))
    share = lines.agg(F.avg((F.col("taste") == F.col("customer_taste")).cast("double"))).first()[0]
    expected = _TASTE_SHARE + (1 - _TASTE_SHARE) / SMALL.n_tastes   # own block, or the global pick lands in it
    assert abs(share - expected) < 0.05


@pytest.mark.slow
def test_planted_pair_confidence_is_recovered(spark):
    pairs = truth_tables(spark, MEDIUM)["pairs"].collect()
    assert len(pairs) == MEDIUM.n_pairs
    has = lambda sku: F.max((F.col(C.SKU) == sku).cast("int"))  # noqa: E731
    baskets = _sales(order_lines(spark, MEDIUM)).groupBy(C.ORDER_ID).agg(
        *[has(p.antecedent).alias(f"a{i}") for i, p in enumerate(pairs)],
        *[has(p.consequent).alias(f"b{i}") for i, p in enumerate(pairs)])
    counts = baskets.agg(
        *[F.sum(f"a{i}").alias(f"n_a{i}") for i in range(len(pairs))],
        *[F.sum(F.col(f"a{i}") * F.col(f"b{i}")).alias(f"n_ab{i}") for i in range(len(pairs))],
        *[F.sum(f"b{i}").alias(f"n_b{i}") for i in range(len(pairs))]).first()
    for i, p in enumerate(pairs):
        n_a, n_ab, n_b = counts[f"n_a{i}"], counts[f"n_ab{i}"], counts[f"n_b{i}"]
        assert n_b == n_ab, "a companion is only ever sold with its antecedent"
        se = math.sqrt(p.confidence * (1 - p.confidence) / n_a)
        assert abs(n_ab / n_a - p.confidence) < 4 * se, (p, n_a, n_ab)


def test_catalogue_and_inventory_cover_every_sku(spark):
    cat = catalogue(spark, SMALL)
    inv = inventory(spark, SMALL)
    assert tuple(cat.columns) == C.CATALOGUE_COLUMNS
    assert tuple(inv.columns) == C.INVENTORY_COLUMNS
    assert cat.select(C.SKU).distinct().count() == SMALL.n_skus
    assert cat.where((F.col(C.UNIT_COST) >= F.col(C.UNIT_PRICE)) | (F.col(C.UNIT_COST) <= 0)).count() == 0
    assert inv.count() == SMALL.n_skus
    assert 1 <= inv.where(F.col(C.ON_HAND) == 0).count() <= 0.15 * SMALL.n_skus
    assert {str(r[0]) for r in inv.select(C.AS_OF).distinct().collect()} == {"2023-04-30"}


def test_truth_tables_have_their_columns(spark):
    truth = truth_tables(spark, SMALL)
    assert truth["customers"].columns == [C.CUSTOMER_ID, "group", "taste"]
    assert truth["pairs"].columns == ["antecedent", "consequent", "confidence"]
    assert truth["skus"].columns == [C.SKU, "taste", "pattern", "base_rate", "trend", "promo_eligible"]
    assert truth["promotions"].columns == [C.SKU, "start_date", "end_date", "lift"]
    assert truth["customers"].count() == SMALL.n_customers
    patterns = {r.pattern: r["count"] for r in truth["skus"].groupBy("pattern").count().collect()}
    assert patterns["companion"] == SMALL.n_pairs and patterns["intermittent"] > 0


def test_promotions_lift_quantity(spark, small):
    promos = truth_tables(spark, SMALL)["promotions"]
    eligible = promos.select(C.SKU).distinct()
    day = F.to_date(C.ORDERED_AT)
    lines = _sales(small).join(eligible, C.SKU).alias("l").join(
        promos.alias("p"), (F.col("l." + C.SKU) == F.col("p." + C.SKU))
        & day.between(F.col("start_date"), F.col("end_date")), "left")
    q = {r.promo: r.q for r in lines.groupBy(F.col("lift").isNotNull().alias("promo"))
         .agg(F.avg(C.QUANTITY).alias("q")).collect()}
    assert q[True] > 1.4 * q[False]


@pytest.mark.slow
def test_generate_writes_everything(spark, tmp_path):
    out = str(tmp_path / "sample")
    res = generate(spark, SMALL, out, fmt="csv")
    assert res["rows"]["orders"] == order_lines(spark, SMALL).count()
    assert res["rows"]["truth/customers"] == SMALL.n_customers
    back = spark.read.option("header", True).csv(res["paths"]["orders"])
    assert back.columns == list(C.ORDER_COLUMNS)
    with open(res["paths"]["truth.json"], encoding="utf-8") as fh:
        info = json.load(fh)
    assert info["spec"]["seed"] == SMALL.seed
    assert sum(info["group_counts"].values()) == SMALL.n_customers


def test_invalid_spec_and_format_are_rejected(spark, tmp_path):
    with pytest.raises(ValueError, match="n_days=10"):
        order_lines(spark, SampleSpec(n_days=10))
    with pytest.raises(ValueError, match="n_skus=12"):
        order_lines(spark, SampleSpec(n_skus=12, n_pairs=10))
    with pytest.raises(ValueError, match="fmt must be"):
        generate(spark, SMALL, str(tmp_path), fmt="json")
