"""Deterministic sample data with planted structure: order lines, a catalogue, an inventory
snapshot, and the truth that later jobs must recover.

Everything is built in Spark from built-in functions, so the generator scales to tens of millions
of order lines without collecting anything that grows with the data. Randomness comes from hashes
of (seed, salt, keys) instead of ``F.rand()``: the same :class:`SampleSpec` gives the same rows
whatever the partitioning, the number of cores or the order in which tasks run.

Planted structure (see the ``truth/`` tables written by :func:`generate`):

* **Customer groups** -- champions, loyal, at_risk and new differ by about an order of magnitude
  in recency, frequency and/or spend, so KMeans on log-standardised RFM recovers them.
* **Product pairs** -- ``n_pairs`` "companion" SKUs are only ever sold through their pair: an
  order that contains the antecedent gets one line of the companion with probability
  ``confidence``, so P(companion in basket | antecedent in basket) = confidence in expectation.
* **SKU demand** -- per-SKU linear trend on quantity, fewer orders at weekends, a Q4 peak,
  two-week promotions (quantity x1.8, price -20%) on eligible SKUs, and intermittent slow movers.
* **Latent tastes** -- non-companion SKUs fall into ``n_tastes`` blocks; a customer takes about
  95% of its lines from its own block (Zipf-like within it), the rest from global popularity.
  Sharp on purpose: with 75% the lines outside the block were most of what a customer bought
  *new* (its block's few SKUs are soon all bought), so recommending the customer's taste beat
  best-sellers by only 1.8x once already-bought SKUs are excluded. A SKU's list price depends on
  its position within its block, not on the block, so every taste spends alike and tastes do not
  leak into the RFM segments.

Time: ``ordered_at`` is built from epoch seconds with day boundaries in UTC, so the stored instants
do not depend on the session time zone. Calendar effects (weekday, month) are computed for UTC
days; a session in UTC (as the tests use) sees them on the intended local days.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core.columns import (
    AS_OF,
    CATALOGUE_COLUMNS,
    CATEGORY,
    COUNTRY,
    CUSTOMER_ID,
    INVENTORY_COLUMNS,
    LEAD_TIME_DAYS,
    LEAD_TIME_STD_DAYS,
    MIN_ORDER_QTY,
    ON_HAND,
    ON_ORDER,
    ORDER_COLUMNS,
    ORDER_ID,
    ORDERED_AT,
    PACK_SIZE,
    PRODUCT_NAME,
    QUANTITY,
    SKU,
    UNIT_COST,
    UNIT_PRICE,
)

__all__ = [
    "SampleSpec",
    "GROUPS",
    "ORDERS_SCHEMA",
    "generate",
    "order_lines",
    "catalogue",
    "inventory",
    "truth_tables",
    "expected_counts",
]


@dataclass(frozen=True)
class SampleSpec:
    """What to generate. The defaults give roughly 200k order lines in a few seconds."""

    n_customers: int = 2000
    n_skus: int = 200
    n_days: int = 730
    start_date: str = "2023-01-01"
    seed: int = 42
    guest_share: float = 0.10      # share of orders without a customer id (guest checkouts)
    return_rate: float = 0.02      # share of sale lines later returned
    n_pairs: int = 10              # planted "bought together" product pairs
    n_tastes: int = 5              # latent taste groups


# --- planted parameters ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Group:
    name: str
    share: float        # share of customers
    rate: float         # orders per active day (champions, loyal, at_risk)
    lines: float        # mean distinct lines per order (before companions)
    qty: float          # mean quantity per line


GROUPS = (
    _Group("champions", 0.12, 1 / 5, 6.0, 5.0),
    _Group("loyal", 0.33, 1 / 25, 2.5, 2.0),
    _Group("at_risk", 0.30, 1 / 12, 2.5, 2.0),
    _Group("new", 0.25, 0.0, 1.5, 1.5),
)
_CHAMPIONS, _LOYAL, _AT_RISK, _NEW = range(4)
_NEW_MAX_ORDERS = 3                 # new customers place 1..3 orders
_START_SPREAD = 0.15                # champions/loyal/at_risk join in the first 15% of the period
_AT_RISK_GAP = (0.25, 0.50)         # at_risk stop 25-50% of the period before the end
_NEW_WINDOW_DAYS = 60               # ... for a 730-day period; scaled with n_days
_RATE_JITTER = 0.25                 # per-customer rate multiplier exp(U(-j, j))

_TASTE_SHARE = 0.95                 # share of lines from the customer's taste block
_ZIPF_TASTE = 1.6                   # within-block skew: j = floor(n * u ** a)
_ZIPF_GLOBAL = 2.0                  # global popularity skew
_INTERMITTENT_SHARE = 0.20          # least popular share of non-companion SKUs
_INTERMITTENT_LINES_PER_DAY = 0.12  # target lines/day of one intermittent SKU
_INTERMITTENT_QTY = 2.5             # intermittent demand is lumpy: bigger quantities
_CONFIDENCE = (0.3, 0.7)            # planted pair confidences drawn from this range

_TREND = 0.30                       # per-SKU quantity trend over the period in [-0.3, 0.3]
_PROMO_SHARE = 0.30                 # share of smooth SKUs that are promo-eligible
_PROMO_DAYS = 14
_PROMO_LIFT = 1.8                   # quantity multiplier inside a promotion
_PROMO_DISCOUNT = 0.20              # price cut inside a promotion

_WEEKDAY_FACTOR = (1.0, 1.0, 1.0, 1.0, 1.0, 0.7, 0.55)  # Monday .. Sunday
_MONTH_FACTOR = {10: 1.2, 11: 1.5, 12: 1.6}             # Q4 peak; other months 1.0
_WEEKDAY_ATTEMPTS = 4               # rejection-sampling tries for an order's weekday

_RETURN_DELAY_DAYS = (1, 10)
_COUNTRIES = (("United Kingdom", 0.60), ("Germany", 0.10), ("France", 0.10),
              ("Netherlands", 0.05), ("Spain", 0.05), ("Ireland", 0.05), ("Sweden", 0.05))
_COLOURS = ("WHITE", "RED", "BLUE", "GREEN", "PINK", "BLACK", "IVORY", "GOLD", "SILVER",
            "VINTAGE", "PAISLEY", "SPOTTY")
# Two nouns per category, in category order.
_CATEGORIES = ("HOME DECOR", "KITCHEN", "STATIONERY", "TOYS", "GARDEN", "LIGHTING", "BAGS",
               "PARTY")
_NOUNS = ("HANGING HEART", "PHOTO FRAME", "TEA CUP", "CAKE STAND", "NOTEBOOK", "GIFT WRAP",
          "SPINNING TOP", "JIGSAW", "PLANT POT", "BIRD FEEDER", "T-LIGHT HOLDER", "LANTERN",
          "LUNCH BAG", "TOTE BAG", "BUNTING", "PAPER CUPS")

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


# --- validation and derived layout ---------------------------------------------------------------

def _validate(spec: SampleSpec) -> None:
    if not isinstance(spec, SampleSpec):
        raise TypeError(f"spec must be a SampleSpec, got {type(spec).__name__}")
    try:
        date.fromisoformat(spec.start_date)
    except ValueError as exc:
        raise ValueError(f"start_date must be YYYY-MM-DD, got {spec.start_date!r}") from exc
    problems = []
    if spec.n_customers < 1:
        problems.append(f"n_customers={spec.n_customers} (need >= 1)")
    if spec.n_days < 28:
        problems.append(f"n_days={spec.n_days} (need >= 28)")
    if spec.n_tastes < 1:
        problems.append(f"n_tastes={spec.n_tastes} (need >= 1)")
    if spec.n_pairs < 0:
        problems.append(f"n_pairs={spec.n_pairs} (need >= 0)")
    if not 0.0 <= spec.guest_share < 1.0:
        problems.append(f"guest_share={spec.guest_share} (need 0 <= x < 1)")
    if not 0.0 <= spec.return_rate < 1.0:
        problems.append(f"return_rate={spec.return_rate} (need 0 <= x < 1)")
    if not problems:
        n_smooth = _layout(spec)["n_smooth"]
        if n_smooth < max(spec.n_tastes, spec.n_pairs, 1):
            problems.append(
                f"n_skus={spec.n_skus} leaves {n_smooth} regular SKUs after {spec.n_pairs} "
                f"companions and the intermittent slow movers; need at least "
                f"max(n_tastes={spec.n_tastes}, n_pairs={spec.n_pairs})")
    if problems:
        raise ValueError("invalid SampleSpec: " + "; ".join(problems))


def _layout(spec: SampleSpec) -> dict:
    """SKU ranks: [0, n_smooth) regular SKUs by global popularity, then the intermittent slow
    movers, then the companions (rank n_base + i is the companion of pair i)."""
    n_base = spec.n_skus - spec.n_pairs
    n_int = int(round(_INTERMITTENT_SHARE * n_base))
    return {"n_base": n_base, "n_int": n_int, "n_smooth": n_base - n_int}


def _start_epoch(spec: SampleSpec) -> int:
    d = date.fromisoformat(spec.start_date)
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp())


def _new_window(spec: SampleSpec) -> int:
    return max(7, int(round(spec.n_days * _NEW_WINDOW_DAYS / 730)))


def _max_orders(spec: SampleSpec) -> int:
    top = max(g.rate for g in GROUPS) * math.exp(_RATE_JITTER) * spec.n_days
    return max(_NEW_MAX_ORDERS, int(math.ceil(top)) + 1)


def _order_key_stride(spec: SampleSpec) -> int:
    return 10 ** len(str(_max_orders(spec)))


def _pairs(spec: SampleSpec) -> list[tuple[int, int, int, float]]:
    """(pair index, antecedent rank, companion rank, confidence). Antecedents are the most
    popular regular SKUs, so the planted confidences have plenty of support."""
    lay = _layout(spec)
    rng = np.random.default_rng([spec.seed, 20231])
    conf = rng.uniform(*_CONFIDENCE, size=spec.n_pairs)
    return [(i, i, lay["n_base"] + i, round(float(conf[i]), 3)) for i in range(spec.n_pairs)]


def expected_counts(spec: SampleSpec) -> dict:
    """Analytic expectations (orders, lines, lines per day, mean quantity) of the regular lines,
    before companions, guests and returns. Used to size intermittent demand and the truth
    base rates; approximate (ignores duplicate SKUs in a basket and calendar thinning)."""
    n = spec.n_days
    jitter = (math.exp(_RATE_JITTER) - math.exp(-_RATE_JITTER)) / (2 * _RATE_JITTER)
    active = {
        _CHAMPIONS: n * (1 - _START_SPREAD / 2),
        _LOYAL: n * (1 - _START_SPREAD / 2),
        _AT_RISK: n * (1 - sum(_AT_RISK_GAP) / 2 - _START_SPREAD / 2),
    }
    orders = lines = units = 0.0
    for gi, g in enumerate(GROUPS):
        per_customer = (_NEW_MAX_ORDERS + 1) / 2 if gi == _NEW else g.rate * jitter * active[gi]
        o = spec.n_customers * g.share * per_customer
        orders += o
        lines += o * g.lines
        units += o * g.lines * g.qty
    return {"orders": orders, "lines": lines, "lines_per_day": lines / n,
            "orders_per_day": orders / n, "mean_qty": units / lines if lines else 0.0,
            "lines_per_order": lines / orders if orders else 0.0}


def _p_intermittent(spec: SampleSpec) -> float:
    n_int = _layout(spec)["n_int"]
    if n_int == 0:
        return 0.0
    return min(0.05, _INTERMITTENT_LINES_PER_DAY * n_int / expected_counts(spec)["lines_per_day"])


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


# --- catalogue, inventory, truth -------------------------------------------------------------------

CATALOGUE_SCHEMA = T.StructType([
    T.StructField(SKU, T.StringType(), False),
    T.StructField(PRODUCT_NAME, T.StringType(), False),
    T.StructField(CATEGORY, T.StringType(), False),
    T.StructField(UNIT_PRICE, T.DoubleType(), False),
    T.StructField(UNIT_COST, T.DoubleType(), False),
    T.StructField(LEAD_TIME_DAYS, T.IntegerType(), False),
    T.StructField(LEAD_TIME_STD_DAYS, T.DoubleType(), False),
    T.StructField(PACK_SIZE, T.IntegerType(), False),
    T.StructField(MIN_ORDER_QTY, T.IntegerType(), False),
])

INVENTORY_SCHEMA = T.StructType([
    T.StructField(SKU, T.StringType(), False),
    T.StructField(ON_HAND, T.IntegerType(), False),
    T.StructField(ON_ORDER, T.IntegerType(), False),
    T.StructField(AS_OF, T.DateType(), False),
])


def catalogue(spark: SparkSession, spec: SampleSpec) -> DataFrame:
    """The product catalogue: one row per SKU with list price, cost, lead time and pack sizes."""
    _validate(spec)
    df = _skus(spark, spec).withColumn(UNIT_PRICE, F.col("base_price"))
    return _with_schema(df, CATALOGUE_SCHEMA)


def inventory(spark: SparkSession, spec: SampleSpec) -> DataFrame:
    """Inventory snapshot as of the last day: about 2-8 weeks of cover, a few SKUs out of stock
    (always at least the least popular regular SKU), about 30% with stock on order."""
    _validate(spec)
    seed = spec.seed
    rank = F.col("rank")
    last = date.fromisoformat(spec.start_date) + timedelta(days=spec.n_days - 1)
    out_of_stock = (_u(seed, "oos", rank) < 0.04) | (rank == _layout(spec)["n_smooth"] - 1)
    cover = 14 + 42 * _u(seed, "cover", rank)
    on_hand = F.when(out_of_stock, F.lit(0)).otherwise(F.ceil(F.col("base_rate") * cover))
    on_order = F.when(_u(seed, "on_order", rank) < 0.30,
                      F.col(PACK_SIZE) * F.ceil(F.col("base_rate") * 14 / F.col(PACK_SIZE) + 0.5)
                      ).otherwise(F.lit(0))
    df = (_skus(spark, spec)
          .withColumn(ON_HAND, on_hand.cast("int"))
          .withColumn(ON_ORDER, on_order.cast("int"))
          .withColumn(AS_OF, F.lit(last)))
    return _with_schema(df, INVENTORY_SCHEMA)


def truth_tables(spark: SparkSession, spec: SampleSpec) -> dict[str, DataFrame]:
    """The planted truth, lazily: ``customers`` (customer_id, group, taste), ``pairs``
    (antecedent, consequent, confidence), ``skus`` (sku, taste, pattern, base_rate, trend,
    promo_eligible) and ``promotions`` (sku, start_date, end_date, lift).

    ``base_rate`` is the analytic expected units per day averaged over the period, before trend,
    calendar and promotions (approximate). ``trend`` is the relative change of the mean quantity
    from the first to the last day. Promotion dates are inclusive."""
    _validate(spec)
    skus = _skus(spark, spec)
    customers = _customers(spark, spec).select(
        CUSTOMER_ID, F.col("group_name").alias("group"), "taste")
    pair_rows = spark.createDataFrame(
        [(a, b, float(c)) for _, a, b, c in _pairs(spec)],
        "a_rank int, b_rank int, confidence double")
    sku_of = skus.select("rank", SKU)
    pairs = (pair_rows
             .join(sku_of.withColumnRenamed("rank", "a_rank").withColumnRenamed(SKU, "antecedent"), "a_rank")
             .join(sku_of.withColumnRenamed("rank", "b_rank").withColumnRenamed(SKU, "consequent"), "b_rank")
             .select("antecedent", "consequent", "confidence"))
    n_windows, length = _promo_windows(spec)
    start = date.fromisoformat(spec.start_date)
    first = _promo_start(spec, F.col("rank"), F.col("k"))
    promotions = (skus.where("promo_eligible")
                  .crossJoin(spark.range(n_windows).select(F.col("id").cast("int").alias("k")))
                  .select(SKU,
                          F.date_add(F.lit(start), first).alias("start_date"),
                          F.date_add(F.lit(start), first + (length - 1)).alias("end_date"),
                          F.lit(_PROMO_LIFT).alias("lift")))
    sku_truth = skus.select(SKU, "taste", "pattern", "base_rate", "trend", "promo_eligible")
    return {"customers": customers, "pairs": pairs, "skus": sku_truth, "promotions": promotions}


def _truth_json(spark: SparkSession, spec: SampleSpec) -> dict:
    counts = {r["group_name"]: r["n"] for r in
              _customers(spark, spec).groupBy("group_name").agg(F.count("*").alias("n")).collect()}
    return {
        "spec": asdict(spec),
        "groups": [g.name for g in GROUPS],
        "group_counts": {g.name: int(counts.get(g.name, 0)) for g in GROUPS},
        "group_parameters": {g.name: {"customer_share": g.share, "orders_per_day": g.rate,
                                      "lines_per_order": g.lines, "quantity_mean": g.qty}
                             for g in GROUPS},
        "taste_share": _TASTE_SHARE,
        "intermittent_line_probability": _p_intermittent(spec),
        "promo_lift": _PROMO_LIFT,
        "promo_discount": _PROMO_DISCOUNT,
        "weekday_factor_mon_to_sun": list(_WEEKDAY_FACTOR),
        "month_factor": {str(k): v for k, v in _MONTH_FACTOR.items()},
        "expected": expected_counts(spec),
        "time_zone": "UTC",
    }


def generate(spark: SparkSession, spec: SampleSpec, out_dir: str, fmt: str = "parquet") -> dict:
    """Write the sample under ``out_dir`` (a local path): ``orders/`` (in ``fmt``, "parquet" or
    "csv" with a header), ``catalogue/``, ``inventory/`` and ``truth/{customers,pairs,skus,
    promotions}`` as Parquet, and ``truth/truth.json``. Existing output is replaced.

    Returns ``{"rows": {...}, "paths": {...}, "seconds": float}``.
    Raises ValueError for an unknown ``fmt`` or an invalid spec."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    _validate(spec)
    t0 = time.perf_counter()
    paths = {name: os.path.join(out_dir, name) for name in ("orders", "catalogue", "inventory")}
    truth_dir = os.path.join(out_dir, "truth")

    writer = order_lines(spark, spec).write.mode("overwrite")
    if fmt == "csv":
        writer.option("header", True).csv(paths["orders"])
    else:
        writer.parquet(paths["orders"])
    catalogue(spark, spec).coalesce(1).write.mode("overwrite").parquet(paths["catalogue"])
    inventory(spark, spec).coalesce(1).write.mode("overwrite").parquet(paths["inventory"])
    for name, df in truth_tables(spark, spec).items():
        paths[f"truth/{name}"] = os.path.join(truth_dir, name)
        df.coalesce(1).write.mode("overwrite").parquet(paths[f"truth/{name}"])

    rows = {}
    for name, path in paths.items():
        reader = spark.read.option("header", True) if (name == "orders" and fmt == "csv") else spark.read
        rows[name] = (reader.csv(path) if (name == "orders" and fmt == "csv") else reader.parquet(path)).count()

    info = _truth_json(spark, spec)
    info["rows"] = rows
    os.makedirs(truth_dir, exist_ok=True)
    paths["truth.json"] = os.path.join(truth_dir, "truth.json")
    with open(paths["truth.json"], "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2, sort_keys=True)
    return {"rows": rows, "paths": paths, "seconds": round(time.perf_counter() - t0, 2),
            "format": fmt}


# --- the `sample` job --------------------------------------------------------------------------

def spec_from_conf(conf) -> SampleSpec:
    """The SampleSpec conf's ``sample`` section describes."""
    fields = SampleSpec.__dataclass_fields__
    return SampleSpec(**{k: v for k, v in conf["sample"].items() if k in fields})


def run(spark: SparkSession, conf) -> dict:
    """Generate sample raw files into ``sample.out_dir`` (the `sample` job). The `sample` source
    in conf/base.yaml reads them from data/sample/: move both together."""
    from shopsense.core.config import resolve_path
    from shopsense.core.runs import JobRun

    spec = spec_from_conf(conf)
    out_dir = resolve_path(conf["sample"]["out_dir"])
    with JobRun(spark, conf, "sample", {**asdict(spec), "out_dir": out_dir}) as job:
        result = generate(spark, spec, out_dir)
        job.rows_out = result["rows"]["orders"]
        for name, n in result["rows"].items():
            job.metric(f"rows_{name.replace('/', '_')}", n)
        job.metric("seconds", result["seconds"], key=True)
        job.note(f"sample raw files written to {out_dir}")
    return job.summary()
