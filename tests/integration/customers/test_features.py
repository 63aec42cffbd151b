"""Customer features on small literal order lines: every feature, guests, non-products,
returns-only customers, the as-of date and the window."""

import datetime as dt

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopsense.core import columns as C
from shopsense.customers import features as FT
from shopsense.core import tables

AS_OF = dt.date(2024, 3, 31)
D = dt.date


def line(order_id, customer, sku, qty, price, day, line_type="sale", category="KITCHEN",
         is_product=True):
    return {C.LINE_ID: f"{order_id}-{sku}", C.ORDER_ID: order_id, C.CUSTOMER_ID: customer,
            C.IS_GUEST: customer is None, C.SKU: sku, C.PRODUCT_NAME: None, C.CATEGORY: category,
            C.COUNTRY: "UK", C.QUANTITY: float(qty), C.UNIT_PRICE: float(price),
            C.REVENUE: float(qty * price),
            C.ORDERED_AT: dt.datetime.combine(day, dt.time(10)), C.ORDER_DATE: day,
            C.LINE_TYPE: line_type, C.IS_PRODUCT: is_product, C.SOURCE_FILE: "f",
            C.RUN_ID: "r", C.INGESTED_AT: dt.datetime(2024, 4, 1)}


ROWS = [
    # a: three orders over 60 days, one line returned, a postage line (not a product)
    line("o1", "a", "s1", 2, 10.0, D(2024, 1, 1)),
    line("o1", "a", "s2", 1, 20.0, D(2024, 1, 1), category="TOYS"),
    line("o1", "a", "POST", 1, 5.0, D(2024, 1, 1), is_product=False),
    line("o2", "a", "s1", 4, 10.0, D(2024, 2, 1)),
    line("o3", "a", "s3", 1, 60.0, D(2024, 3, 1)),
    line("r1", "a", "s1", -1, 10.0, D(2024, 3, 5), line_type="return"),
    # b: one order, no category in the source
    line("o4", "b", "s9", 3, 5.0, D(2024, 3, 30), category=None),
    # c: only a cancellation (its sale was before the data starts)
    line("c1", "c", "s1", -2, 10.0, D(2024, 2, 10), line_type="cancellation"),
    # a guest sale and a sale after as_of: neither counts
    line("o5", None, "s1", 9, 10.0, D(2024, 3, 1)),
    line("o6", "b", "s1", 1, 10.0, D(2024, 4, 2)),
]


def expected_row(customer, has_orders, first, last, recency, frequency, monetary, sales, returned,
                 tenure, aov, ipo, return_rate, skus, categories, gap):
    return {C.CUSTOMER_ID: customer, C.AS_OF: AS_OF, FT.HAS_ORDERS: has_orders,
            FT.FIRST_ORDER_DATE: first, FT.LAST_ORDER_DATE: last, FT.RECENCY_DAYS: recency,
            FT.FREQUENCY: frequency, FT.MONETARY: monetary, FT.SALES_REVENUE: sales,
            FT.RETURNED_REVENUE: returned, FT.TENURE_DAYS: tenure, FT.AVG_ORDER_VALUE: aov,
            FT.ITEMS_PER_ORDER: ipo, FT.RETURN_RATE: return_rate, FT.DISTINCT_SKUS: skus,
            FT.DISTINCT_CATEGORIES: categories, FT.MEAN_DAYS_BETWEEN_ORDERS: gap}


def features_schema():
    return tables.T.StructType([f for f in FT.CUSTOMER_FEATURES.fields
                                if f.name not in (C.RUN_ID, C.COMPUTED_AT)])


@pytest.fixture(scope="module")
def order_lines(spark):
    return spark.createDataFrame(ROWS, schema=tables.ORDER_LINES)


def test_features_of_literal_rows(spark, order_lines):
    got = FT.customer_features(order_lines, AS_OF)
    expected = spark.createDataFrame([
        # sales 20+20+40+60 = 140 over 3 orders, 8 units; returned 10; span 60 days / 2 gaps
        expected_row("a", True, D(2024, 1, 1), D(2024, 3, 1), 30, 3, 130.0, 140.0, 10.0,
                     90, 140.0 / 3, 8 / 3, 10.0 / 140.0, 3, 2, 30.0),
        expected_row("b", True, D(2024, 3, 30), D(2024, 3, 30), 1, 1, 15.0, 15.0, 0.0,
                     1, 15.0, 3.0, 0.0, 1, None, None),
        expected_row("c", False, None, None, None, 0, -20.0, 0.0, 20.0,
                     None, None, None, None, 0, 0, None),
    ], schema=features_schema())
    assertDataFrameEqual(got, expected, checkRowOrder=False)


def test_window_leaves_out_customers_without_lines_in_it(spark, order_lines):
    got = FT.customer_features(order_lines, AS_OF, window_days=30).select(
        C.CUSTOMER_ID, FT.FREQUENCY, FT.MONETARY, FT.TENURE_DAYS)
    # the window is 2024-03-02..03-31: a's last sale (03-01) falls out, its return (03-05) stays,
    # so a becomes returns-only; c (02-10) has no row
    expected = spark.createDataFrame(
        [("a", 0, -10.0, None), ("b", 1, 15.0, 1)],
        f"{C.CUSTOMER_ID} string, {FT.FREQUENCY} long, {FT.MONETARY} double, "
        f"{FT.TENURE_DAYS} int")
    assertDataFrameEqual(got, expected, checkRowOrder=False)


def test_missing_column_is_named(order_lines):
    with pytest.raises(FT.FeaturesError, match=r"lacks columns \['line_type'\]"):
        FT.customer_features(order_lines.drop(C.LINE_TYPE), AS_OF)


def test_window_must_be_positive(order_lines):
    with pytest.raises(FT.FeaturesError, match="window_days must be a positive"):
        FT.customer_features(order_lines, AS_OF, window_days=0)


def test_features_job_writes_table_and_run_record(spark, conf_factory, order_lines):
    conf = conf_factory("as_of=2024-03-31")  # as --as-of passes it
    tables.overwrite(order_lines, conf, "silver.order_lines")
    summary = FT.run(spark, conf)
    assert summary["metrics"]["customers"] == 3
    assert summary["metrics"]["returns_only_customers"] == 1
    written = tables.read_table(spark, conf, "gold.customer_features")
    assert written.filter(F.col(C.RUN_ID) == summary["run_id"]).count() == 3
