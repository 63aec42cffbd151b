"""Product recommendations: MLlib ALS on implicit feedback, evaluated on held-out time against a
popularity baseline, scored for every customer in blocks.

Flow of :func:`run`:

1. :func:`interactions` — implicit strength per (customer, SKU) from silver.order_lines: net
   quantity (returns and cancellations subtract), optionally decayed by the age of the last
   purchase, plus optional weighted events (views, add-to-cart). Guests and non-products are
   left out; pairs whose net quantity is not positive are dropped.
2. :func:`index_column` — dense, alphabetical integer ids for customers and SKUs (ALS needs
   ints), kept as DataFrames.
3. Evaluation on held-out time — validation window for a small grid (rank, regParam, alpha),
   then the chosen parameters trained before the test window and scored on it, with the
   popularity baseline on the same users. Rows go to gold.recommendation_metrics.
4. The final model on all interactions; :func:`top_k_blocks` scores every customer with matrix
   products over blocks of customers (mapInPandas, item factors broadcast, exact threshold top-k),
   excluding what the customer bought and what is out of stock; customers with too little
   history get best-sellers of their segment (gold.customer_segments) or overall.
"""

from __future__ import annotations

import datetime as dt
import itertools
import sys
from dataclasses import dataclass
from functools import partial
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.core.config import Conf
from shopsense.recommend.metrics import METRICS, ranking_metrics
from shopsense.core.errors import require_columns
from shopsense.core.ordered import with_position
from shopsense.core.runs import JobRun
from shopsense.core.settings import AlsSection, RecommendSection

USER, ITEM, RANK, SCORE = "user", "item", "rank", "score"
STRENGTH, NET_QUANTITY, LAST_BOUGHT = "strength", "net_quantity", "last_bought"
SOURCE_ALS, SOURCE_SEGMENT, SOURCE_POPULAR = "als", "segment_popular", "popular"

RECOMMENDATIONS = T.StructType([
    T.StructField(C.CUSTOMER_ID, T.StringType(), False),
    T.StructField(RANK, T.IntegerType(), False),
    T.StructField(C.SKU, T.StringType(), False),
    T.StructField(SCORE, T.DoubleType(), False),
    # als | segment_popular | popular
    T.StructField("source", T.StringType(), False),
    *tables.RUN_COLUMNS,
])

RECOMMENDATION_METRICS = T.StructType([
    T.StructField("split", T.StringType(), False),        # validation | test
    T.StructField("model", T.StringType(), False),        # als | popularity
    T.StructField("als_rank", T.IntegerType(), True),
    T.StructField("reg_param", T.DoubleType(), True),
    T.StructField("alpha", T.DoubleType(), True),
    T.StructField("selected", T.BooleanType(), False),    # the grid point used for test/final
    T.StructField("k", T.IntegerType(), False),
    *[T.StructField(m, T.DoubleType(), False) for m in METRICS],
    T.StructField("n_users", T.LongType(), False),
    T.StructField("train_end", T.DateType(), False),      # training uses order dates < train_end
    T.StructField("window_end", T.DateType(), False),     # evaluated window is [train_end, window_end)
    *tables.RUN_COLUMNS,
])

ORDER_LINE_COLUMNS = (C.CUSTOMER_ID, C.SKU, C.QUANTITY, C.ORDER_DATE, C.IS_GUEST, C.IS_PRODUCT)
EVENT_COLUMNS = (C.CUSTOMER_ID, C.SKU, "event_type", "event_at")


class RecommendError(ValueError):
    """Invalid input or parameters for the recommend job."""


# --- interactions -------------------------------------------------------------------------------

def filter_customer_products(lines: DataFrame) -> DataFrame:
    """Lines of identified customers on real products (no guests, no postage or fees)."""
    return lines.filter(~F.col(C.IS_GUEST) & F.col(C.IS_PRODUCT) & F.col(C.CUSTOMER_ID).isNotNull())


def interactions(lines: DataFrame, as_of: dt.date | None = None, half_life_days: float | None = None,
                 strength: str = "log1p", events: DataFrame | None = None,
                 event_weights: dict[str, float] | None = None) -> DataFrame:
    """Implicit feedback per (customer_id, sku): ``net_quantity`` (sales minus returns and
    cancellations), ``last_bought`` (date of the last sale) and ``strength``.

    ``strength`` is ``log1p`` (log(1 + net quantity): one wholesale order of 10,000 does not
    drown a hundred retail ones) or ``quantity``; with ``half_life_days`` it is multiplied by
    0.5 ** (days from last_bought to ``as_of`` / half life). Events (customer_id, sku, event_type,
    event_at) add weight * count per type for the pairs also bought or only viewed; event types
    without a weight are ignored. Pairs whose net quantity is not positive are dropped unless an
    event keeps them (then net_quantity is 0). Raises RecommendError on missing columns or an
    unknown ``strength``."""
    require_columns(lines, ORDER_LINE_COLUMNS, "order lines", RecommendError)
    if strength not in ("log1p", "quantity"):
        raise RecommendError(f"recommend.strength must be log1p or quantity, got {strength!r}")
    if half_life_days is not None and (half_life_days <= 0 or as_of is None):
        raise RecommendError("recency decay needs half_life_days > 0 and an as_of date, "
                             f"got half_life_days={half_life_days!r}, as_of={as_of!r}")
    net = (lines.transform(filter_customer_products)
           .groupBy(C.CUSTOMER_ID, C.SKU)
           .agg(F.sum(C.QUANTITY).alias(NET_QUANTITY),
                F.max(F.when(F.col(C.QUANTITY) > 0, F.col(C.ORDER_DATE))).alias(LAST_BOUGHT))
           .filter(F.col(NET_QUANTITY) > 0))
    base = F.log1p(F.col(NET_QUANTITY)) if strength == "log1p" else F.col(NET_QUANTITY)
    if half_life_days is not None:
        age = F.greatest(F.datediff(F.lit(as_of), F.col(LAST_BOUGHT)), F.lit(0))
        base = base * F.pow(F.lit(0.5), age / F.lit(float(half_life_days)))
    out = net.withColumn(STRENGTH, base.cast("double"))
    if events is not None:
        require_columns(events, EVENT_COLUMNS, "events", RecommendError)
        weights = {k: float(v) for k, v in (event_weights or {}).items() if v}
        if weights:
            w = F.create_map(*itertools.chain.from_iterable((F.lit(k), F.lit(v)) for k, v in weights.items()))
            ev = (events.filter(F.col(C.CUSTOMER_ID).isNotNull()
                                & F.col("event_type").isin(list(weights)))
                  .groupBy(C.CUSTOMER_ID, C.SKU)
                  .agg(F.sum(w[F.col("event_type")]).alias("event_strength")))
            out = (out.join(ev, [C.CUSTOMER_ID, C.SKU], "full")
                   .select(C.CUSTOMER_ID, C.SKU,
                           F.coalesce(NET_QUANTITY, F.lit(0.0)).alias(NET_QUANTITY), LAST_BOUGHT,
                           (F.coalesce(STRENGTH, F.lit(0.0)) + F.coalesce("event_strength", F.lit(0.0)))
                           .alias(STRENGTH)))
    return out.select(C.CUSTOMER_ID, C.SKU, F.col(NET_QUANTITY).cast("double").alias(NET_QUANTITY),
                      LAST_BOUGHT, STRENGTH)


def index_column(df: DataFrame, column: str, index: str) -> DataFrame:
    """Distinct values of ``column`` with a dense 0-based int ``index`` in alphabetical order:
    deterministic, a DataFrame (never collected). The values are distinct, so the index is
    their 0-based position in order (:func:`shopsense.core.ordered.with_position`: no sort of
    every id in one task)."""
    return (with_position(df.select(column).distinct(), [F.col(column).asc()], index)
            .select(column, (F.col(index) - 1).cast("int").alias(index)))


# --- models ---------------------------------------------------------------------------------------

def fit_als(ratings: DataFrame, rank: int, reg_param: float, alpha: float, params: AlsSection,
            num_blocks: int):
    """ALS (implicit preferences) on (user, item, strength); seeded, checkpointing every
    ``checkpoint_interval`` iterations so long runs do not overflow the lineage stack."""
    from pyspark.ml.recommendation import ALS

    als = ALS(rank=int(rank), regParam=float(reg_param), alpha=float(alpha),
              maxIter=params.max_iter, implicitPrefs=True, seed=params.seed,
              userCol=USER, itemCol=ITEM, ratingCol=STRENGTH, nonnegative=False,
              checkpointInterval=params.checkpoint_interval,
              numUserBlocks=num_blocks, numItemBlocks=num_blocks,
              intermediateStorageLevel=params.intermediate_storage,
              finalStorageLevel=params.final_storage, coldStartStrategy="drop")
    return als.fit(ratings)


def top_k_rows(scores: np.ndarray, k: int, chunks_per_k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the ``k`` largest entries of each row, best first.

    Exact, without a selection pass over every score: each row is cut into ``chunks_per_k * k``
    column chunks; the k-th largest of the chunk maxima is k distinct entries' minimum, so no
    higher than the row's true k-th largest and a safe threshold. Only the entries at or above it
    (about k + a few per row) are kept, found with one comparison and ``flatnonzero`` over the
    block (a 2-D ``nonzero`` is 30x slower), and those few are sorted. Ties at equal scores go to
    the lower column index. Rows with fewer than k finite scores return -inf at the end."""
    n, m = scores.shape
    k = min(k, m)
    n_chunks = chunks_per_k * k
    if m < 4 * n_chunks:
        top = np.argpartition(scores, m - k, axis=1)[:, m - k:]
        vals = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -vals), axis=1)
        return np.take_along_axis(top, order, axis=1), np.take_along_axis(vals, order, axis=1)
    bounds = (np.arange(n_chunks, dtype=np.int64) * m) // n_chunks
    maxima = np.maximum.reduceat(scores, bounds, axis=1)
    threshold = np.partition(maxima, n_chunks - k, axis=1)[:, n_chunks - k]
    flat = np.flatnonzero(scores >= threshold[:, None])
    rows, cols = np.divmod(flat, m)
    vals = scores.reshape(-1)[flat]
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, np.arange(n))
    keep = (np.arange(len(rows)) - starts[rows]) < k
    return cols[keep].reshape(n, k), vals[keep].reshape(n, k)


def _list_values(column: pa.Array, dtype) -> tuple[np.ndarray, np.ndarray]:
    """The flat values of a list column and each row's length (0 for a null list)."""
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return values, lengths


def _score_block(batches: Iterator[pa.RecordBatch], item_ids: np.ndarray, item_vecs: np.ndarray,
                 k: int, block_rows: int) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: top-k items per user by dot product, skipping each user's ``seen``.
    Works on the Arrow buffers (the factor lists flatten into one (n, rank) matrix without a
    per-row Python object), faster than mapInPandas with the same output (figures in
    docs/recommend.md)."""
    kk = min(k, len(item_ids))
    buffer = None
    for batch in batches:
        n_all = batch.num_rows
        if n_all == 0 or kk == 0:
            continue
        user_ids = batch.column(USER).to_numpy(zero_copy_only=False)
        vec_values, vec_lens = _list_values(batch.column("features"), np.float32)
        if not (vec_lens == item_vecs.shape[1]).all():
            raise RecommendError(f"user factors must all have rank {item_vecs.shape[1]}")
        vectors = vec_values.reshape(n_all, item_vecs.shape[1])
        seen_values, seen_lens = _list_values(batch.column("seen"), np.int64)
        seen_ends = np.cumsum(seen_lens)
        rows_max = min(block_rows, n_all)
        if buffer is None or buffer.shape[0] < rows_max:
            # reused across blocks: a fresh product matrix per block costs page faults
            # (docs/recommend.md)
            buffer = np.empty((rows_max, len(item_ids)), dtype=np.float32)
        for start in range(0, n_all, block_rows):
            stop = min(start + block_rows, n_all)
            n = stop - start
            scores = np.matmul(vectors[start:stop], item_vecs.T, out=buffer[:n])
            lo = seen_ends[start - 1] if start else 0
            flat = seen_values[lo:seen_ends[stop - 1]]
            if len(flat):
                rows = np.repeat(np.arange(n), seen_lens[start:stop])
                pos = np.searchsorted(item_ids, flat)
                pos_ok = pos < len(item_ids)
                pos_ok[pos_ok] = item_ids[pos[pos_ok]] == flat[pos_ok]
                scores[rows[pos_ok], pos[pos_ok]] = -np.inf
            top, top_scores = top_k_rows(scores, kk)
            keep = np.isfinite(top_scores.ravel())
            yield pa.RecordBatch.from_arrays([
                pa.array(np.repeat(user_ids[start:stop].astype(np.int32), kk)[keep]),
                pa.array(item_ids[top.ravel()].astype(np.int32)[keep]),
                pa.array(top_scores.ravel().astype(np.float64)[keep]),
                pa.array(np.tile(np.arange(1, kk + 1, dtype=np.int32), n)[keep])],
                names=[USER, ITEM, SCORE, RANK])


TOPK_SCHEMA = T.StructType([T.StructField(USER, T.IntegerType()), T.StructField(ITEM, T.IntegerType()),
                            T.StructField(SCORE, T.DoubleType()), T.StructField(RANK, T.IntegerType())])


def top_k_blocks(user_factors: DataFrame, item_factors: DataFrame, k: int,
                 seen: DataFrame | None = None, block_mb: int = 64,
                 num_partitions: int | None = None) -> DataFrame:
    """Top ``k`` items per user by the dot product of factors, as (user, item, score, rank).

    ``user_factors`` / ``item_factors``: (id, features array). The item factors — one row per
    SKU, bounded by the catalogue, not by the customers — are collected once and shipped to the
    tasks; customers stay distributed and are scored in blocks of about ``block_mb`` MB of scores
    (a matrix product and :func:`top_k_rows` per block). ``seen`` (user, item) pairs are never
    returned. Equal scores rank the lower item id first."""
    require_columns(user_factors, ("id", "features"), "user factors", RecommendError)
    require_columns(item_factors, ("id", "features"), "item factors", RecommendError)
    if k < 1:
        raise RecommendError(f"k must be >= 1, got {k}")
    items = item_factors.select("id", "features").toPandas().sort_values("id")
    item_ids = items["id"].to_numpy(dtype=np.int64)
    dim = len(items["features"].iloc[0]) if len(items) else 1
    item_vecs = (np.asarray(np.stack(items["features"].to_numpy()), dtype=np.float32)
                 if len(items) else np.zeros((0, dim), dtype=np.float32))
    block_rows = max(1, int(block_mb * 2**20 // (4 * max(1, len(item_ids)))))
    users = user_factors.select(F.col("id").cast("int").alias(USER), "features")
    if seen is not None:
        lists = seen.groupBy(USER).agg(F.collect_list(F.col(ITEM).cast("long")).alias("seen"))
        users = users.join(lists, USER, "left")
    else:
        users = users.withColumn("seen", F.lit(None).cast("array<long>"))
    if num_partitions:
        users = users.repartition(num_partitions, USER)
    fn = partial(_score_block, item_ids=item_ids, item_vecs=item_vecs, k=int(k), block_rows=block_rows)
    return users.select(USER, "features", "seen").mapInArrow(fn, TOPK_SCHEMA)


def popularity(ratings: DataFrame) -> DataFrame:
    """(item, buyers): distinct customers with a positive interaction per item."""
    return ratings.groupBy(ITEM).agg(F.countDistinct(USER).alias("buyers"))


def popularity_factors(ratings: DataFrame, n_items_hint: int) -> DataFrame:
    """Rank-1 item factors whose dot product with user factor [1] is the item's buyer count,
    ties broken by the lower item index (alphabetical SKU): the popularity baseline scored by
    the same block scorer, so exclusions apply identically to both models."""
    eps = 0.5 / max(1, n_items_hint)
    return popularity(ratings).select(
        F.col(ITEM).alias("id"),
        F.array((F.col("buyers") + F.lit(0.5) - F.col(ITEM) * F.lit(eps)).cast("float")).alias("features"))


def ones_factors(users: DataFrame) -> DataFrame:
    return users.select(F.col(USER).alias("id"), F.array(F.lit(1.0).cast("float")).alias("features"))


# --- evaluation -------------------------------------------------------------------------------------

def _to_ratings(inter: DataFrame, users: DataFrame, items: DataFrame) -> DataFrame:
    return (inter.join(users, C.CUSTOMER_ID).join(items, C.SKU)
            .select(USER, ITEM, STRENGTH))


def window_relevant(lines: DataFrame, start: dt.date, end: dt.date, users: DataFrame,
                    items: DataFrame) -> DataFrame:
    """(user, item) net-positive purchases in [start, end) by known users of known items."""
    window = lines.filter((F.col(C.ORDER_DATE) >= F.lit(start)) & (F.col(C.ORDER_DATE) < F.lit(end)))
    inter = interactions(window)
    return inter.join(users, C.CUSTOMER_ID).join(items, C.SKU).select(USER, ITEM)


def evaluate_split(lines: DataFrame, train_end: dt.date, window_end: dt.date, p: RecommendSection,
                   grid: list[tuple[int, float, float]], num_blocks: int,
                   block_mb: int, num_partitions: int | None) -> list[dict]:
    """Train on order dates < train_end, evaluate on [train_end, window_end): one ALS result per
    grid point and the popularity baseline, on the same users (those with at least
    ``min_items`` training SKUs and a purchase in the window that counts as relevant). With
    ``evaluation.exclude_purchased`` both models skip each user's training SKUs and only new
    SKUs count as relevant; without it re-purchases count too."""
    k = p.k
    train_lines = lines.filter(F.col(C.ORDER_DATE) < F.lit(train_end))
    inter = interactions(train_lines, train_end - dt.timedelta(days=1), p.recency_half_life_days,
                         p.strength).cache()
    users = index_column(inter, C.CUSTOMER_ID, USER).cache()
    items = index_column(inter, C.SKU, ITEM).cache()
    ratings = _to_ratings(inter, users, items).cache()
    n_items = items.count()
    if ratings.limit(1).count() == 0:
        raise RecommendError(f"no training interactions before {train_end}: move the evaluation "
                             "windows (recommend.evaluation.*) or as_of")
    seen = ratings.select(USER, ITEM) if p.evaluation.exclude_purchased else None
    eligible = (ratings.groupBy(USER).agg(F.count(F.lit(1)).alias("n"))
                .filter(F.col("n") >= p.min_items).select(USER))
    relevant = window_relevant(lines, train_end, window_end, users, items).join(eligible, USER, "left_semi")
    if seen is not None:
        relevant = relevant.join(seen, [USER, ITEM], "left_anti")
    relevant = relevant.cache()
    eval_users = relevant.select(USER).distinct().cache()
    results = []
    pop = top_k_blocks(ones_factors(eval_users), popularity_factors(ratings, n_items), k,
                       seen.join(eval_users, USER, "left_semi") if seen is not None else None,
                       block_mb, num_partitions)
    results.append({"model": "popularity", "als_rank": None, "reg_param": None, "alpha": None,
                    **ranking_metrics(pop, relevant, k, n_items, USER, ITEM, RANK)})
    for rank, reg, alpha in grid:
        model = fit_als(ratings, rank, reg, alpha, p.als, num_blocks)
        recs = top_k_blocks(model.userFactors.join(eval_users.withColumnRenamed(USER, "id"), "id", "left_semi"),
                            model.itemFactors, k,
                            seen.join(eval_users, USER, "left_semi") if seen is not None else None,
                            block_mb, num_partitions)
        results.append({"model": "als", "als_rank": int(rank), "reg_param": float(reg),
                        "alpha": float(alpha), **ranking_metrics(recs, relevant, k, n_items, USER, ITEM, RANK)})
    for df in (inter, users, items, ratings, relevant, eval_users):
        df.unpersist()
    for r in results:
        r.update({"k": k, "train_end": train_end, "window_end": window_end})
    return results


# --- recommendations ------------------------------------------------------------------------------

def out_of_stock_skus(inv: DataFrame) -> DataFrame:
    """SKUs with nothing on hand in the latest snapshot of ``inv`` (silver.inventory)."""
    latest = inv.agg(F.max(C.AS_OF)).first()[0]
    return inv.filter((F.col(C.AS_OF) == F.lit(latest)) & (F.col(C.ON_HAND) <= 0)).select(C.SKU).distinct()


def fallback_recommendations(customers: DataFrame, inter: DataFrame, top_n: int,
                             segments: DataFrame | None = None,
                             excluded_skus: DataFrame | None = None,
                             exclude_purchased: bool = True) -> DataFrame:
    """Best-sellers for customers the model does not score: (customer_id, rank, sku, score,
    source). Best-sellers of the customer's segment first (``source`` segment_popular), then
    overall ones (``popular``) to fill up to ``top_n``; score is the share of the segment's (or
    all) customers who bought the SKU. ``customers`` need only customer_id; ``segments`` has
    customer_id, segment_id. Already-bought (when ``exclude_purchased``) and excluded SKUs are
    left out. Only the top (top_n + the most SKUs one of these customers bought) per group are
    candidates, so the cross join stays small."""
    bought = inter.select(C.CUSTOMER_ID, C.SKU)
    pool = inter if excluded_skus is None else inter.join(excluded_skus, C.SKU, "left_anti")
    max_bought = (bought.join(customers.select(C.CUSTOMER_ID), C.CUSTOMER_ID, "left_semi")
                  .groupBy(C.CUSTOMER_ID).count().agg(F.max("count")).first()[0] or 0)
    depth = top_n + (int(max_bought) if exclude_purchased else 0)
    n_all = inter.select(C.CUSTOMER_ID).distinct().count()
    overall = (with_position(pool.groupBy(C.SKU).agg(F.countDistinct(C.CUSTOMER_ID).alias("buyers")),
                             [F.desc("buyers"), F.asc(C.SKU)], "pos")
               .filter(F.col("pos") <= depth)
               .select(C.SKU, (F.col("buyers") / F.lit(max(1, n_all))).alias(SCORE),
                       F.lit(1).alias("tier"), "pos", F.lit(SOURCE_POPULAR).alias("source")))
    cands = customers.select(C.CUSTOMER_ID).crossJoin(F.broadcast(overall))
    if segments is not None:
        seg = segments.select(C.CUSTOMER_ID, "segment_id")
        seg_size = seg.groupBy("segment_id").agg(F.count(F.lit(1)).alias("size"))
        by_seg = (pool.join(seg, C.CUSTOMER_ID).groupBy("segment_id", C.SKU)
                  .agg(F.countDistinct(C.CUSTOMER_ID).alias("buyers")).join(seg_size, "segment_id")
                  .withColumn("pos", F.row_number().over(
                      Window.partitionBy("segment_id").orderBy(F.desc("buyers"), C.SKU)))
                  .filter(F.col("pos") <= depth)
                  .select("segment_id", C.SKU, (F.col("buyers") / F.col("size")).alias(SCORE),
                          F.lit(0).alias("tier"), "pos", F.lit(SOURCE_SEGMENT).alias("source")))
        cands = cands.unionByName(customers.select(C.CUSTOMER_ID).join(seg, C.CUSTOMER_ID)
                                  .join(by_seg, "segment_id").drop("segment_id"))
    if exclude_purchased:
        cands = cands.join(bought, [C.CUSTOMER_ID, C.SKU], "left_anti")
    first = Window.partitionBy(C.CUSTOMER_ID, C.SKU).orderBy("tier", "pos")
    ranked = Window.partitionBy(C.CUSTOMER_ID).orderBy("tier", "pos", C.SKU)
    return (cands.withColumn("dup", F.row_number().over(first)).filter("dup = 1")
            .withColumn(RANK, F.row_number().over(ranked)).filter(F.col(RANK) <= top_n)
            .select(C.CUSTOMER_ID, RANK, C.SKU, F.col(SCORE).cast("double").alias(SCORE), "source"))


def _grid(p: RecommendSection) -> list[tuple[int, float, float]]:
    """Every combination of the grid's rank, reg_param and alpha (each list is non-empty)."""
    return list(itertools.product(p.grid.rank, p.grid.reg_param, p.grid.alpha))


def _num_blocks(spark: SparkSession, p: RecommendSection) -> int:
    return p.als.num_blocks or max(1, spark.sparkContext.defaultParallelism)


def print_metrics(rows: list[dict], out=sys.stdout) -> None:
    """The metrics rows as a fixed-width table."""
    cols = ["split", "model", "als_rank", "reg_param", "alpha", "selected", "n_users", *METRICS]
    frame = pd.DataFrame(rows)[cols]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 4):
        print(frame.to_string(index=False), file=out, flush=True)


@dataclass(frozen=True)
class Windows:
    """The evaluation windows before as_of: validation [val_start, test_start), test
    [test_start, as_of]."""

    val_start: dt.date
    test_start: dt.date
    end: dt.date          # the day after as_of: windows are half-open

    @classmethod
    def before(cls, as_of: dt.date, p: RecommendSection) -> "Windows":
        test_start = as_of + dt.timedelta(days=1 - p.evaluation.test_days)
        return cls(test_start - dt.timedelta(days=p.evaluation.validation_days), test_start,
                   as_of + dt.timedelta(days=1))


def run(spark: SparkSession, conf: Conf) -> dict:
    """The recommend job: gold.recommendation_metrics (the grid on the validation window, the
    chosen parameters against best-sellers on the test window) and gold.recommendations (the
    chosen model on all history up to as_of; best-sellers for the customers it cannot serve)."""
    p = conf.recommend
    with JobRun(spark, conf, "recommend", p) as run_:
        as_of = run_.as_of()
        lines = run_.read("silver.order_lines").filter(F.col(C.ORDER_DATE) <= F.lit(as_of))
        windows = Windows.before(as_of, p)
        chosen, rows = choose_and_evaluate(run_, lines, windows, p)
        run_.write(metrics_frame(spark, rows), "gold.recommendation_metrics")
        record_test_metrics(run_, rows, p.k)
        events = _events(run_, p, as_of)
        inventory = run_.read_optional("silver.inventory", "out-of-stock SKUs are not filtered") \
            if p.exclude_out_of_stock else None
        segments = run_.read_optional("gold.customer_segments", "fallback uses overall best-sellers")
        out, cached = recommendations(run_, lines, as_of, chosen, p, events, inventory, segments)
        run_.rows_out = run_.write(out, "gold.recommendations")
        for df in cached:
            df.unpersist()
        by_source = dict(run_.read_output("gold.recommendations").groupBy("source")
                         .agg(F.countDistinct(C.CUSTOMER_ID)).collect())
        for src, n in sorted(by_source.items()):
            run_.metric(f"customers_{src}", n)
    return run_.summary()


def metrics_frame(spark: SparkSession, rows: list[dict]) -> DataFrame:
    """The metrics rows as a frame of gold.recommendation_metrics' columns (run columns aside)."""
    fields = [f for f in RECOMMENDATION_METRICS.fields if f.name not in (C.RUN_ID, C.COMPUTED_AT)]
    return spark.createDataFrame([{f.name: r.get(f.name) for f in fields} for r in rows],
                                 schema=T.StructType(fields))


def choose_and_evaluate(run_: JobRun, lines: DataFrame, w: Windows,
                        p: RecommendSection) -> tuple[tuple[int, float, float], list[dict]]:
    """The grid searched on the validation window (skipped for a single point), the chosen
    parameters and best-sellers on the test window; returns the chosen point and the metrics
    rows of both splits."""
    grid = _grid(p)
    num_blocks, parts = _num_blocks(run_.spark, p), p.scoring.num_partitions
    if len(grid) > 1:
        val = evaluate_split(lines, w.val_start, w.test_start, p, grid, num_blocks, p.scoring.block_mb, parts)
        best = max((r for r in val if r["model"] == "als"),
                   key=lambda r: (r[p.select_by], -r["als_rank"], r["reg_param"], r["alpha"]))
        chosen = (best["als_rank"], best["reg_param"], best["alpha"])
        run_.note(f"grid on validation [{w.val_start}, {w.test_start}): chose rank={chosen[0]}, "
                  f"reg_param={chosen[1]}, alpha={chosen[2]} by {p.select_by}@{p.k}")
    else:
        val, chosen = [], grid[0]
        run_.note("grid has one point: validation window skipped")
    test = evaluate_split(lines, w.test_start, w.end, p, [chosen], num_blocks, p.scoring.block_mb, parts)
    rows = [{"split": split, "selected": r["model"] == "als"
             and (r["als_rank"], r["reg_param"], r["alpha"]) == chosen, **r}
            for split, results in (("validation", val), ("test", test)) for r in results]
    print_metrics(rows)
    return chosen, rows


def record_test_metrics(run_: JobRun, rows: list[dict], k: int) -> None:
    """ALS against best-sellers on the test window, in the run record; a note when ALS does
    not beat them."""
    t_als = next(r for r in rows if r["split"] == "test" and r["model"] == "als")
    t_pop = next(r for r in rows if r["split"] == "test" and r["model"] == "popularity")
    run_.metric(f"test_precision_at_{k}_als", t_als["precision"], key=True)
    run_.metric(f"test_precision_at_{k}_popularity", t_pop["precision"])
    run_.metric(f"test_ndcg_at_{k}_als", t_als["ndcg"])
    run_.metric(f"test_ndcg_at_{k}_popularity", t_pop["ndcg"])
    run_.metric("test_users", t_als["n_users"])
    if t_als["precision"] <= t_pop["precision"]:
        run_.note(f"ALS does not beat the popularity baseline on the test window "
                  f"(precision@{k} {t_als['precision']:.4f} vs {t_pop['precision']:.4f})")


def recommendations(run_: JobRun, lines: DataFrame, as_of: dt.date, chosen: tuple[int, float, float],
                    p: RecommendSection, events: DataFrame | None, inventory: DataFrame | None,
                    segments: DataFrame | None) -> tuple[DataFrame, list[DataFrame]]:
    """The chosen ALS model fitted on all history up to as_of, top_n per customer with enough
    history; segment (else overall) best-sellers for the others. Returns the recommendations
    and the frames cached to compute them (unpersist them once the output is written)."""
    inter = interactions(lines, as_of, p.recency_half_life_days, p.strength, events,
                         p.events.weights).cache()
    run_.rows_in = inter.count()
    users = index_column(inter, C.CUSTOMER_ID, USER).cache()
    items = index_column(inter, C.SKU, ITEM).cache()
    ratings = _to_ratings(inter, users, items).cache()
    model = fit_als(ratings, *chosen, p.als, _num_blocks(run_.spark, p))
    bought = (inter.filter(F.col(NET_QUANTITY) > 0).join(users, C.CUSTOMER_ID)
              .join(items, C.SKU).select(USER, ITEM))
    scorable = (ratings.groupBy(USER).agg(F.count(F.lit(1)).alias("n"))
                .filter(F.col("n") >= p.min_items).select(F.col(USER).alias("id")))
    oos = out_of_stock_skus(inventory) if inventory is not None else None
    item_factors = model.itemFactors
    if oos is not None:
        item_factors = item_factors.join(items.join(oos, C.SKU).select(F.col(ITEM).alias("id")),
                                         "id", "left_anti")
        run_.metric("out_of_stock_skus", oos.count())
    recs = top_k_blocks(model.userFactors.join(scorable, "id", "left_semi"), item_factors, p.top_n,
                        bought if p.exclude_purchased else None, p.scoring.block_mb,
                        p.scoring.num_partitions)
    als_recs = (recs.join(users, USER).join(items, ITEM)
                .select(C.CUSTOMER_ID, RANK, C.SKU, SCORE, F.lit(SOURCE_ALS).alias("source")))
    customers = lines.transform(filter_customer_products).select(C.CUSTOMER_ID).distinct()
    rest = customers.join(scorable.join(users.withColumnRenamed(USER, "id"), "id")
                          .select(C.CUSTOMER_ID), C.CUSTOMER_ID, "left_anti")
    fb = fallback_recommendations(rest, inter.filter(F.col(NET_QUANTITY) > 0), p.top_n,
                                  segments, oos, p.exclude_purchased)
    return als_recs.unionByName(fb), [inter, users, items, ratings]


def _events(run_: JobRun, p: RecommendSection, as_of: dt.date) -> DataFrame | None:
    name = p.events.source
    if not name:
        return None
    events = run_.read(name)
    require_columns(events, EVENT_COLUMNS, name, RecommendError)
    return events.filter(F.to_date("event_at") <= F.lit(as_of))
