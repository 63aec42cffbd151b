"""Market-basket association rules: "customers who bought A also bought B".

Baskets are the distinct items (SKUs, or categories) of each sales order in silver.order_lines.
The frequent itemsets are counted level by level (algorithm ``levelwise``, the default: one pass
over the baskets per itemset size, each partition counting its baskets' candidate combinations
with numpy in a ``mapInArrow`` (shopsense.baskets.counting, Apriori pruning) and Spark summing the
partial counts) or mined by MLlib's FPGrowth (algorithm ``fpgrowth``); both give the same
itemsets. shopsense derives the rules from them with Spark joins (single-item consequents, as
MLlib's own rules) so that it can cap the itemset length (MLlib's FPGrowth has no such
parameter), keep exact order counts, and add leverage and conviction. Nothing that grows with
the number of baskets is collected to the driver: the only driver-side values are counts
(baskets, oversized baskets), the frequent items, the keys of the frequent itemsets smaller than
the largest size mined (levelwise, for pruning) and, inside MLlib, the frequent single items
with their counts (bounded by the catalogue and the support threshold).

Metrics, for a rule X -> Y over N mined baskets (n_xy baskets hold X and Y, n_x hold X, n_y
hold Y), computed in double precision in this order:

    support    = n_xy / N                      (MLlib's and mlxtend's definition)
    confidence = n_xy / n_x
    lift       = confidence / (n_y / N)
    leverage   = support - (n_x / N) * (n_y / N)
    conviction = (1 - n_y / N) / (1 - confidence), null when confidence = 1 (it is +inf there)

Writes gold.association_rules and gold.frequently_bought_together. See docs/basket_rules.md.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.baskets import counting as basket_count
from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.core.config import Conf
from shopsense.core.errors import require_columns
from shopsense.core.runs import JobRun
from shopsense.ingest.products import read_products

JOB = "basket_rules"
LEVELS = ("sku", "category")
ALGORITHMS = ("levelwise", "fpgrowth")

ITEM = "item"
ITEMS = "items"
N_ITEMS = "n_items"
FREQ = "freq"
LEVEL = "level"
ANTECEDENT = "antecedent"
CONSEQUENT = "consequent"
ANTECEDENT_NAMES = "antecedent_names"
CONSEQUENT_NAMES = "consequent_names"
SUPPORT = "support"
CONFIDENCE = "confidence"
LIFT = "lift"
LEVERAGE = "leverage"
CONVICTION = "conviction"
N_ORDERS = "n_orders"
ANTECEDENT_ORDERS = "antecedent_orders"
CONSEQUENT_ORDERS = "consequent_orders"
COMPANION_SKU = "companion_sku"
COMPANION_NAME = "companion_name"
RANK = "rank"

_STRINGS = T.ArrayType(T.StringType(), False)
_NAMES = T.ArrayType(T.StringType(), True)

ASSOCIATION_RULES = T.StructType([
    T.StructField(LEVEL, T.StringType(), False),
    T.StructField(ANTECEDENT, _STRINGS, False),
    T.StructField(CONSEQUENT, _STRINGS, False),
    T.StructField(ANTECEDENT_NAMES, _NAMES, True),
    T.StructField(CONSEQUENT_NAMES, _NAMES, True),
    T.StructField(SUPPORT, T.DoubleType(), False),
    T.StructField(CONFIDENCE, T.DoubleType(), False),
    T.StructField(LIFT, T.DoubleType(), False),
    T.StructField(LEVERAGE, T.DoubleType(), False),
    # null where confidence is 1 (conviction is +inf there)
    T.StructField(CONVICTION, T.DoubleType(), True),
    T.StructField(N_ORDERS, T.LongType(), False),
    T.StructField(ANTECEDENT_ORDERS, T.LongType(), False),
    T.StructField(CONSEQUENT_ORDERS, T.LongType(), False),
    *tables.RUN_COLUMNS,
])

FREQUENTLY_BOUGHT_TOGETHER = T.StructType([
    T.StructField(LEVEL, T.StringType(), False),
    # at level "category" the sku columns hold categories and the names repeat them
    T.StructField(C.SKU, T.StringType(), False),
    T.StructField(C.PRODUCT_NAME, T.StringType(), True),
    T.StructField(RANK, T.IntegerType(), False),
    T.StructField(COMPANION_SKU, T.StringType(), False),
    T.StructField(COMPANION_NAME, T.StringType(), True),
    T.StructField(CONFIDENCE, T.DoubleType(), False),
    T.StructField(LIFT, T.DoubleType(), False),
    T.StructField(SUPPORT, T.DoubleType(), False),
    T.StructField(N_ORDERS, T.LongType(), False),
    *tables.RUN_COLUMNS,
])

class BasketRulesError(ValueError):
    """Invalid basket-rules parameters or input: the message names what is wrong."""


@dataclass(frozen=True)
class RuleParams:
    """The job's parameters (conf section ``basket_rules``)."""

    level: str = "sku"
    algorithm: str = "levelwise"
    exclude_skus: tuple[str, ...] = ()
    max_basket_size: int = 100
    min_support: float = 0.01
    min_support_count: int | None = None
    min_confidence: float = 0.2
    max_itemset_length: int = 3
    num_partitions: int | None = None
    fbt_top_n: int = 10
    fbt_min_confidence: float = 0.1
    fbt_min_lift: float = 1.0

    @classmethod
    def from_conf(cls, conf: Conf) -> RuleParams:
        """The parameters of conf's (validated) ``basket_rules`` section."""
        s = conf.basket_rules
        fbt = s.frequently_bought_together
        return cls(level=s.level, algorithm=s.algorithm, exclude_skus=tuple(s.exclude_skus),
                   max_basket_size=s.max_basket_size, min_support=s.min_support,
                   min_support_count=s.min_support_count, min_confidence=s.min_confidence,
                   max_itemset_length=s.max_itemset_length, num_partitions=s.num_partitions,
                   fbt_top_n=fbt.top_n, fbt_min_confidence=fbt.min_confidence,
                   fbt_min_lift=fbt.min_lift)


# --- baskets -----------------------------------------------------------------------------------

def filter_basket_lines(lines: DataFrame, exclude_skus: tuple[str, ...] | list[str] = ()) -> DataFrame:
    """The order lines that make baskets: sales (no returns or cancellations) of products
    (``is_product``), without the SKUs in ``exclude_skus``. Guest orders count."""
    require_columns(lines, [C.ORDER_ID, C.SKU, C.LINE_TYPE, C.IS_PRODUCT, C.QUANTITY], "order lines",
                    BasketRulesError)
    keep = ((F.col(C.LINE_TYPE) == C.LINE_SALE) & F.col(C.IS_PRODUCT)
            & (F.col(C.QUANTITY) > 0) & F.col(C.SKU).isNotNull())
    if exclude_skus:
        keep = keep & ~F.col(C.SKU).isin(list(exclude_skus))
    return lines.filter(keep)


def with_item(lines: DataFrame, level: str = "sku") -> DataFrame:
    """Add the ``item`` column a basket is made of: the SKU, or its category at level
    ``category`` (lines without a category are left out there)."""
    if level == "sku":
        return lines.withColumn(ITEM, F.col(C.SKU))
    if level == "category":
        require_columns(lines, [C.CATEGORY], "order lines", BasketRulesError)
        return lines.withColumn(ITEM, F.col(C.CATEGORY)).filter(F.col(ITEM).isNotNull())
    raise BasketRulesError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")


def baskets(lines: DataFrame) -> DataFrame:
    """One row per order: ``order_id``, ``items`` (the distinct items, sorted) and ``n_items``."""
    require_columns(lines, [C.ORDER_ID, ITEM], "basket lines", BasketRulesError)
    return (lines.groupBy(C.ORDER_ID)
            .agg(F.array_sort(F.collect_set(ITEM)).alias(ITEMS))
            .withColumn(N_ITEMS, F.size(ITEMS)))


def with_oversized(basket_df: DataFrame, max_basket_size: int) -> DataFrame:
    """Flag baskets with more than ``max_basket_size`` items (column ``oversized``)."""
    return basket_df.withColumn("oversized", F.col(N_ITEMS) > F.lit(max_basket_size))


def build_baskets(lines: DataFrame, params: RuleParams) -> DataFrame:
    """Order lines -> baskets with the ``oversized`` flag (not yet filtered)."""
    return (lines.transform(filter_basket_lines, params.exclude_skus)
            .transform(with_item, params.level)
            .transform(baskets)
            .transform(with_oversized, params.max_basket_size))


# --- mining ------------------------------------------------------------------------------------

def min_count(n_baskets: int, min_support: float, min_support_count: int | None = None) -> int:
    """The least number of baskets an itemset needs: ``min_support_count`` when given, else the
    smallest count c with c / n_baskets >= min_support (the comparison mlxtend makes)."""
    if min_support_count is not None:
        return int(min_support_count)
    if n_baskets <= 0:
        return 1
    c = max(1, math.ceil(min_support * n_baskets))
    while c > 1 and (c - 1) / n_baskets >= min_support:
        c -= 1
    while c / n_baskets < min_support:
        c += 1
    return c


def mllib_min_support(count: int, n_baskets: int) -> float:
    """The fraction to give MLlib so that its ``ceil(minSupport * n)`` is exactly ``count``
    (half a basket below it: immune to rounding of count / n)."""
    return (count - 0.5) / n_baskets


def frequent_itemsets(basket_df: DataFrame, count: int, n_baskets: int,
                      num_partitions: int | None = None) -> DataFrame:
    """MLlib FPGrowth's frequent itemsets held by at least ``count`` of the ``n_baskets`` baskets:
    ``items`` (sorted array) and ``freq`` (number of baskets). Lazy: MLlib mines again on each
    action, so persist the result when it is used more than once."""
    from pyspark.ml.fpm import FPGrowth

    fp = FPGrowth(itemsCol=ITEMS, minSupport=mllib_min_support(count, n_baskets), minConfidence=1.0)
    if num_partitions:
        fp = fp.setNumPartitions(num_partitions)
    model = fp.fit(basket_df.select(ITEMS))
    return model.freqItemsets.select(F.array_sort(ITEMS).alias(ITEMS), F.col(FREQ).cast("long"))


# Level-wise counting (algorithm "levelwise"): the frequent items first (Arrow value counts per
# batch, summed by Spark), then one pass over the baskets per itemset size k >= 2, in which every
# partition counts the k-combinations that can still be frequent with numpy (shopsense.baskets.counting:
# integer-coded items, Apriori pruning against the frequent itemsets of the sizes below) and yields
# partial counts that a Spark aggregation sums. The driver holds the frequent items and the keys of
# the frequent itemsets below max_itemset_length (for pruning): bounded by the catalogue and the
# support threshold, never by the number of baskets.
_KEY, _CODES, _ITEM_ARRAY = "_key", "_codes", "_item_array"


def frequent_items(basket_df: DataFrame, count: int) -> DataFrame:
    """``item``, ``freq``: the items in at least ``count`` baskets (column ``items``)."""
    counted = basket_df.select(ITEMS).mapInArrow(
        functools.partial(basket_count.item_counts, column=ITEMS), f"{ITEM} string, {basket_count.COUNT} long")
    # a mapInArrow column is nullable; items never are (collect_set drops nulls): say so
    return (counted.groupBy(ITEM).agg(F.sum(basket_count.COUNT).alias(FREQ))
            .filter(F.col(FREQ) >= count).select(F.coalesce(ITEM, F.lit("")).alias(ITEM), FREQ))


def count_level(basket_df: DataFrame, k: int, count: int, vocabulary: list[str],
                frequent: list[np.ndarray]) -> DataFrame:
    """``_key``, ``freq``: the k-itemsets (as keys of :func:`basket_count.encode` over the codes
    of the sorted ``vocabulary``) in at least ``count`` baskets. ``frequent`` holds the sorted
    keys of the frequent itemsets of sizes 2..k-1. Exact counts."""
    fn = functools.partial(basket_count.count_batches, column=ITEMS, vocabulary=vocabulary, k=k,
                           frequent=frequent)
    partial = basket_df.select(ITEMS).mapInArrow(fn, f"{basket_count.KEY} long, {basket_count.COUNT} long")
    return (partial.groupBy(basket_count.KEY).agg(F.sum(basket_count.COUNT).alias(FREQ))
            .filter(F.col(FREQ) >= count).select(F.col(basket_count.KEY).alias(_KEY), FREQ))


def key_codes(key: str, k: int, base: int) -> Column:
    """The codes of the long key column ``key`` (:func:`basket_count.encode`), in order
    (integer division: exact for every long)."""
    return F.array(*[(F.expr(f"{key} div {base ** (k - 1 - d)}") % F.lit(base)).cast("int")
                     for d in range(k)])


def frequent_itemsets_levelwise(basket_df: DataFrame, count: int, max_len: int
                                ) -> tuple[DataFrame, list[DataFrame]]:
    """The frequent itemsets of 1..``max_len`` items held by at least ``count`` baskets, counted
    level by level: ``items`` (sorted array) and ``freq``. Returns them (lazy) with the frames
    persisted on the way, to unpersist once the itemsets are materialised."""
    spark = basket_df.sparkSession
    singles = frequent_items(basket_df, count).persist(StorageLevel.MEMORY_AND_DISK)
    # bounded by the catalogue; Python's str order is Spark's (UTF-8 bytes keep code point order)
    vocabulary = sorted(row[0] for row in singles.select(ITEM).toLocalIterator())
    base = max(len(vocabulary), 2)
    if base ** max_len >= 2 ** 62:
        raise BasketRulesError(
            f"algorithm levelwise codes a {max_len}-itemset of {len(vocabulary)} frequent items as one "
            f"long; {len(vocabulary)}^{max_len} does not fit: lower max_itemset_length or use algorithm "
            f"fpgrowth")
    scratch = [singles]
    levels: list[DataFrame] = []
    frequent: list[np.ndarray] = []
    for k in range(2, max_len + 1):
        if k > 2 and len(frequent[-1]) == 0:
            break  # no frequent (k-1)-itemset: no k-itemset can be frequent
        level = count_level(basket_df, k, count, vocabulary, frequent).persist(StorageLevel.MEMORY_AND_DISK)
        scratch.append(level)
        levels.append(level.select(key_codes(_KEY, k, base).alias(_CODES), FREQ))
        if k < max_len:  # for pruning the next level
            frequent.append(np.sort(np.fromiter((row[0] for row in level.select(_KEY).toLocalIterator()),
                                                dtype=np.int64)))
    itemsets = singles.select(F.array(ITEM).alias(ITEMS), FREQ)
    vocab_schema = T.StructType([T.StructField(_ITEM_ARRAY, T.ArrayType(T.StringType(), containsNull=False),
                                               nullable=False)])
    ordered = F.broadcast(spark.createDataFrame([(vocabulary,)], vocab_schema))
    for level in levels:
        named = (level.crossJoin(ordered)
                 .select(F.transform(_CODES, lambda c: F.col(_ITEM_ARRAY)[c]).alias(ITEMS), FREQ))
        itemsets = itemsets.unionByName(named)
    return itemsets.select(ITEMS, F.col(FREQ).cast("long")), scratch


def candidate_rules(itemsets: DataFrame, n_baskets: int, max_itemset_length: int) -> DataFrame:
    """Every rule X -> {y} from the frequent itemsets of 2..``max_itemset_length`` items, with
    its counts and metrics (no confidence filter). By downward closure X and {y} are frequent
    too, so the joins find them."""
    sized = itemsets.filter(F.size(ITEMS) <= max_itemset_length)
    n = F.lit(n_baskets).cast("long")
    split = (sized.filter(F.size(ITEMS) >= 2)
             .select(F.col(ITEMS), F.col(FREQ).alias(N_ORDERS), F.explode(ITEMS).alias("_y"))
             .withColumn(ANTECEDENT, F.array_remove(ITEMS, F.col("_y"))))
    antecedents = sized.select(F.col(ITEMS).alias(ANTECEDENT), F.col(FREQ).alias(ANTECEDENT_ORDERS))
    singles = F.broadcast(sized.filter(F.size(ITEMS) == 1)
                          .select(F.col(ITEMS)[0].alias("_y"), F.col(FREQ).alias(CONSEQUENT_ORDERS)))
    rules = (split.join(antecedents, ANTECEDENT).join(singles, "_y")
             .withColumn(CONSEQUENT, F.array(F.col("_y"))))
    return rules.select(ANTECEDENT, CONSEQUENT, N_ORDERS, ANTECEDENT_ORDERS, CONSEQUENT_ORDERS,
                        *with_metrics(F.col(N_ORDERS), F.col(ANTECEDENT_ORDERS),
                                      F.col(CONSEQUENT_ORDERS), n))


def with_metrics(n_xy: Column, n_x: Column, n_y: Column, n: Column) -> list[Column]:
    """support, confidence, lift, leverage, conviction from the counts (see the module doc)."""
    support = n_xy / n
    s_x, s_y = n_x / n, n_y / n
    confidence = n_xy / n_x
    return [support.alias(SUPPORT),
            confidence.alias(CONFIDENCE),
            (confidence / s_y).alias(LIFT),
            (support - s_x * s_y).alias(LEVERAGE),
            F.when(confidence < 1.0, (F.lit(1.0) - s_y) / (F.lit(1.0) - confidence))
            .otherwise(F.lit(None).cast("double")).alias(CONVICTION)]


def with_item_names(rules: DataFrame, names: DataFrame, col: str, out: str) -> DataFrame:
    """Add ``out``: the names of the items in array column ``col``, in the same order (null for
    an item without a name). ``names`` has columns ``item`` and ``name``, one row per item.

    The names become one map in a one-row frame joined to every rule by broadcast: the rules
    are not shuffled, and nothing goes through the driver but that broadcast (one entry per
    item of the catalogue)."""
    lookup = names.agg(F.map_from_entries(F.collect_list(F.struct(ITEM, "name"))).alias("_names"))
    return (rules.crossJoin(F.broadcast(lookup))
            .withColumn(out, F.transform(col, lambda i: F.try_element_at(F.col("_names"), i)))
            .drop("_names"))


def frequently_bought_together(rules: DataFrame, top_n: int, min_confidence: float,
                               min_lift: float = 1.0) -> DataFrame:
    """For each item, its ``top_n`` companions by lift (then confidence, then companion id) among
    the one-item rules item -> companion with confidence >= ``min_confidence`` and lift above
    ``min_lift``. Expects named rules (``antecedent_names``, ``consequent_names``)."""
    from pyspark.sql.window import Window

    pairs = (rules.filter((F.size(ANTECEDENT) == 1) & (F.col(CONFIDENCE) >= min_confidence)
                          & (F.col(LIFT) > min_lift))
             .select(F.col(ANTECEDENT)[0].alias(C.SKU), F.col(ANTECEDENT_NAMES)[0].alias(C.PRODUCT_NAME),
                     F.col(CONSEQUENT)[0].alias(COMPANION_SKU),
                     F.col(CONSEQUENT_NAMES)[0].alias(COMPANION_NAME),
                     CONFIDENCE, LIFT, SUPPORT, N_ORDERS))
    order = Window.partitionBy(C.SKU).orderBy(F.desc(LIFT), F.desc(CONFIDENCE), F.asc(COMPANION_SKU))
    return (pairs.withColumn(RANK, F.row_number().over(order))
            .filter(F.col(RANK) <= top_n))


def item_names(lines: DataFrame, level: str, products: DataFrame | None) -> DataFrame:
    """``item``, ``name``: product names from silver.products (or, without it, the latest name in
    the order lines); at level ``category`` the category is its own name."""
    if level == "category":
        return (lines.select(F.col(C.CATEGORY).alias(ITEM)).filter(F.col(ITEM).isNotNull())
                .distinct().withColumn("name", F.col(ITEM)))
    if products is not None:
        return products.select(F.col(C.SKU).alias(ITEM), F.col(C.PRODUCT_NAME).alias("name")).filter(
            F.col(ITEM).isNotNull())
    return (lines.groupBy(F.col(C.SKU).alias(ITEM))
            .agg(F.max_by(C.PRODUCT_NAME, C.ORDERED_AT).alias("name")))


@dataclass
class Mined:
    """The result of :func:`mine`: persisted frames (call :meth:`unpersist` when done)."""

    n_baskets: int
    n_oversized: int
    min_count: int
    itemsets: DataFrame | None
    rules: DataFrame | None   # candidate rules, no confidence filter, without names

    def unpersist(self) -> None:
        for df in (self.itemsets, self.rules):
            if df is not None:
                df.unpersist()


def mine(basket_df: DataFrame, params: RuleParams) -> Mined:
    """Mine baskets (from :func:`build_baskets`; oversized ones are left out and counted).
    Returns the basket counts and persisted candidate rules; ``rules`` is None when no itemset
    can be frequent (no baskets, or a count threshold above the number of baskets)."""
    require_columns(basket_df, [ITEMS, N_ITEMS, "oversized"], "baskets", BasketRulesError)
    counts = basket_df.agg(F.count_if(~F.col("oversized")).alias("n"),
                           F.count_if(F.col("oversized")).alias("big")).first()
    n_baskets, n_oversized = int(counts["n"] or 0), int(counts["big"] or 0)
    need = min_count(n_baskets, params.min_support, params.min_support_count)
    if n_baskets == 0 or need > n_baskets:
        return Mined(n_baskets, n_oversized, need, None, None)
    mined = basket_df.filter(~F.col("oversized")).select(ITEMS)
    if params.algorithm == "levelwise":
        itemsets, scratch = frequent_itemsets_levelwise(mined, need, params.max_itemset_length)
        itemsets = itemsets.persist(StorageLevel.MEMORY_AND_DISK)
        itemsets.count()  # materialise, then drop the intermediate levels
        for frame in scratch:
            frame.unpersist()
    else:
        itemsets = frequent_itemsets(mined, need, n_baskets, params.num_partitions)
        itemsets = itemsets.persist(StorageLevel.MEMORY_AND_DISK)
    rules = candidate_rules(itemsets, n_baskets, params.max_itemset_length)
    rules = rules.persist(StorageLevel.MEMORY_AND_DISK)
    return Mined(n_baskets, n_oversized, need, itemsets, rules)


def _empty(spark: SparkSession, schema: T.StructType) -> DataFrame:
    return spark.createDataFrame([], schema)


def run(spark: SparkSession, conf: Conf) -> dict:
    """Mine association rules from the order lines up to the as-of date; write
    gold.association_rules and gold.frequently_bought_together (whole-table replace). Returns
    the run summary; metrics hold the basket counts (mined, oversized), the count threshold,
    itemsets and rules."""
    params = RuleParams.from_conf(conf)
    with JobRun(spark, conf, JOB, conf.basket_rules) as run:
        lines = run.read("silver.order_lines").filter(F.col(C.ORDER_DATE) <= F.lit(run.as_of()))
        if params.level == "category" and C.CATEGORY not in lines.columns:
            raise BasketRulesError("level category needs a category column in silver.order_lines")
        basket_df = build_baskets(lines, params).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            mined = mine(basket_df, params)
        finally:
            basket_df.unpersist()
        try:
            products = read_products(run, "product names taken from the latest "
                                         "order line of each SKU") if params.level == "sku" else None
            rules, fbt, n_itemsets = named_outputs(spark, mined, params, item_names(lines, params.level, products))
            run.rows_out = run.write(rules.withColumn(LEVEL, F.lit(params.level)), "gold.association_rules")
            n_fbt = run.write(fbt.withColumn(LEVEL, F.lit(params.level)), "gold.frequently_bought_together")
        finally:
            mined.unpersist()
        if mined.rules is None:
            run.note(f"no itemset can reach {mined.min_count} of {mined.n_baskets} baskets: empty outputs")
        if mined.n_oversized:
            run.note(f"{mined.n_oversized:,} baskets with more than {params.max_basket_size} items "
                     f"left out of mining")
        run.rows_in = mined.n_baskets + mined.n_oversized
        run.metric("baskets_mined", mined.n_baskets)
        run.metric("baskets_oversized", mined.n_oversized)
        run.metric("min_count", mined.min_count)
        run.metric("frequent_itemsets", n_itemsets)
        run.metric("frequently_bought_together_rows", n_fbt)
        run.metric("rules", run.rows_out, key=True)
    return run.summary()


def named_outputs(spark: SparkSession, mined: Mined, params: RuleParams,
                  names: DataFrame) -> tuple[DataFrame, DataFrame, int]:
    """(rules above min_confidence, frequently bought together, frequent itemsets counted),
    with item names; empty frames when nothing was mined."""
    if mined.rules is None:
        return _empty(spark, ASSOCIATION_RULES), _empty(spark, FREQUENTLY_BOUGHT_TOGETHER), 0
    names = names.dropDuplicates([ITEM])
    named = (mined.rules
             .transform(with_item_names, names, ANTECEDENT, ANTECEDENT_NAMES)
             .transform(with_item_names, names, CONSEQUENT, CONSEQUENT_NAMES))
    rules = named.filter(F.col(CONFIDENCE) >= params.min_confidence)
    fbt = frequently_bought_together(named, params.fbt_top_n, params.fbt_min_confidence,
                                     params.fbt_min_lift)
    # at most max_itemset_length items: fpgrowth mines longer ones, levelwise does not
    n_itemsets = mined.itemsets.filter(F.size(ITEMS) <= params.max_itemset_length).count()
    return rules, fbt, n_itemsets
