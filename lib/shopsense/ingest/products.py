"""silver.products: what is known of each SKU, from the product catalogue where there is one
and from the order lines where it is silent, and the same table as of a date for the jobs.

Fields taken from the order lines (the latest name and category, the median sale price) are
listed per row in ``from_orders``. Ingest derives them from every line it holds; a job computing
as of an earlier date re-derives exactly those fields from the lines up to that date
(:func:`products_as_of`), so a product's price or name never comes from a later order, and a
SKU that only later orders know does not exist yet. Catalogue values are kept as they are: a
catalogue is not an order.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from shopsense.core import columns as C
from shopsense.core import tables

ORIGIN = "origin"
FROM_ORDERS = "from_orders"

#: The fields order lines can tell about a product.
DERIVED_FIELDS = (C.PRODUCT_NAME, C.CATEGORY, C.UNIT_PRICE)
#: The fields only a catalogue gives (empty for derived products).
CATALOGUE_ONLY = (C.UNIT_COST, C.LEAD_TIME_DAYS, C.LEAD_TIME_STD_DAYS, C.PACK_SIZE, C.MIN_ORDER_QTY)


def derive_products(order_lines: DataFrame) -> DataFrame:
    """One row per SKU seen in orders (returns included): the most recent non-empty name and
    category, the median price of its sales (of all its lines when it has no sale)."""
    is_sale = F.col(C.LINE_TYPE) == C.LINE_SALE
    return order_lines.groupBy(C.SKU).agg(
        F.max_by(C.PRODUCT_NAME, F.when(F.col(C.PRODUCT_NAME).isNotNull(), F.col(C.ORDERED_AT)))
        .alias(C.PRODUCT_NAME),
        F.max_by(C.CATEGORY, F.when(F.col(C.CATEGORY).isNotNull(), F.col(C.ORDERED_AT)))
        .alias(C.CATEGORY),
        F.coalesce(F.percentile_approx(F.when(is_sale, F.col(C.UNIT_PRICE)), 0.5),
                   F.percentile_approx(C.UNIT_PRICE, 0.5)).alias(C.UNIT_PRICE))


def _filled(catalogue_value: Column, derived_value: Column, field: str) -> Column:
    """``field`` when the value comes from the orders (the catalogue leaves it empty and the
    orders have it), else null (dropped from the array)."""
    return F.when(catalogue_value.isNull() & derived_value.isNotNull(), F.lit(field))


def build_products(order_lines: DataFrame, catalogue: DataFrame | None,
                   non_products: list[str]) -> DataFrame:
    """silver.products: catalogue rows where the catalogue lists the SKU, filled from orders
    where it leaves a field empty; SKUs only orders know are derived from the orders. Without
    a catalogue every row is derived."""
    d = derive_products(order_lines).alias("d")
    if catalogue is None:
        return d.select(
            F.col(C.SKU), *[F.col(f) for f in DERIVED_FIELDS],
            *[F.lit(None).cast("double").alias(f) for f in CATALOGUE_ONLY],
            (~F.col(C.SKU).isin(non_products)).alias(C.IS_PRODUCT),
            F.lit("derived").alias(ORIGIN),
            F.filter(F.array(*[F.when(F.col(f).isNotNull(), F.lit(f)) for f in DERIVED_FIELDS]),
                     lambda x: x.isNotNull()).alias(FROM_ORDERS))
    cat = catalogue.filter(F.col(C.SKU).isNotNull()).dropDuplicates([C.SKU]).alias("c")
    joined = cat.join(d, F.col(f"c.{C.SKU}") == F.col(f"d.{C.SKU}"), "full_outer")
    sku = F.coalesce(F.col(f"c.{C.SKU}"), F.col(f"d.{C.SKU}"))
    return joined.select(
        sku.alias(C.SKU),
        *[F.coalesce(F.col(f"c.{f}"), F.col(f"d.{f}")).alias(f) for f in DERIVED_FIELDS],
        *[F.col(f"c.{f}").alias(f) for f in CATALOGUE_ONLY],
        (~sku.isin(non_products)).alias(C.IS_PRODUCT),
        F.when(F.col(f"c.{C.SKU}").isNotNull(), "catalogue").otherwise("derived").alias(ORIGIN),
        F.filter(F.array(*[_filled(F.col(f"c.{f}"), F.col(f"d.{f}"), f) for f in DERIVED_FIELDS]),
                 lambda x: x.isNotNull()).alias(FROM_ORDERS))


def products_as_of(products: DataFrame, order_lines: DataFrame, as_of: dt.date) -> DataFrame:
    """silver.products as it was on ``as_of``: the fields a row took from the order lines
    (``from_orders``) re-derived from the lines up to ``as_of``; a SKU known only from orders
    after it is left out. Catalogue fields and rows are kept."""
    if FROM_ORDERS not in products.columns:  # a table written before from_orders existed
        products = products.withColumn(FROM_ORDERS, F.when(
            F.col(ORIGIN) == "derived", F.array(*[F.lit(f) for f in DERIVED_FIELDS]))
            .otherwise(F.array().cast("array<string>")))
    upto = derive_products(order_lines.filter(F.col(C.ORDER_DATE) <= F.lit(as_of))).alias("d")
    joined = products.alias("p").join(upto, F.col(f"p.{C.SKU}") == F.col(f"d.{C.SKU}"), "left")
    kept = joined.filter((F.col(f"p.{ORIGIN}") == "catalogue") | F.col(f"d.{C.SKU}").isNotNull())

    def field(name: str) -> Column:
        if name not in DERIVED_FIELDS:
            return F.col(f"p.`{name}`").alias(name)
        from_orders = F.array_contains(F.col(f"p.{FROM_ORDERS}"), name)
        return F.when(from_orders, F.col(f"d.{name}")).otherwise(F.col(f"p.{name}")).alias(name)

    return kept.select(*[field(c) for c in products.columns])


def read_products(run, without: str) -> DataFrame | None:
    """silver.products as of the run's as-of date (see :func:`products_as_of`), or None (noted,
    with what the job does ``without`` it) when ingest has not written it."""
    products = run.read_optional("silver.products", without)
    if products is None or not tables.table_exists(run.spark, run.conf, "silver.order_lines"):
        return products
    return products_as_of(products, run.read("silver.order_lines"), run.as_of())
