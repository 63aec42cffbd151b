"""The sample's customer events: sessions of views, add-to-cart and purchases with planted step
probabilities, as a lazy Spark frame (:func:`events`) and their truth (:func:`events_truth`).

Each customer with planned orders gets about ``_SESSIONS_PER_ORDER`` sessions per planned order,
on days drawn uniformly over the customer's active window (the same window its orders fall in).
A session views one or more SKUs (geometric, mean ``_VIEWS_MEAN``, chosen like order lines:
mostly from the customer's taste block), then adds the last viewed SKU to the cart with
probability P(add_to_cart | view) of the customer's group, then buys it with probability
P(purchase | add_to_cart) of the group (:data:`STEP_PROBABILITIES`). Events of a session are
seconds to minutes apart, in the order view, ..., view, add_to_cart, purchase.

The events are a clickstream of their own: a purchase event is the web shop's record of a
checkout and is **not** tied to an order line (it has no order id and the order lines do not
change with it). What events and orders share is the customer: the same made-up ids, so after
ingest (same pseudonymisation key) they join on ``customer_id``. Guests leave no events.

Randomness comes from hashes of (seed, an ``ev_`` salt, the event key) with keys that no order
uses, so adding events changes no order line, catalogue or inventory row.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import columns as C
from shopsense.ingest.sample_orders import _customers, _geometric, _pick, _sku_rank, _skus, _u, _with_schema
from shopsense.ingest.sample_spec import GROUPS, SampleSpec, _start_epoch, _validate

#: Planted step probabilities per customer group: (P(add_to_cart | view), P(purchase | add_to_cart)).
STEP_PROBABILITIES = {
    "champions": (0.45, 0.70),
    "loyal": (0.30, 0.55),
    "at_risk": (0.20, 0.35),
    "new": (0.25, 0.45),
}
_SESSIONS_PER_ORDER = 2.5   # sessions per planned order of the customer
_VIEWS_MEAN = 2.0           # mean views per session (geometric, at least 1) ...
_VIEWS_MAX = 12             # ... capped
_SESSION_START = (8 * 3600, 20 * 3600)  # a session starts between 08:00 and 20:00 UTC

EVENTS_SCHEMA = T.StructType([
    T.StructField(C.SESSION_ID, T.StringType(), False),
    T.StructField(C.CUSTOMER_ID, T.StringType(), False),
    T.StructField(C.SKU, T.StringType(), False),
    T.StructField(C.EVENT_TYPE, T.StringType(), False),
    T.StructField(C.EVENT_AT, T.TimestampType(), False),
])

# Session keys are negative: order keys (cidx * stride + k) are not, so no hash input repeats.
_SESSION_STRIDE = 1_000_000


def _step_probability(step: int) -> Column:
    """P(step | previous step) of each customer's group (``group``: its index in GROUPS)."""
    return _pick([STEP_PROBABILITIES[g.name][step] for g in GROUPS], F.col("group"))


def events(spark: SparkSession, spec: SampleSpec) -> DataFrame:
    """The sample's events, lazily, with :data:`EVENTS_SCHEMA` (see the module docstring).
    Raises ValueError/TypeError for an invalid spec."""
    _validate(spec)
    seed = spec.seed
    skus = F.broadcast(_skus(spark, spec).select("rank", C.SKU))
    skey = F.col("skey")
    n_sessions = F.floor(F.col("n_orders") * _SESSIONS_PER_ORDER + _u(seed, "ev_n", F.col("cidx")))
    sessions = (
        _customers(spark, spec).where(F.col("n_orders") > 0)
        .select("cidx", C.CUSTOMER_ID, "group", "taste", "first_day", "last_day",
                F.explode(F.sequence(F.lit(0), n_sessions.cast("int") - 1)).alias("s"))
        .withColumn("skey", -(F.col("cidx") * _SESSION_STRIDE + F.col("s")) - 1)
        .withColumn("day", F.col("first_day") + F.floor(
            _u(seed, "ev_day", skey) * (F.col("last_day") - F.col("first_day") + 1)))
        .withColumn("start", _start_epoch(spec) + F.col("day") * 86400 + F.floor(
            _SESSION_START[0] + _u(seed, "ev_time", skey) * (_SESSION_START[1] - _SESSION_START[0])))
        .withColumn("n_views", F.least(_geometric(_u(seed, "ev_views", skey), F.lit(_VIEWS_MEAN)),
                                       F.lit(_VIEWS_MAX)))
        .withColumn("carted", _u(seed, "ev_cart", skey) < _step_probability(0))
        .withColumn("bought", F.col("carted") & (_u(seed, "ev_buy", skey) < _step_probability(1)))
    )
    # view i at start + 110 i + 0..100 s (so views are in order); the cart 10..120 s after the last view, the
    # purchase 1..10 minutes after the cart; cart and purchase are of the last viewed SKU
    gap = lambda salt, i, lo, hi: F.floor(lo + _u(seed, salt, skey, i) * (hi - lo))  # noqa: E731
    views = F.transform(F.sequence(F.lit(0), F.col("n_views") - 1), lambda i: F.struct(
        i.alias("i"), F.lit(C.VIEW).alias("type"),
        _sku_rank(spec, skey, i, F.col("taste")).alias("rank"),
        (F.col("start") + i * 110 + gap("ev_gap", i, 0, 100)).alias("at")))
    last_view = F.element_at(F.col("views"), -1)
    cart = F.struct(F.col("n_views").alias("i"), F.lit(C.ADD_TO_CART).alias("type"),
                    last_view["rank"].alias("rank"),
                    (last_view["at"] + gap("ev_gap_cart", F.lit(0), 10, 120)).alias("at"))
    buy = F.struct((F.col("n_views") + 1).alias("i"), F.lit(C.PURCHASE).alias("type"),
                   F.col("cart.rank").alias("rank"),
                   (F.col("cart.at") + gap("ev_gap_buy", F.lit(0), 60, 600)).alias("at"))
    steps = F.concat(F.col("views"),
                     F.when(F.col("carted"), F.array(F.col("cart"))).otherwise(F.array().cast(
                         "array<struct<i:int,type:string,rank:int,at:bigint>>")),
                     F.when(F.col("bought"), F.array(buy)).otherwise(F.array().cast(
                         "array<struct<i:int,type:string,rank:int,at:bigint>>")))
    out = (sessions.withColumn("views", views.cast("array<struct<i:int,type:string,rank:int,at:bigint>>"))
           .withColumn("cart", cart.cast("struct<i:int,type:string,rank:int,at:bigint>"))
           .select(F.concat(F.lit("W"), (-skey).cast("string")).alias(C.SESSION_ID), C.CUSTOMER_ID,
                   F.explode(steps).alias("e"))
           .join(skus, F.col("e.rank") == F.col("rank"))
           .select(C.SESSION_ID, C.CUSTOMER_ID, C.SKU, F.col("e.type").alias(C.EVENT_TYPE),
                   F.timestamp_seconds(F.col("e.at")).alias(C.EVENT_AT)))
    return _with_schema(out, EVENTS_SCHEMA)


def events_truth() -> dict:
    """The planted parameters of the events, for truth.json."""
    return {"step_probabilities": {g: {"add_to_cart_given_view": p[0], "purchase_given_add_to_cart": p[1]}
                                   for g, p in STEP_PROBABILITIES.items()},
            "sessions_per_order": _SESSIONS_PER_ORDER, "views_per_session_mean": _VIEWS_MEAN,
            "views_per_session_max": _VIEWS_MAX, "purchases_tied_to_order_lines": False}
