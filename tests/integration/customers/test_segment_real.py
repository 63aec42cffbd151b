"""features + segment on the real Online Retail export (ingested once for the module)."""

import pytest
from pyspark.sql import functions as F

from shopsense.customers import features
from shopsense.customers import segments as segment
from shopsense.core import tables

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def online_retail(retail_conf_factory):
    return retail_conf_factory()


def test_segments_online_retail(spark, online_retail):
    conf = online_retail
    feats = features.run(spark, conf)
    summary = segment.run(spark, conf)
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
