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
    assert conf["segment"]["k_min"] <= metrics["k"] <= conf["segment"]["k_max"]
    assert metrics["silhouette"] > 0.3

    profiles = tables.read_table(spark, conf, "gold.segment_profiles")
    pdf = profiles.toPandas()
    assert pdf["n_customers"].sum() == feats["metrics"]["customers"]
    assert pdf["customer_share"].sum() == pytest.approx(1.0)
    assert pdf["revenue_share"].sum() == pytest.approx(1.0)
    assert pdf["segment_name"].is_unique
    segments = tables.read_table(spark, conf, "gold.customer_segments")
    assert segments.filter(F.col(segment.SEGMENT_NAME).isNull()).count() == 0
