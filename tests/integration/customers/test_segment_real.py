"""features + segment on the real Online Retail export (ingested once for the module)."""

import pytest
from pyspark.sql import functions as F

from shopsense.customers import features
from shopsense.customers import segments as segment
from shopsense.core import tables

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def online_retail(spark, retail_conf_factory):
    """features + segment on the export: (conf, features summary, segment summary)."""
    conf = retail_conf_factory()
    return conf, features.run(spark, conf), segment.run(spark, conf)


def test_segments_online_retail(spark, online_retail):
    conf, feats, summary = online_retail
    metrics = summary["metrics"]
    # 4,372 identified customers in the export; every one with a product line gets a row
    assert 4000 < feats["metrics"]["customers"] < 4400
    # k is the silhouette's choice among the k the search tried (the smallest on a tie)
    tried = {int(key.removeprefix("silhouette_k")): value for key, value in metrics.items()
             if key.startswith("silhouette_k")}
    assert len(tried) >= 2
    assert metrics["k"] == max(tried, key=lambda k: (tried[k], -k))
    assert metrics["silhouette"] == tried[metrics["k"]] > 0.3

    profiles = tables.read_table(spark, conf, "gold.segment_profiles")
    pdf = profiles.toPandas()
    assert pdf["n_customers"].sum() == feats["metrics"]["customers"]
    assert pdf["customer_share"].sum() == pytest.approx(1.0)
    assert pdf["revenue_share"].sum() == pytest.approx(1.0)
    assert pdf["segment_name"].is_unique
    segments = tables.read_table(spark, conf, "gold.customer_segments")
    assert segments.filter(F.col(segment.SEGMENT_NAME).isNull()).count() == 0

    # The segments follow the export's revenue concentration: the segment with the largest
    # revenue share holds most of the revenue, over 1.5 times its share of the customers, and has
    # the highest median net revenue; the lapsed segment (the highest median recency) is another,
    # ordering less often and holding less revenue than its share of the customers.
    clustered = pdf[pdf["segment_id"] >= 0].set_index("segment_name")
    top = clustered.loc[clustered["revenue_share"].idxmax()]
    lapsed = clustered.loc[clustered["median_recency_days"].idxmax()]
    print(clustered[["n_customers", "customer_share", "revenue_share", "median_recency_days",
                     "median_frequency", "median_monetary"]])
    assert top.name != lapsed.name
    assert top["revenue_share"] > 0.5 and top["revenue_share"] > 1.5 * top["customer_share"]
    assert top["median_recency_days"] * 3 < lapsed["median_recency_days"]
    assert top["median_frequency"] > lapsed["median_frequency"]
    assert top["median_monetary"] == clustered["median_monetary"].max()
    assert lapsed["revenue_share"] < lapsed["customer_share"]


def test_rfm_segments_online_retail(spark, online_retail):
    """Every customer with an order has exactly one RFM segment; the score boundaries are the
    20/40/60/80 % quantiles pandas computes (the smallest value whose share of customers at or
    below it reaches the quantile: numpy's "inverted_cdf"); at least four segments a campaign
    can use, each with 5 % of the customers or more."""
    import numpy as np

    from shopsense.customers import rfm

    conf, _, summary = online_retail
    feats = tables.read_table(spark, conf, "gold.customer_features").toPandas()
    ordered = feats[feats["has_orders"]]
    got = tables.read_table(spark, conf, "gold.rfm_segments").toPandas()
    assert got["customer_id"].is_unique and set(got["customer_id"]) == set(ordered["customer_id"])
    assert got["rfm_segment"].notna().all() and set(got["rfm_segment"]) <= set(rfm.NAMES)
    assert summary["metrics"]["rfm_customers"] == len(ordered)
    merged = ordered.merge(got, on="customer_id")
    for column, score, reverse in [("recency_days", "r_score", True), ("frequency", "f_score", False),
                                   ("monetary", "m_score", False)]:
        cuts = np.quantile(ordered[column].astype(float), rfm.QUANTILES, method="inverted_cdf")
        expected = 1 + (merged[column].to_numpy(float)[:, None] > cuts[None, :]).sum(axis=1)
        expected = 6 - expected if reverse else expected
        assert (merged[score].to_numpy() == expected).all(), column
    shares = got["rfm_segment"].value_counts(normalize=True)
    print(shares)
    assert (shares >= 0.05).sum() >= 4
