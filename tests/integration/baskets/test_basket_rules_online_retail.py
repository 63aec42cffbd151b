"""basket_rules on the real Online Retail export equals mlxtend's fpgrowth + association_rules.

MLlib (and so shopsense) makes rules with one-item consequents only, so mlxtend's rules are
filtered to one-item consequents before the comparison (docs/basket_rules.md). The baskets for
mlxtend are built here in pandas from silver.order_lines, independently of shopsense's Spark
code, so the comparison covers the baskets as well as the mining.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from shopsense.baskets import rules as br
from shopsense.core import columns as C
from shopsense.core import tables

pytestmark = pytest.mark.real_data

MIN_SUPPORT, MIN_CONFIDENCE, MAX_LEN, MAX_BASKET = 0.01, 0.2, 3, 100


@pytest.fixture(scope="module")
def retail(spark, retail_conf_factory):
    conf = retail_conf_factory(f"basket_rules.min_support={MIN_SUPPORT}", f"basket_rules.min_confidence={MIN_CONFIDENCE}",
                     f"basket_rules.max_itemset_length={MAX_LEN}", f"basket_rules.max_basket_size={MAX_BASKET}")
    summary = br.run(spark, conf)
    return conf, summary


def mlxtend_rules(lines: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """mlxtend's one-consequent rules from the product sale lines, with the same thresholds."""
    frequent_patterns = pytest.importorskip(
        "mlxtend.frequent_patterns", reason="mlxtend (test extra) is not installed")
    sales = lines[(lines[C.LINE_TYPE] == C.LINE_SALE) & lines[C.IS_PRODUCT] & (lines[C.QUANTITY] > 0)]
    pairs = sales[[C.ORDER_ID, C.SKU]].drop_duplicates()
    size = pairs.groupby(C.ORDER_ID)[C.SKU].transform("size")
    n_oversized = pairs.loc[size > MAX_BASKET, C.ORDER_ID].nunique()
    pairs = pairs[size <= MAX_BASKET]
    orders = pd.Categorical(pairs[C.ORDER_ID])
    skus = pd.Categorical(pairs[C.SKU])
    from scipy import sparse

    matrix = sparse.csr_matrix((np.ones(len(pairs), dtype=bool), (orders.codes, skus.codes)),
                               shape=(len(orders.categories), len(skus.categories)))
    with warnings.catch_warnings():  # pandas: bool SparseDtype fill value (harmless)
        warnings.simplefilter("ignore", FutureWarning)
        onehot = pd.DataFrame.sparse.from_spmatrix(matrix, columns=list(skus.categories))
    itemsets = frequent_patterns.fpgrowth(onehot, min_support=MIN_SUPPORT, use_colnames=True,
                                          max_len=MAX_LEN)
    rules = frequent_patterns.association_rules(itemsets, num_itemsets=len(onehot),
                                                metric="confidence", min_threshold=MIN_CONFIDENCE)
    rules = rules[rules["consequents"].map(len) == 1]
    return rules, len(onehot), n_oversized


def test_rules_equal_mlxtend(spark, retail):
    pytest.importorskip("mlxtend", reason="mlxtend (test extra) is not installed")
    conf, summary = retail
    lines = (tables.read_table(spark, conf, "silver.order_lines")
             .select(C.ORDER_ID, C.SKU, C.LINE_TYPE, C.IS_PRODUCT, C.QUANTITY).toPandas())
    expected, n_baskets, n_oversized = mlxtend_rules(lines)
    m = summary["metrics"]
    assert (m["baskets_mined"], m["baskets_oversized"]) == (n_baskets, n_oversized)

    got = tables.read_table(spark, conf, "gold.association_rules").toPandas()
    key = lambda a, c: (tuple(sorted(a)), tuple(c))  # noqa: E731
    got.index = [key(a, c) for a, c in zip(got["antecedent"], got["consequent"])]
    expected.index = [key(a, c) for a, c in zip(expected["antecedents"], expected["consequents"])]
    assert len(got) > 100, f"too few rules to compare ({len(got)})"
    assert set(got.index) == set(expected.index), (
        f"only shopsense: {sorted(set(got.index) - set(expected.index))[:5]}, "
        f"only mlxtend: {sorted(set(expected.index) - set(got.index))[:5]}")
    expected = expected.loc[got.index]
    for metric in ("support", "confidence", "lift", "leverage"):
        np.testing.assert_allclose(got[metric].to_numpy(), expected[metric].to_numpy(),
                                   rtol=0, atol=1e-9, err_msg=metric)
    # conviction: +inf in mlxtend, null in shopsense, where confidence is 1
    theirs = expected["conviction"].replace(np.inf, np.nan).to_numpy(dtype=float)
    ours = got["conviction"].to_numpy(dtype=float)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    finite = ~np.isnan(ours)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(got["n_orders"].to_numpy(), np.rint(expected["support"] * n_baskets))
    print(f"Online Retail: {n_baskets} baskets mined, {n_oversized} oversized, {len(got)} rules "
          f"equal to mlxtend's one-consequent rules")
