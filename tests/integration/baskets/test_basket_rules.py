"""The basket_rules job: baskets, exact parity with a brute-force pandas reference, MLlib's own
rules, frequently-bought-together, planted pairs on sample data, failures, idempotency."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from shopsense.baskets import rules as br
from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.core.runs import read_runs
from shopsense.core.config import ConfigError
from shopsense.ingest import sample
from tests.helpers import silver_from_sample

T0 = dt.datetime(2024, 3, 1, 9, 0)


def line(order_id, sku, qty=1.0, line_type="sale", is_product=True, category="cat",
         name=None, customer="c1"):
    """One silver.order_lines row as a dict (the columns the job does not use get fillers)."""
    return {C.LINE_ID: f"{order_id}-{sku}-{qty}-{line_type}", C.ORDER_ID: str(order_id),
            C.CUSTOMER_ID: customer, C.IS_GUEST: customer is None, C.SKU: sku,
            C.PRODUCT_NAME: name if name is not None else f"name {sku}", C.CATEGORY: category,
            C.COUNTRY: "UK", C.QUANTITY: float(qty), C.UNIT_PRICE: 1.0, C.REVENUE: float(qty),
            C.ORDERED_AT: T0, C.ORDER_DATE: T0.date(), C.LINE_TYPE: line_type,
            C.IS_PRODUCT: is_product, C.SOURCE_FILE: "test", C.RUN_ID: "r0", C.INGESTED_AT: T0}


def write_lines(spark, conf, rows):
    df = spark.createDataFrame(pd.DataFrame(rows), schema=tables.ORDER_LINES)
    tables.overwrite(df, conf, "silver.order_lines")


# --- baskets -----------------------------------------------------------------------------------

EDGE_LINES = [
    line(1, "A"), line(1, "B"), line(1, "B", qty=3),            # a SKU twice: once in the basket
    line(1, "POST", is_product=False),                           # postage: not a product
    line(2, "A", customer=None), line(2, "C"),                    # guest order: counts
    line(3, "A", qty=-1, line_type="return"),                    # a return: not a sale
    line(4, "B", qty=-2, line_type="cancellation"), line(4, "C", qty=-1, line_type="cancellation"),
    line(5, "GIFT"), line(5, "C"),                                # GIFT excluded by conf
    line(6, "A"), line(6, "B"), line(6, "C"), line(6, "D"),       # oversized at cap 3
    line(7, "POST", is_product=False),                            # nothing left: no basket
    line(8, "D", category=None), line(8, "A", category="toys"),
]


def test_baskets_keep_distinct_product_sales_and_flag_oversized(spark):
    lines = spark.createDataFrame(pd.DataFrame(EDGE_LINES), schema=tables.ORDER_LINES)
    params = br.RuleParams(exclude_skus=("GIFT",), max_basket_size=3)
    got = br.build_baskets(lines, params)
    expected = spark.createDataFrame(
        [("1", ["A", "B"], 2, False), ("2", ["A", "C"], 2, False), ("5", ["C"], 1, False),
         ("6", ["A", "B", "C", "D"], 4, True), ("8", ["A", "D"], 2, False)],
        "order_id string, items array<string>, n_items int, oversized boolean")
    assertDataFrameEqual(got, expected)


def test_category_baskets_leave_out_lines_without_category(spark):
    lines = spark.createDataFrame(pd.DataFrame(EDGE_LINES), schema=tables.ORDER_LINES)
    got = br.build_baskets(lines, br.RuleParams(level="category", exclude_skus=("GIFT",)))
    expected = spark.createDataFrame(
        [("1", ["cat"], 1, False), ("2", ["cat"], 1, False), ("5", ["cat"], 1, False),
         ("6", ["cat"], 1, False), ("8", ["toys"], 1, False)],
        "order_id string, items array<string>, n_items int, oversized boolean")
    assertDataFrameEqual(got, expected)


def test_item_names_keep_the_order_of_the_items(spark, conf):
    lines = spark.createDataFrame(pd.DataFrame(EDGE_LINES), schema=tables.ORDER_LINES)
    rules = spark.createDataFrame([(["A", "D"], ["B"]), (["ZZ"], ["A"])],
                                  "antecedent array<string>, consequent array<string>")
    names = br.item_names(lines, "sku", None)
    got = rules.transform(br.with_item_names, names, "antecedent", "antecedent_names")
    expected = spark.createDataFrame(
        [(["A", "D"], ["B"], ["name A", "name D"]), (["ZZ"], ["A"], [None])],
        "antecedent array<string>, consequent array<string>, antecedent_names array<string>")
    assertDataFrameEqual(got, expected)
    categories = br.item_names(lines, "category", None)
    assertDataFrameEqual(categories, spark.createDataFrame([("cat", "cat"), ("toys", "toys")],
                                                           "item string, name string"))


# --- parity with a brute-force reference ---------------------------------------------------------

def random_lines(n_orders=300, seed=7):
    """Orders over 8 SKUs with correlations (A drags B in, C drags D), a few returns and
    postage lines, and some giant baskets."""
    rng = np.random.default_rng(seed)
    skus = list("ABCDEFGH")
    pop = np.array([0.35, 0.1, 0.3, 0.05, 0.2, 0.15, 0.1, 0.05])
    rows = []
    for o in range(n_orders):
        basket = {s for s, p in zip(skus, pop) if rng.random() < p}
        if "A" in basket and rng.random() < 0.6:
            basket.add("B")
        if "C" in basket and rng.random() < 0.5:
            basket.add("D")
        if o % 50 == 0:
            basket = set(skus)                   # giant basket, over the cap of 6
        for s in sorted(basket):
            rows.append(line(o, s))
        if o % 9 == 0:
            rows.append(line(o, "POST", is_product=False))
        if o % 11 == 0 and basket:
            rows.append(line(f"C{o}", sorted(basket)[0], qty=-1, line_type="return"))
    return rows


def brute_force_rules(order_baskets, min_count, min_confidence, max_len):
    """Every rule X -> {y} by enumeration, metrics by the formulas of the module doc."""
    n = len(order_baskets)
    items = sorted(set().union(*order_baskets))
    count = {}
    for k in range(1, max_len + 1):
        for combo in itertools.combinations(items, k):
            c = sum(1 for b in order_baskets if set(combo) <= b)
            if c >= min_count:
                count[combo] = c
    rows = []
    for combo, n_xy in count.items():
        if len(combo) < 2:
            continue
        for y in combo:
            x = tuple(i for i in combo if i != y)
            n_x, n_y = count[x], count[(y,)]
            support = np.float64(n_xy) / np.float64(n)
            s_x, s_y = np.float64(n_x) / np.float64(n), np.float64(n_y) / np.float64(n)
            confidence = np.float64(n_xy) / np.float64(n_x)
            if confidence < min_confidence:
                continue
            rows.append({"antecedent": list(x), "consequent": [y],
                         "antecedent_names": [f"name {i}" for i in x], "consequent_names": [f"name {y}"],
                         "support": support, "confidence": confidence, "lift": confidence / s_y,
                         "leverage": support - s_x * s_y,
                         "conviction": (1.0 - s_y) / (1.0 - confidence) if confidence < 1.0 else None,
                         "n_orders": n_xy, "antecedent_orders": n_x, "consequent_orders": n_y})
    return pd.DataFrame(rows)


RULE_COLUMNS = ["antecedent", "consequent", "antecedent_names", "consequent_names", "support",
                "confidence", "lift", "leverage", "conviction", "n_orders", "antecedent_orders",
                "consequent_orders"]


def test_rules_equal_brute_force_reference_exactly(spark, conf_factory):
    rows = random_lines()
    conf = conf_factory("basket_rules.min_support_count=12", "basket_rules.min_confidence=0.25",
                        "basket_rules.max_itemset_length=3", "basket_rules.max_basket_size=6")
    write_lines(spark, conf, rows)
    summary = br.run(spark, conf)

    frame = pd.DataFrame(rows)
    sales = frame[(frame.line_type == "sale") & frame.is_product]
    sets = [set(g) for _, g in sales.groupby("order_id")["sku"]]
    kept = [b for b in sets if len(b) <= 6]
    expected = brute_force_rules(kept, 12, 0.25, 3)
    assert len(expected) > 20 and expected["conviction"].isna().sum() == 0

    got = tables.read_table(spark, conf, "gold.association_rules")
    assertDataFrameEqual(got.select(RULE_COLUMNS),
                         spark.createDataFrame(expected[RULE_COLUMNS], schema=got.select(RULE_COLUMNS).schema),
                         rtol=0, atol=0)
    assert got.filter(F.col("level") != "sku").count() == 0
    m = summary["metrics"]
    assert (m["baskets_mined"], m["baskets_oversized"], m["min_count"]) == (len(kept), len(sets) - len(kept), 12)
    assert m["rules"] == len(expected)


def test_rules_agree_with_mllib_association_rules(spark):
    """MLlib's own rules (confidence, lift, support) on the same baskets and thresholds."""
    from pyspark.ml.fpm import FPGrowth

    lines = spark.createDataFrame(pd.DataFrame(random_lines(seed=3)), schema=tables.ORDER_LINES)
    params = br.RuleParams(max_basket_size=6, min_support=0.05, min_confidence=0.3,
                           max_itemset_length=8)
    basket_df = br.build_baskets(lines, params).filter(~F.col("oversized"))
    mined = br.mine(basket_df, params)
    try:
        ours = mined.rules.filter(F.col("confidence") >= 0.3).select(
            "antecedent", "consequent", "confidence", "lift", "support")
        model = FPGrowth(itemsCol="items", minSupport=0.05, minConfidence=0.3).fit(basket_df)
        theirs = model.associationRules.select(
            F.array_sort("antecedent").alias("antecedent"), "consequent", "confidence", "lift", "support")
        assert ours.count() > 20
        assertDataFrameEqual(ours, theirs, rtol=1e-12)
    finally:
        mined.unpersist()


def test_conviction_is_null_at_confidence_one_and_fbt_ranks_by_lift_run_twice(spark, conf_factory):
    # E only ever sold with A; A also with B or C; F and G with nothing in particular. N = 20.
    baskets = ([["A", "E"]] * 4 + [["A", "B"]] * 3 + [["A", "C"]] * 2 + [["B", "C"]] * 2
               + [["C"]] * 3 + [["F"]] * 2 + [["A", "F"]] + [["G"]] * 3)
    rows = [line(o, s) for o, b in enumerate(baskets) for s in b]
    conf = conf_factory("basket_rules.min_support_count=2", "basket_rules.min_confidence=0.0",
                        "basket_rules.frequently_bought_together.top_n=2",
                        "basket_rules.frequently_bought_together.min_confidence=0.2")
    write_lines(spark, conf, rows)
    first = br.run(spark, conf)
    rules1 = tables.read_table(spark, conf, "gold.association_rules").drop("run_id", "computed_at")
    fbt1 = tables.read_table(spark, conf, "gold.frequently_bought_together").drop("run_id", "computed_at")
    rules1, fbt1 = rules1.toPandas(), fbt1.toPandas()     # tiny; the tables are replaced below
    second = br.run(spark, conf)                           # idempotent: replaced, not appended

    rules = tables.read_table(spark, conf, "gold.association_rules")
    assert first["metrics"] == second["metrics"]
    assert [r[0] for r in rules.select("run_id").distinct().collect()] == [second["run_id"]]
    assertDataFrameEqual(rules.drop("run_id", "computed_at"),
                         spark.createDataFrame(rules1, schema=rules.drop("run_id", "computed_at").schema))
    runs = read_runs(spark, conf).filter("job = 'basket_rules'")
    assert runs.filter("status = 'succeeded'").count() == 2
    e_to_a = rules.filter(F.col("antecedent") == F.array(F.lit("E"))).first()
    assert e_to_a["consequent"] == ["A"] and e_to_a["confidence"] == 1.0 and e_to_a["conviction"] is None
    assert rules.filter(F.col("conviction").isNull()).count() == rules.filter(F.col("confidence") == 1.0).count()

    fbt = tables.read_table(spark, conf, "gold.frequently_bought_together")
    # counts: A 10, B 5, C 7, E 4; AE 4, AB 3, AC 2, BC 2 (AF 1 is below the threshold).
    # A -> C (lift 0.57) and C -> A are below lift 1; A keeps its top 2.
    expected = spark.createDataFrame(
        [("A", "name A", 1, "E", "name E", 0.4, 0.4 / (4 / 20), 4),
         ("A", "name A", 2, "B", "name B", 0.3, 0.3 / (5 / 20), 3),
         ("E", "name E", 1, "A", "name A", 1.0, 1.0 / (10 / 20), 4),
         ("B", "name B", 1, "A", "name A", 0.6, 0.6 / (10 / 20), 3),
         ("B", "name B", 2, "C", "name C", 0.4, 0.4 / (7 / 20), 2),
         ("C", "name C", 1, "B", "name B", 2 / 7, (2 / 7) / (5 / 20), 2)],
        "sku string, product_name string, rank int, companion_sku string, companion_name string, "
        "confidence double, lift double, n_orders long")
    assertDataFrameEqual(fbt.select(expected.columns), expected, rtol=1e-12)
    assert len(fbt1) == 6 and fbt.filter(F.col("level") != "sku").count() == 0


# --- job behaviour ---------------------------------------------------------------------------------

def test_threshold_above_all_baskets_writes_empty_tables(spark, conf_factory):
    conf = conf_factory("basket_rules.min_support_count=1000")
    write_lines(spark, conf, random_lines(n_orders=30))
    summary = br.run(spark, conf)
    assert summary["metrics"]["rules"] == 0
    assert tables.read_table(spark, conf, "gold.association_rules").count() == 0
    assert any("no itemset can reach 1000" in n for n in summary["notes"])


@pytest.mark.parametrize("override, message", [
    ("basket_rules.min_support=1.5", r"--set: basket_rules.min_support must be <= 1.0, got 1.5"),
    ("basket_rules.max_itemset_length=1", "basket_rules.max_itemset_length must be >= 2, got 1"),
    ("basket_rules.min_support_count=0", "basket_rules.min_support_count must be >= 1, got 0"),
    ("basket_rules.frequently_bought_together.min_confidence=-0.1",
     "basket_rules.frequently_bought_together.min_confidence must be >= 0.0, got -0.1"),
])
def test_invalid_parameters_are_refused_with_the_conf(conf_factory, override, message):
    with pytest.raises(ConfigError, match=message):
        conf_factory(override)


def test_invalid_level_is_a_config_error(conf_factory):
    with pytest.raises(ConfigError, match="basket_rules.level must be one of sku, category"):
        conf_factory("basket_rules.level=brand")


def test_missing_input_names_the_table(spark, conf):
    with pytest.raises(tables.TableNotFoundError, match="silver.order_lines"):
        br.run(spark, conf)
    runs = read_runs(spark, conf)
    assert runs.filter("job = 'basket_rules' and status = 'failed'").count() == 1


def test_baskets_need_their_columns(spark):
    df = spark.createDataFrame([("1", "A")], "order_id string, sku string")
    with pytest.raises(br.BasketRulesError, match=r"lacks columns \['line_type', 'is_product', 'quantity'\]"):
        br.filter_basket_lines(df)


# --- planted pairs on sample data ------------------------------------------------------------------

#: Generator seeds the planted pairs must be found on. Measured on 1 Dec 2026: the found
#: confidences are within 1.35, 1.14 and 1.63 standard errors of the planted ones (the worst pair).
PAIR_SEEDS = (11, 12, 13)


@pytest.mark.parametrize("seed", PAIR_SEEDS)
def test_planted_pairs_are_found_with_their_confidence(spark, conf, seed):
    spec = sample.SampleSpec(n_customers=500, n_skus=50, n_days=180, n_pairs=4, seed=seed)
    params = br.RuleParams(min_support_count=15, min_confidence=0.1, max_itemset_length=2)
    lines = silver_from_sample(sample.order_lines(spark, spec)).persist()
    basket_df = br.build_baskets(lines, params).persist()
    mined = br.mine(basket_df, params)
    names = br.item_names(lines, "sku", None)
    named = (mined.rules.transform(br.with_item_names, names, "antecedent", "antecedent_names")
             .transform(br.with_item_names, names, "consequent", "consequent_names"))
    rules = named.filter(F.col("confidence") >= 0.1).select(
        F.col("antecedent")[0].alias("a"), F.col("consequent")[0].alias("b"), "confidence",
        "antecedent_orders")
    fbt = br.frequently_bought_together(named, 10, 0.1)
    truth = sample.truth_tables(spark, spec)["pairs"].toPandas()   # one row per planted pair
    wanted = spark.createDataFrame(truth).select(F.col("antecedent").alias("a"), F.col("consequent").alias("b"))
    found = (wanted.join(rules, ["a", "b"], "left").toPandas()
             .merge(truth, left_on=["a", "b"], right_on=["antecedent", "consequent"]))
    assert len(found) == len(truth) == 4 and found["confidence_x"].notna().all(), found
    se = np.sqrt(found["confidence_y"] * (1 - found["confidence_y"]) / found["antecedent_orders"])
    deviation = (found["confidence_x"] - found["confidence_y"]).abs()
    print(f"seed {seed}: |found - planted confidence| / se =",
          (deviation / se).round(2).tolist(), "max", round(float((deviation / se).max()), 2))
    assert (deviation <= 3 * se).all(), found.assign(se=se)
    # A companion is only ever sold with its pair: companion -> antecedent has confidence 1,
    # and the antecedent is the companion's first frequently-bought-together entry.
    back = rules.join(wanted.select(F.col("b").alias("a"), F.col("a").alias("b")), ["a", "b"])
    assert sorted(r["confidence"] for r in back.collect()) == [1.0] * 4
    firsts = fbt.filter("rank = 1").select(F.col("sku").alias("b"), F.col("companion_sku").alias("a"))
    assert firsts.join(wanted, ["a", "b"]).count() == 4
    print(found.assign(se=se)[["a", "b", "confidence_y", "confidence_x", "antecedent_orders", "se"]])
    mined.unpersist()
    basket_df.unpersist()
    lines.unpersist()


# --- the two algorithms ------------------------------------------------------------------------------

def test_levelwise_and_fpgrowth_give_identical_itemsets_and_rules(spark):
    """Level-wise counting with Apriori pruning finds exactly the itemsets MLlib's FPGrowth
    mines, up to four items."""
    lines = spark.createDataFrame(pd.DataFrame(random_lines(n_orders=400, seed=5)), schema=tables.ORDER_LINES)
    basket_df = br.build_baskets(lines, br.RuleParams(max_basket_size=6)).filter(~F.col("oversized")).persist()
    n = basket_df.count()
    levelwise, scratch = br.frequent_itemsets_levelwise(basket_df, 10, 4)
    fpgrowth = br.frequent_itemsets(basket_df, 10, n).filter(F.size("items") <= 4)
    assert fpgrowth.filter(F.size("items") == 4).count() > 0
    assertDataFrameEqual(levelwise, fpgrowth)
    assertDataFrameEqual(br.candidate_rules(levelwise, n, 4), br.candidate_rules(fpgrowth, n, 4),
                         rtol=0, atol=0)
    for frame in scratch:
        frame.unpersist()
    basket_df.unpersist()


def test_job_rules_are_the_same_with_either_algorithm(spark, conf_factory):
    rows = random_lines(seed=9)
    got = {}
    for algorithm in ("levelwise", "fpgrowth"):
        conf = conf_factory("basket_rules.min_support_count=12", "basket_rules.min_confidence=0.25",
                            "basket_rules.max_basket_size=6", f"basket_rules.algorithm={algorithm}")
        write_lines(spark, conf, rows)
        summary = br.run(spark, conf)
        got[algorithm] = (summary["metrics"],
                          tables.read_table(spark, conf, "gold.association_rules").drop("run_id", "computed_at"))
    assert got["levelwise"][0] == got["fpgrowth"][0] and got["levelwise"][0]["rules"] > 20
    assertDataFrameEqual(got["levelwise"][1], got["fpgrowth"][1], rtol=0, atol=0)


def test_unknown_algorithm_is_a_config_error(conf_factory):
    with pytest.raises(ConfigError, match="basket_rules.algorithm must be one of levelwise, fpgrowth"):
        conf_factory("basket_rules.algorithm=apriori")
