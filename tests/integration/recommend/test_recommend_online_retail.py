"""The recommend job on the real Online Retail export with a time split and a tiny grid."""

import pytest

from shopsense.recommend import als as recommend
from shopsense.core import tables

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


def test_recommend_on_online_retail_beats_best_sellers(spark, retail_conf_factory):
    conf = retail_conf_factory("recommend.grid.rank=[16]", "recommend.grid.reg_param=[0.1]",
                     "recommend.grid.alpha=[10.0]", "recommend.als.max_iter=5")
    summary = recommend.run(spark, conf)
    metrics = {r.model: r for r in tables.read_table(spark, conf, "gold.recommendation_metrics")
               .filter("split = 'test'").collect()}
    assert metrics["als"].n_users == metrics["popularity"].n_users > 500
    assert metrics["als"].ndcg > metrics["popularity"].ndcg
    recs = tables.read_table(spark, conf, "gold.recommendations")
    assert summary["rows_out"] == recs.count() > 0
    assert {r.source for r in recs.select("source").distinct().collect()} <= {"als", "popular"}
