"""How good a probability is: AUC, average precision, Brier score, expected calibration error
and lift in the top decile, computed from a histogram of the scores so that nothing growing
with the customers reaches the driver.

Spark reduces the (probability, label) pairs of every customer to at most ``BUCKETS`` rows
(probability buckets 1/BUCKETS wide: customers, buyers, sum of probabilities, sum of squared
errors); the metrics are computed from those rows in pandas. Customers in one bucket are
treated as tied scores, which is what moves AUC and average precision away from the exact
figures: by at most the share of pairs that fall in one bucket (tests compare with the exact
pandas figures on real scores). The Brier score and the calibration error are exact: they need
only the bucket sums.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

#: Probability buckets of the histogram (the most rows it brings to the driver per model).
BUCKETS = 10_000
#: Equal-width bins of the calibration error and the calibration curve.
CALIBRATION_BINS = 10
METRICS = ("customers", "buyers", "base_rate", "auc", "average_precision", "brier", "ece",
           "lift_top_decile")


def histogram(scored: DataFrame, probability: str, label: str) -> pd.DataFrame:
    """(bucket, customers, buyers, sum_p, sum_sq) per probability bucket, sorted by bucket: one
    Spark aggregation, at most BUCKETS rows. Null probabilities are not counted."""
    p = F.col(probability).cast("double")
    y = F.col(label).cast("double")
    bucket = F.least(F.floor(p * BUCKETS), F.lit(BUCKETS - 1)).cast("int")
    rows = (scored.filter(p.isNotNull()).groupBy(bucket.alias("bucket"))
            .agg(F.count("*").alias("customers"), F.sum(y).alias("buyers"), F.sum(p).alias("sum_p"),
                 F.sum((p - y) * (p - y)).alias("sum_sq"))
            .toPandas())
    return rows.sort_values("bucket", ignore_index=True)


def metrics(hist: pd.DataFrame) -> dict[str, float | None]:
    """The METRICS of a histogram. AUC and average precision are None without both buyers and
    non-buyers (they are not defined); the rest is None without customers."""
    n = float(hist["customers"].sum()) if len(hist) else 0.0
    pos = float(hist["buyers"].sum()) if len(hist) else 0.0
    out: dict[str, float | None] = {"customers": n, "buyers": pos,
                                    "base_rate": pos / n if n else None}
    if not n:
        return {**out, **{k: None for k in METRICS if k not in out}}
    out["brier"] = float(hist["sum_sq"].sum()) / n
    out["ece"] = float(calibration_curve(hist).eval("abs(sum_p - buyers)").sum()) / n
    defined = 0 < pos < n
    desc = hist.sort_values("bucket", ascending=False, ignore_index=True)
    b = desc["buyers"].to_numpy(float)
    neg = desc["customers"].to_numpy(float) - b
    if defined:
        # a buyer beats every non-buyer below its bucket and half of those in it
        below = neg.sum() - np.cumsum(neg)
        out["auc"] = float((b * (below + 0.5 * neg)).sum() / (pos * (n - pos)))
        # precision at each bucket's threshold, weighted by the recall it adds
        precision = np.cumsum(b) / np.cumsum(b + neg)
        out["average_precision"] = float((precision * b).sum() / pos)
    else:
        out["auc"] = out["average_precision"] = None
    out["lift_top_decile"] = top_share_lift(desc, 0.1, n, pos) if pos else None
    return out


def top_share_lift(desc: pd.DataFrame, share: float, n: float, pos: float) -> float:
    """Buyer rate among the ``share`` of customers with the highest scores over the base rate;
    the bucket straddling the cut contributes pro rata."""
    want = share * n
    counts = desc["customers"].to_numpy(float)
    buyers = desc["buyers"].to_numpy(float)
    before = np.concatenate([[0.0], np.cumsum(counts)[:-1]])
    take = np.clip(want - before, 0.0, counts)
    top_buyers = float((buyers * np.divide(take, counts, out=np.zeros_like(take), where=counts > 0)).sum())
    return (top_buyers / want) / (pos / n)


def calibration_curve(hist: pd.DataFrame, bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """(bin, customers, buyers, sum_p, mean_predicted, observed_rate) per equal-width bin of the
    probability that holds customers."""
    b = np.minimum(hist["bucket"].to_numpy() * bins // BUCKETS, bins - 1)
    curve = (hist.assign(bin=b).groupby("bin", as_index=False)[["customers", "buyers", "sum_p"]].sum())
    curve["mean_predicted"] = curve["sum_p"] / curve["customers"]
    curve["observed_rate"] = curve["buyers"] / curve["customers"]
    return curve


def decile_lift(hist: pd.DataFrame) -> pd.DataFrame:
    """(decile 1 = the highest scores .. 10, customers, buyers, observed_rate, lift): customers
    ranked by score in ten equal shares, the straddling buckets split pro rata."""
    desc = hist.sort_values("bucket", ascending=False, ignore_index=True)
    n, pos = float(desc["customers"].sum()), float(desc["buyers"].sum())
    counts, buyers = desc["customers"].to_numpy(float), desc["buyers"].to_numpy(float)
    start = np.concatenate([[0.0], np.cumsum(counts)[:-1]])
    rows = []
    for d in range(10):
        lo, hi = d * n / 10, (d + 1) * n / 10
        take = np.clip(np.minimum(start + counts, hi) - np.maximum(start, lo), 0.0, None)
        share = np.divide(take, counts, out=np.zeros_like(take), where=counts > 0)
        got = float((buyers * share).sum())
        rate = got / (hi - lo) if hi > lo else None
        rows.append({"decile": d + 1, "customers": hi - lo, "buyers": got, "observed_rate": rate,
                     "lift": None if rate is None or not pos else rate / (pos / n)})
    return pd.DataFrame(rows)
