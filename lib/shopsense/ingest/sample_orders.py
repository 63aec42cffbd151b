"""The sample's order lines and what they are drawn from, as lazy Spark frames.

The hash-based column helpers (``_u`` and the calendar, weekday and promotion functions), the
SKU table ``_skus`` (also the base of the catalogue, inventory and truth in
:mod:`shopsense.ingest.sample`), the customers ``_customers`` and :func:`order_lines` with its
:data:`ORDERS_SCHEMA`. The spec and planted parameters are in :mod:`shopsense.ingest.sample_spec`.
"""

from __future__ import annotations

import math
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core.columns import (
    CATEGORY,
    COUNTRY,
    CUSTOMER_ID,
    LEAD_TIME_DAYS,
    LEAD_TIME_STD_DAYS,
    MIN_ORDER_QTY,
    ORDER_ID,
    ORDERED_AT,
    PACK_SIZE,
    PRODUCT_NAME,
    QUANTITY,
    SKU,
    UNIT_COST,
    UNIT_PRICE,
)
from shopsense.ingest.sample_spec import (
    _AT_RISK,
    _AT_RISK_GAP,
    _CATEGORIES,
    _COLOURS,
    _COUNTRIES,
    _INTERMITTENT_QTY,
    _MONTH_FACTOR,
    _NEW,
    _NEW_MAX_ORDERS,
    _NOUNS,
    _PROMO_DAYS,
    _PROMO_DISCOUNT,
    _PROMO_LIFT,
    _PROMO_SHARE,
    _RATE_JITTER,
    _RETURN_DELAY_DAYS,
    _START_SPREAD,
    _TASTE_SHARE,
    _TREND,
    _WEEKDAY_ATTEMPTS,
    _WEEKDAY_FACTOR,
    _ZIPF_GLOBAL,
    _ZIPF_TASTE,
    GROUPS,
    SampleSpec,
    _layout,
    _new_window,
    _order_key_stride,
    _p_intermittent,
    _pairs,
    _start_epoch,
    _validate,
    expected_counts,
)

_MASK47 = 0x7FFFFFFFFFFF

ORDERS_SCHEMA = T.StructType([
    T.StructField(ORDER_ID, T.StringType(), False),
    T.StructField(CUSTOMER_ID, T.StringType(), True),
    T.StructField(SKU, T.StringType(), False),
    T.StructField(QUANTITY, T.IntegerType(), False),
    T.StructField(UNIT_PRICE, T.DoubleType(), False),
    T.StructField(ORDERED_AT, T.TimestampType(), False),
    T.StructField(PRODUCT_NAME, T.StringType(), False),
    T.StructField(CATEGORY, T.StringType(), False),
    T.StructField(COUNTRY, T.StringType(), False),
])


# --- column helpers -----------------------------------------------------------------------------

def _u(seed: int, salt: str, *cols) -> Column:
    """A uniform in [0, 1) from a hash of (seed, salt, cols): deterministic, partition-free."""
    h = F.xxhash64(F.lit(seed), F.lit(salt), *cols)
    return (h.bitwiseAND(F.lit(_MASK47)).cast("double") / float(2 ** 47))


def _pick(values, idx: Column) -> Column:
    """values[idx] for a small Python list of literals (idx is 0-based)."""
    return F.element_at(F.array(*[F.lit(v) for v in values]), idx.cast("int") + 1)


def _block_size(n: int, block: Column, n_blocks: int) -> Column:
    """Items with index i = block + j * n_blocks, i < n, for j = 0, 1, ..."""
    return F.greatest(F.lit(0), F.floor((F.lit(n) - block + (n_blocks - 1)) / n_blocks))


def _geometric(u: Column, mean: Column) -> Column:
    """An integer >= 1 with the given mean (> 1): 1 + floor(ln(1-u) / ln(1 - 1/mean))."""
    m = F.greatest(mean, F.lit(1.0001))
    return (F.lit(1) + F.floor(F.log(F.lit(1.0) - u) / F.log(F.lit(1.0) - F.lit(1.0) / m))).cast("int")


def _month_segments(spec: SampleSpec) -> list[tuple[int, int, float, float]]:
    """The period [0, n_days] cut at month starts: (first day, length, month factor, weighted
    time at the first day). Weighted time C(d) = sum of month factors of the days before d."""
    start = date.fromisoformat(spec.start_date)
    segs, d, acc = [], 0, 0.0
    while d < spec.n_days + 1:
        cur = start + timedelta(days=d)
        nxt = date(cur.year + (cur.month == 12), cur.month % 12 + 1, 1)
        length = min((nxt - cur).days, spec.n_days + 1 - d)
        f = _MONTH_FACTOR.get(cur.month, 1.0)
        segs.append((d, length, f, acc))
        acc += f * length
        d += length
    return segs


def _weighted_time(spec: SampleSpec, day: Column) -> Column:
    """C(day): month-weighted time elapsed before ``day`` (piecewise linear, increasing)."""
    return sum(F.lit(f) * F.least(F.greatest(day - s0, F.lit(0)), F.lit(n))
               for s0, n, f, _ in _month_segments(spec))


def _day_at(spec: SampleSpec, x: Column) -> Column:
    """The inverse of C: the (fractional) day at which month-weighted time reaches ``x``."""
    return sum(F.least(F.greatest((x - c) / f, F.lit(0.0)), F.lit(float(n)))
               for _, n, f, c in _month_segments(spec))


def _weekday_weight(spec: SampleSpec, day: Column) -> Column:
    """Acceptance weight in (0, 1] of a day's weekday."""
    dow = (F.lit(date.fromisoformat(spec.start_date).weekday()) + day) % 7
    return _pick(_WEEKDAY_FACTOR, dow) / max(_WEEKDAY_FACTOR)


def _promo_windows(spec: SampleSpec) -> tuple[int, int]:
    n_windows = max(1, min(3, spec.n_days // 120))
    seg_len = spec.n_days // n_windows
    return n_windows, min(_PROMO_DAYS, seg_len)


def _promo_start(spec: SampleSpec, rank: Column, k: Column) -> Column:
    """First day of promotion window k of a SKU: window k lies inside segment k of the period."""
    n_windows, length = _promo_windows(spec)
    n = spec.n_days
    seg_start = F.floor(k * n / n_windows)
    seg_len = F.floor((k + 1) * n / n_windows) - seg_start
    u = _u(spec.seed, "promo_start", rank.cast("int"), k.cast("int"))
    return (seg_start + F.floor(u * (seg_len - length + 1))
            ).cast("int")


def _in_promo(spec: SampleSpec, rank: Column, day: Column, eligible: Column) -> Column:
    n_windows, length = _promo_windows(spec)
    seg = F.floor(((day + 1) * n_windows - 1) / spec.n_days).cast("int")
    offset = day - _promo_start(spec, rank, seg)
    return eligible & (offset >= 0) & (offset < length)


# --- SKUs -----------------------------------------------------------------------------------

def _sku_permutation(n: int) -> tuple[int, int]:
    """A multiplier coprime with n and an offset: rank -> (rank * p + off) % n is a bijection,
    so SKU numbers do not give away popularity."""
    p = max(1, int(n * 0.618)) | 1
    while math.gcd(p, n) != 1:
        p += 1
    return p, n // 3


def _selection_probability(spec: SampleSpec, rank: Column) -> Column:
    """Probability that a regular line picks the SKU of this rank (analytic, matches _sku_rank)."""
    lay = _layout(spec)
    n_s, n_i, t = lay["n_smooth"], lay["n_int"], spec.n_tastes
    p_int = _p_intermittent(spec)
    smooth_block = rank % t
    nb = _block_size(n_s, smooth_block, t)
    j = F.floor(rank / t)
    taste_p = (F.pow((j + 1) / nb, 1 / _ZIPF_TASTE) - F.pow(j / nb, 1 / _ZIPF_TASTE)) / t
    glob_p = F.pow((rank + 1) / n_s, 1 / _ZIPF_GLOBAL) - F.pow(rank / n_s, 1 / _ZIPF_GLOBAL)
    smooth = (1 - p_int) * (_TASTE_SHARE * taste_p + (1 - _TASTE_SHARE) * glob_p)
    if n_i == 0:
        return F.when(rank < n_s, smooth).otherwise(F.lit(0.0))
    ib = (rank - n_s) % t
    nbi = _block_size(n_i, ib, t)
    # customers of a taste with no intermittent SKU of their own fall back to the global choice
    empty_blocks = sum(1 for b in range(t) if (n_i - b + t - 1) // t <= 0)
    fallback = _TASTE_SHARE * empty_blocks / t
    inter = p_int * (_TASTE_SHARE / t / nbi + ((1 - _TASTE_SHARE) + fallback) / n_i)
    return (F.when(rank < n_s, smooth).when(rank < lay["n_base"], inter).otherwise(F.lit(0.0)))


def _skus(spark: SparkSession, spec: SampleSpec) -> DataFrame:
    """One row per SKU rank with every attribute the generator and the outputs need."""
    lay = _layout(spec)
    seed = spec.seed
    width = max(5, len(str(spec.n_skus)))
    p, off = _sku_permutation(spec.n_skus)
    exp = expected_counts(spec)
    pairs = _pairs(spec)

    rank = F.col("rank")
    num = ((rank * p + off) % spec.n_skus).cast("int")
    noun = (F.col("num") / len(_COLOURS)).cast("int") % len(_NOUNS)
    repeat = (F.col("num") / (len(_COLOURS) * len(_NOUNS))).cast("int")
    pattern = (F.when(rank < lay["n_smooth"], "smooth")
               .when(rank < lay["n_base"], "intermittent").otherwise("companion"))
    taste = (F.when(rank < lay["n_smooth"], rank % spec.n_tastes)
             .when(rank < lay["n_base"], (rank - lay["n_smooth"]) % spec.n_tastes)
             .cast("int"))
    # taste-neutral prices: drawn from the SKU's position within its taste block (companions: rank)
    position = (F.when(rank < lay["n_smooth"], F.floor(rank / spec.n_tastes))
                .when(rank < lay["n_base"], lay["n_smooth"] + F.floor((rank - lay["n_smooth"]) / spec.n_tastes))
                .otherwise(rank))
    price = F.round(F.exp(F.lit(math.log(0.85)) + _u(seed, "price", position) * math.log(20.0)), 2)

    # Companion i is sold on orders containing antecedent i: lines ~ orders x P(A) x confidence.
    p_sel = _selection_probability(spec, rank)
    comp_rate = F.lit(0.0)
    for _, a, b, c in pairs:
        a_col = F.lit(a)
        p_a = F.least(F.lit(1.0), _selection_probability(spec, a_col) * exp["lines_per_order"])
        comp_rate = F.when(rank == b, p_a * c * exp["orders_per_day"]).otherwise(comp_rate)
    lines_per_day = F.when(rank < lay["n_base"], p_sel * exp["lines_per_day"]).otherwise(comp_rate)
    qty = exp["mean_qty"] * F.when(F.col("pattern") == "intermittent", _INTERMITTENT_QTY).otherwise(1.0)

    return (
        spark.range(spec.n_skus).withColumnRenamed("id", "rank")
        .withColumn("rank", rank.cast("int"))
        .withColumn("num", num)
        .withColumn(SKU, F.concat(F.lit("S"), F.lpad((F.col("num") + 1).cast("string"), width, "0")))
        .withColumn(PRODUCT_NAME, F.concat_ws(
            " ", _pick(_COLOURS, F.col("num") % len(_COLOURS)), _pick(_NOUNS, noun),
            F.when(repeat > 0, F.concat(F.lit("NO."), (repeat + 1).cast("string")))))
        .withColumn(CATEGORY, _pick(_CATEGORIES, (noun / 2).cast("int")))
        .withColumn("pattern", pattern)
        .withColumn("taste", taste)
        .withColumn("base_price", price)
        .withColumn(UNIT_COST, F.round(F.col("base_price") * (0.40 + 0.30 * _u(seed, "cost", rank)), 2))
        .withColumn("trend", F.round((_u(seed, "trend", rank) * 2 - 1) * _TREND, 3))
        .withColumn("promo_eligible", (rank < lay["n_smooth"]) & (_u(seed, "promo", rank) < _PROMO_SHARE))
        .withColumn("base_rate", F.round(lines_per_day * qty, 4))
        .withColumn(LEAD_TIME_DAYS, (3 + F.floor(_u(seed, "lead", rank) * 25)).cast("int"))
        .withColumn(LEAD_TIME_STD_DAYS,
                    F.round(F.col(LEAD_TIME_DAYS) * (0.1 + 0.3 * _u(seed, "lead_std", rank)), 1))
        .withColumn(PACK_SIZE, _pick((1, 6, 12, 24), F.floor(_u(seed, "pack", rank) * 4)).cast("int"))
        .withColumn(MIN_ORDER_QTY,
                    (F.col(PACK_SIZE) * (1 + F.floor(_u(seed, "moq", rank) * 4))).cast("int"))
    )


# --- customers and orders -----------------------------------------------------------------------

def _customers(spark: SparkSession, spec: SampleSpec, num_partitions: int | None = None) -> DataFrame:
    """One row per customer: group, taste, country, active window and planned order count."""
    seed, n = spec.seed, spec.n_days
    cid = F.col("cidx")
    width = max(6, len(str(spec.n_customers)))

    u_group = _u(seed, "group", cid)
    group = F.lit(len(GROUPS) - 1)
    cum = 0.0
    cuts = []
    for gi, g in enumerate(GROUPS[:-1]):
        cum += g.share
        cuts.append((gi, cum))
    for gi, cut in reversed(cuts):
        group = F.when(u_group < cut, F.lit(gi)).otherwise(group)

    country = F.lit(_COUNTRIES[-1][0])
    cum = 0.0
    conds = []
    for name, share in _COUNTRIES[:-1]:
        cum += share
        conds.append((name, cum))
    u_country = _u(seed, "country", cid)
    for name, cut in reversed(conds):
        country = F.when(u_country < cut, F.lit(name)).otherwise(country)

    g = F.col("group")
    join_day = F.floor(_u(seed, "join", cid) * _START_SPREAD * n)
    gap_lo, gap_hi = _AT_RISK_GAP
    at_risk_stop = (n - 1) - F.floor(n * (gap_lo + (gap_hi - gap_lo) * _u(seed, "stop", cid)))
    new_w = _new_window(spec)
    new_start = (n - new_w) + F.floor(_u(seed, "new_start", cid) * new_w)
    first_day = F.when(g == _NEW, new_start).otherwise(join_day).cast("int")
    last_day = F.when(g == _AT_RISK, at_risk_stop).otherwise(F.lit(n - 1)).cast("int")

    jitter = F.exp((_u(seed, "rate", cid) * 2 - 1) * _RATE_JITTER)
    expected = _pick([grp.rate for grp in GROUPS], g) * jitter * (F.col("last_day") - F.col("first_day") + 1)
    n_orders = F.when(g == _NEW, 1 + F.floor(_u(seed, "n_new", cid) * _NEW_MAX_ORDERS)).otherwise(
        F.floor(expected + _u(seed, "n_orders", cid)))

    rng = (spark.range(0, spec.n_customers, 1, num_partitions) if num_partitions
           else spark.range(0, spec.n_customers))
    return (
        rng.withColumnRenamed("id", "cidx")
        .withColumn(CUSTOMER_ID, F.concat(F.lit("C"), F.lpad((cid + 1).cast("string"), width, "0")))
        .withColumn("group", group.cast("int"))
        .withColumn("group_name", _pick([grp.name for grp in GROUPS], g))
        .withColumn("taste", F.floor(_u(seed, "taste", cid) * spec.n_tastes).cast("int"))
        .withColumn(COUNTRY, country)
        .withColumn("first_day", first_day)
        .withColumn("last_day", last_day)
        .withColumn("n_orders", n_orders.cast("int"))
        .withColumn("mu_lines", _pick([grp.lines for grp in GROUPS], g))
        .withColumn("mu_qty", _pick([grp.qty for grp in GROUPS], g))
    )


def _order_day(spec: SampleSpec, okey: Column, k: Column, n_orders: Column,
               first: Column, last: Column) -> Column:
    """The day of a customer's k-th of n_orders orders, in [first, last].

    Orders are stratified in month-weighted time over the customer's active window: order k
    falls at a random point of the k-th of n_orders equal slices. Customers therefore buy fairly
    regularly (the recency of an active customer is at most about one inter-order gap), and
    busier months (the Q4 peak) get proportionally more orders. The weekday effect is then a
    rejection step within the surrounding week: a day drawn uniformly from the 7 days around
    the stratified day is kept with its weekday weight; after _WEEKDAY_ATTEMPTS rejections
    (probability ~1e-4) the stratified day itself is kept."""
    seed = spec.seed
    t0, t1 = _weighted_time(spec, first), _weighted_time(spec, last + 1)
    x = t0 + (k + _u(seed, "day", okey)) / n_orders * (t1 - t0)
    base = F.least(F.greatest(F.floor(_day_at(spec, x)).cast("int"), first), last)
    day = base
    for j in reversed(range(_WEEKDAY_ATTEMPTS)):
        cand = F.least(F.greatest(
            base + F.floor(_u(seed, "weekday", okey, F.lit(j)) * 7).cast("int") - 3, first), last)
        accept = _u(seed, "weekday_accept", okey, F.lit(j)) < _weekday_weight(spec, cand)
        day = F.when(accept, cand).otherwise(day)
    return day


def _sku_rank(spec: SampleSpec, okey: Column, i: Column, taste: Column) -> Column:
    """The SKU rank of line i of an order: taste block (Zipf-like), global popularity, or an
    intermittent slow mover."""
    lay = _layout(spec)
    n_s, n_i, t, seed = lay["n_smooth"], lay["n_int"], spec.n_tastes, spec.seed
    u_rank = _u(seed, "rank", okey, i)
    in_taste = _u(seed, "in_taste", okey, i) < _TASTE_SHARE
    nb = _block_size(n_s, taste, t)
    r_taste = taste + F.least(F.floor(nb * F.pow(u_rank, _ZIPF_TASTE)), nb - 1) * t
    r_global = F.least(F.floor(F.lit(n_s) * F.pow(u_rank, _ZIPF_GLOBAL)), F.lit(n_s - 1))
    smooth = F.when(in_taste, r_taste).otherwise(r_global)
    p_int = _p_intermittent(spec)
    if p_int == 0.0:
        return smooth.cast("int")
    nbi = _block_size(n_i, taste, t)
    r_int_taste = n_s + taste + F.floor(nbi * u_rank) * t
    r_int_global = n_s + F.floor(F.lit(n_i) * u_rank)
    inter = F.when(in_taste & (nbi > 0), r_int_taste).otherwise(r_int_global)
    return F.when(_u(seed, "intermittent", okey, i) < p_int, inter).otherwise(smooth).cast("int")


def _default_partitions(spec: SampleSpec) -> int:
    return max(2, int(math.ceil(expected_counts(spec)["lines"] / 1_000_000)))


def order_lines(spark: SparkSession, spec: SampleSpec, num_partitions: int | None = None) -> DataFrame:
    """The order lines (sales and returns) of the sample, lazily, with :data:`ORDERS_SCHEMA`.

    ``num_partitions`` only changes how the work is split, never the rows.
    Raises ValueError/TypeError for an invalid spec."""
    _validate(spec)
    seed, n = spec.seed, spec.n_days
    stride = _order_key_stride(spec)
    start_epoch = _start_epoch(spec)
    end_epoch = start_epoch + n * 86400
    skus = F.broadcast(_skus(spark, spec).select(
        "rank", SKU, PRODUCT_NAME, CATEGORY, "base_price", "trend", "promo_eligible", "pattern"))
    pairs = _pairs(spec)

    customers = _customers(spark, spec, num_partitions or _default_partitions(spec))
    orders = (
        customers.where(F.col("n_orders") > 0)
        .select("cidx", CUSTOMER_ID, "taste", COUNTRY, "first_day", "last_day", "mu_lines", "mu_qty",
                "n_orders",
                F.explode(F.sequence(F.lit(0), F.col("n_orders") - 1)).alias("k"))
        .withColumn("okey", F.col("cidx") * stride + F.col("k"))
        .withColumn("day", _order_day(spec, F.col("okey"), F.col("k"), F.col("n_orders"),
                                      F.col("first_day"), F.col("last_day")))
        .withColumn("sec", (8 * 3600 + F.floor(_u(seed, "time", F.col("okey")) * 13 * 3600)).cast("long"))
        .withColumn(CUSTOMER_ID, F.when(_u(seed, "guest", F.col("okey")) < spec.guest_share,
                                        F.lit(None).cast("string")).otherwise(F.col(CUSTOMER_ID)))
        .withColumn("n_lines", _geometric(_u(seed, "n_lines", F.col("okey")), F.col("mu_lines")))
    )
    base = F.array_distinct(F.transform(
        F.sequence(F.lit(0), F.col("n_lines") - 1),
        lambda i: _sku_rank(spec, F.col("okey"), i, F.col("taste"))))
    if pairs:
        pair_arr = F.array(*[F.struct(F.lit(i).alias("i"), F.lit(a).alias("a"), F.lit(b).alias("b"),
                                      F.lit(c).alias("c")) for i, a, b, c in pairs])
        companions = F.transform(
            F.filter(pair_arr, lambda p: F.array_contains(F.col("base"), p["a"])
                     & (_u(seed, "pair", F.col("okey"), p["i"]) < p["c"])),
            lambda p: p["b"])
        ranks = F.concat(F.col("base"), companions)
    else:
        ranks = F.col("base")

    lines = (
        orders.withColumn("base", base)
        .select("okey", CUSTOMER_ID, COUNTRY, "day", "sec", "mu_qty",
                F.posexplode(ranks).alias("pos", "rank"))
        .join(skus, "rank")
    )
    promo = _in_promo(spec, F.col("rank"), F.col("day"), F.col("promo_eligible"))
    mu = (F.col("mu_qty") * (1 + F.col("trend") * F.col("day") / max(1, n - 1))
          * F.when(promo, _PROMO_LIFT).otherwise(1.0)
          * F.when(F.col("pattern") == "intermittent", _INTERMITTENT_QTY).otherwise(1.0))
    delay = (_RETURN_DELAY_DAYS[0] + F.floor(
        _u(seed, "return_delay", F.col("okey")) * (_RETURN_DELAY_DAYS[1] - _RETURN_DELAY_DAYS[0] + 1)))
    returned = _u(seed, "return", F.col("okey"), F.col("pos")) < spec.return_rate
    lines = (
        lines
        .withColumn("qty", _geometric(_u(seed, "qty", F.col("okey"), F.col("pos")), mu))
        .withColumn("price", F.when(promo, F.round(F.col("base_price") * (1 - _PROMO_DISCOUNT), 2))
                    .otherwise(F.col("base_price")))
        .withColumn("ts", start_epoch + F.col("day") * 86400 + F.col("sec"))
        .withColumn("ret_ts", F.col("ts") + delay * 86400
                    + F.floor(_u(seed, "return_time", F.col("okey")) * 7200).cast("long"))
        .withColumn("is_return", F.explode(
            F.when(returned & (F.col("ret_ts") < end_epoch), F.array(F.lit(False), F.lit(True)))
            .otherwise(F.array(F.lit(False)))))
    )
    order_id = (F.col("okey") + 1_000_000).cast("string")
    ret = F.col("is_return")
    out = lines.select(
        F.when(ret, F.concat(F.lit("C"), order_id)).otherwise(order_id).alias(ORDER_ID),
        F.col(CUSTOMER_ID),
        F.col(SKU),
        F.when(ret, -F.col("qty")).otherwise(F.col("qty")).cast("int").alias(QUANTITY),
        F.col("price").cast("double").alias(UNIT_PRICE),
        F.timestamp_seconds(F.when(ret, F.col("ret_ts")).otherwise(F.col("ts"))).alias(ORDERED_AT),
        F.col(PRODUCT_NAME),
        F.col(CATEGORY),
        F.col(COUNTRY),
    )
    return _with_schema(out, ORDERS_SCHEMA)


def _with_schema(df: DataFrame, schema: T.StructType) -> DataFrame:
    """The declared columns, in order, cast to the declared types. Nullability in the declared
    schemas documents which columns may be null (only customer_id, for guests); Spark's own
    nullability flags on the lazy frame are an implementation detail (Parquet reads everything
    back as nullable)."""
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
