"""RFM score segments: the classic recency / frequency / monetary quintile scores and the named
grid marketers use, beside the KMeans segments (written by the segment job).

Scores are 1-5. Boundaries are the 20/40/60/80 % quantiles of each feature over the customers
with an order, exact (Spark's ``approxQuantile`` with relative error 0: the smallest value whose
rank reaches the share; four numbers per feature reach the driver). A value's score is 1 plus
the number of boundaries below it; recency is reversed (recent customers score 5). Ties stay
together, so on a feature where many customers share one value (one order) fewer than five
scores may occur.

The names come from the recency score and the frequency score (the usual grid; "lost" splits
the oldest, least frequent cell off "hibernating"):

| recency \\ frequency | 1 | 2 | 3 | 4 | 5 |
|---|---|---|---|---|---|
| 5 | new | potential loyalists | potential loyalists | champions | champions |
| 4 | promising | potential loyalists | potential loyalists | loyal | loyal |
| 3 | about to sleep | about to sleep | need attention | loyal | loyal |
| 2 | hibernating | hibernating | at risk | at risk | can't lose |
| 1 | lost | hibernating | at risk | at risk | can't lose |
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import columns as C
from shopsense.core import tables

QUANTILES = [0.2, 0.4, 0.6, 0.8]

#: (recency score, frequency score) -> name, as in the module docstring.
GRID: dict[tuple[int, int], str] = {}
for _f in range(1, 6):
    GRID[(5, _f)] = "new" if _f == 1 else "potential loyalists" if _f <= 3 else "champions"
    GRID[(4, _f)] = "promising" if _f == 1 else "potential loyalists" if _f <= 3 else "loyal"
    GRID[(3, _f)] = "about to sleep" if _f <= 2 else "need attention" if _f == 3 else "loyal"
    for _r in (1, 2):
        GRID[(_r, _f)] = "hibernating" if _f <= 2 else "at risk" if _f <= 4 else "can't lose"
GRID[(1, 1)] = "lost"
NAMES = sorted(set(GRID.values()))

RFM_SEGMENTS = T.StructType([
    T.StructField(C.CUSTOMER_ID, T.StringType(), False),
    T.StructField(C.AS_OF, T.DateType(), False),
    T.StructField("r_score", T.IntegerType(), False),
    T.StructField("f_score", T.IntegerType(), False),
    T.StructField("m_score", T.IntegerType(), False),
    T.StructField("rfm_score", T.StringType(), False),     # e.g. "545"
    T.StructField("rfm_segment", T.StringType(), False),
    *tables.RUN_COLUMNS,
])


def boundaries(features: DataFrame) -> dict[str, list[float]]:
    """The exact 20/40/60/80 % quantiles of recency_days, frequency and monetary."""
    columns = [C.RECENCY_DAYS, C.FREQUENCY, C.MONETARY]
    cuts = features.select([F.col(c).cast("double") for c in columns]).approxQuantile(columns, QUANTILES, 0.0)
    return dict(zip(columns, cuts))


def _score(column: str, cuts: list[float], reverse: bool = False) -> Column:
    below = sum((F.col(column) > F.lit(c)).cast("int") for c in cuts)
    return (F.lit(5) - below) if reverse else (F.lit(1) + below)


def rfm_segments(features: DataFrame) -> tuple[DataFrame, dict[str, list[float]]]:
    """gold.rfm_segments without run columns for the customers with an order (``has_orders``;
    returns-only customers have no recency or frequency to score), and the boundaries used."""
    ordered = features.filter(F.col(C.HAS_ORDERS))
    cuts = boundaries(ordered)
    r = _score(C.RECENCY_DAYS, cuts[C.RECENCY_DAYS], reverse=True)
    f = _score(C.FREQUENCY, cuts[C.FREQUENCY])
    m = _score(C.MONETARY, cuts[C.MONETARY])
    grid = F.create_map(*[x for (rs, fs), name in GRID.items() for x in (F.lit(f"{rs}{fs}"), F.lit(name))])
    scored = ordered.select(C.CUSTOMER_ID, C.AS_OF, r.alias("r_score"), f.alias("f_score"), m.alias("m_score"))
    return (scored.withColumn("rfm_score", F.concat_ws("", "r_score", "f_score", "m_score"))
            .withColumn("rfm_segment", grid[F.concat_ws("", "r_score", "f_score")]), cuts)
