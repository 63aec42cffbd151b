"""Ranking metrics at k for top-N recommendations, in Spark and as a pandas reference.

Both take the same inputs: ``recs`` (user, item, rank — rank 1 is the best) and ``relevant``
(user, item — what each evaluated user actually bought in the held-out window). The evaluated
users are the users of ``relevant``; a user without recommendations scores 0 on every metric.

Definitions (binary relevance, per user, then averaged over users):

* precision@k = hits in the top k / k
* recall@k    = hits in the top k / number of relevant items
* NDCG@k      = sum over hits of 1/log2(rank + 1), divided by the same sum for a perfect list
  (min(number relevant, k) hits at ranks 1..)
* MAP@k       = sum over hits at rank r of (hits within ranks 1..r) / r, divided by
  min(number relevant, k)
* hit rate@k  = 1 when at least one hit in the top k
* coverage    = distinct items recommended (top k, all evaluated users) / catalogue size
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

METRICS = ("precision", "recall", "ndcg", "map", "hit_rate", "coverage")


def _check_columns(df, needed: tuple[str, ...], what: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; it has {list(df.columns)}")


def ranking_metrics(recs: DataFrame, relevant: DataFrame, k: int, n_catalogue: int,
                    user: str = "user", item: str = "item", rank: str = "rank") -> dict[str, float]:
    """Spark: the metrics at ``k`` averaged over the users of ``relevant`` (plus ``n_users``).

    Returns one small dict (a single aggregated row reaches the driver). Raises ValueError when
    a column is missing or k < 1."""
    _check_columns(recs, (user, item, rank), "recs")
    _check_columns(relevant, (user, item), "relevant")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rel = relevant.select(user, item).distinct()
    n_rel = rel.groupBy(user).agg(F.count(F.lit(1)).alias("n_rel"))
    top = (recs.filter(F.col(rank) <= k).select(user, item, rank)
           .join(n_rel.select(user), user, "left_semi"))
    hits = (top.join(rel.withColumn("hit", F.lit(1)), [user, item], "left")
            .withColumn("hit", F.coalesce(F.col("hit"), F.lit(0)))
            .withColumn("cum", F.sum("hit").over(Window.partitionBy(user).orderBy(rank))))
    per_user = hits.groupBy(user).agg(
        F.sum("hit").alias("h"),
        F.sum(F.col("hit") / F.log2(F.col(rank) + 1)).alias("dcg"),
        F.sum(F.col("hit") * F.col("cum") / F.col(rank)).alias("ap_num"))
    m = F.least(F.col("n_rel"), F.lit(k))
    idcg = F.aggregate(F.sequence(F.lit(1), m), F.lit(0.0),
                       lambda acc, i: acc + 1.0 / F.log2(i + 1))
    users = (n_rel.join(per_user, user, "left").fillna(0, subset=["h", "dcg", "ap_num"])
             .select((F.col("h") / k).alias("precision"),
                     (F.col("h") / F.col("n_rel")).alias("recall"),
                     (F.col("dcg") / idcg).alias("ndcg"),
                     (F.col("ap_num") / m).alias("map"),
                     (F.col("h") > 0).cast("double").alias("hit_rate")))
    row = users.agg(*[F.avg(c).alias(c) for c in METRICS if c != "coverage"],
                    F.count(F.lit(1)).alias("n_users")).first()
    n_items = top.select(item).distinct().count()
    out = {c: float(row[c] or 0.0) for c in METRICS if c != "coverage"}
    out["coverage"] = n_items / n_catalogue if n_catalogue else 0.0
    out["n_users"] = int(row["n_users"])
    return out


def ranking_metrics_pandas(recs: pd.DataFrame, relevant: pd.DataFrame, k: int, n_catalogue: int,
                           user: str = "user", item: str = "item", rank: str = "rank") -> dict[str, float]:
    """The pandas reference of :func:`ranking_metrics`, written loop-wise from the definitions."""
    _check_columns(recs, (user, item, rank), "recs")
    _check_columns(relevant, (user, item), "relevant")
    rel = relevant.groupby(user)[item].apply(set).to_dict()
    top = recs[recs[rank] <= k].sort_values([user, rank])
    lists = top.groupby(user)[item].apply(list).to_dict()
    sums = dict.fromkeys(METRICS[:-1], 0.0)
    seen_items: set = set()
    for u, rel_items in rel.items():
        ranked = lists.get(u, [])
        seen_items.update(ranked)
        hits = [1 if i in rel_items else 0 for i in ranked]
        h = sum(hits)
        m = min(len(rel_items), k)
        sums["precision"] += h / k
        sums["recall"] += h / len(rel_items)
        dcg = sum(x / math.log2(r + 2) for r, x in enumerate(hits))
        sums["ndcg"] += dcg / sum(1 / math.log2(r + 2) for r in range(m))
        cum = np.cumsum(hits)
        sums["map"] += sum(cum[r] / (r + 1) for r, x in enumerate(hits) if x) / m
        sums["hit_rate"] += float(h > 0)
    n = len(rel)
    out = {c: (v / n if n else 0.0) for c, v in sums.items()}
    out["coverage"] = len(seen_items) / n_catalogue if n_catalogue else 0.0
    out["n_users"] = n
    return out
