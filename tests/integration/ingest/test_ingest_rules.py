import datetime as dt
import hashlib
import hmac

from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopsense.core import columns as C
from shopsense.core.settings import OrdersSpec, PlausibilitySection
from shopsense.ingest.keys import hmac_sha256_hex, pseudonymise
from shopsense.ingest.rules import normalise_customer_id
from shopsense.ingest.batch import dedupe, with_canonical, with_catalogue, with_row_hash

KEY = b"test-key"
RAW_SCHEMA = ("InvoiceNo string, StockCode string, Description string, Quantity string, "
              "InvoiceDate string, UnitPrice string, CustomerID string, Country string, "
              "source_file string")
MAPPING = {C.ORDER_ID: "InvoiceNo", C.SKU: "StockCode", C.PRODUCT_NAME: "Description",
           C.QUANTITY: "Quantity", C.ORDERED_AT: "InvoiceDate", C.UNIT_PRICE: "UnitPrice",
           C.CUSTOMER_ID: "CustomerID", C.COUNTRY: "Country", C.CATEGORY: None}
SPEC = OrdersSpec(path="x", timestamp_format="yyyy-MM-dd HH:mm:ss", cancel_prefix="C")


def test_hmac_matches_python_hmac(spark):
    ids = ["17850", "", "ü-ñ", "x" * 200]
    df = spark.createDataFrame([(i,) for i in ids], "id string")
    got = [r[0] for r in df.select(hmac_sha256_hex(F.col("id"), KEY)).collect()]
    assert got == [hmac.new(KEY, i.encode(), hashlib.sha256).hexdigest() for i in ids]
    long_key = b"k" * 100  # keys longer than the block are hashed first (RFC 2104)
    got = df.select(hmac_sha256_hex(F.col("id"), long_key)).first()[0]
    assert got == hmac.new(long_key, b"17850", hashlib.sha256).hexdigest()


def test_pseudonym_is_truncated_hmac_and_null_stays_null(spark):
    df = spark.createDataFrame([("17850",), (None,)], "id string")
    got = [r[0] for r in df.select(pseudonymise(F.col("id"), KEY)).collect()]
    assert got == [hmac.new(KEY, b"17850", hashlib.sha256).hexdigest()[:32], None]


def test_customer_ids_written_as_floats_are_normalised(spark):
    df = spark.createDataFrame([("17850.0",), (" 12 ",), ("",), (None,), ("A1.0",), ("1.5",)], "id string")
    got = [r[0] for r in df.select(normalise_customer_id(F.col("id"))).collect()]
    assert got == ["17850", "12", None, None, "A1.0", "1.5"]


#: The ingest's start time the plausibility rules measure "in the future" from.
STARTED = dt.datetime(2011, 1, 1)


def classify(spark, rows):
    raw = spark.createDataFrame(rows, RAW_SCHEMA).withColumn("_corrupt_record", F.lit(None).cast("string"))
    lines = with_canonical(with_row_hash(raw), MAPPING, SPEC, KEY, STARTED, PlausibilitySection())
    out = with_catalogue(dedupe(lines), None, ["POST"])
    return out.select(C.ORDER_ID, C.SKU, C.QUANTITY, C.UNIT_PRICE, C.ORDERED_AT, C.LINE_TYPE,
                      C.IS_GUEST, C.IS_PRODUCT, C.REASON, "copies")


def test_every_rule_on_literal_rows(spark):
    f = "a.csv"
    good = ("536365", "85123A", "HEART", "6", "2010-12-01 08:26:00", "2.55", "17850.0", "UK", f)
    rows = [
        good, good,                                                                   # exact duplicate
        ("C536379", "D", "Discount", "-1", "2010-12-01 09:41:00", "27.5", "14527.0", "UK", f),
        ("536380", "22961", "JAM", "-5", "2010-12-01 09:45:00", "1.45", None, "UK", f),  # return, guest
        ("536381", "POST", "POSTAGE", "1", "2010-12-01 09:50:00", "18.0", "12583", "FR", f),
        (None, "22", "x", "1", "2010-12-01 10:00:00", "1.0", "1", "UK", f),
        ("536382", " ", "x", "1", "2010-12-01 10:00:00", "1.0", "1", "UK", f),
        ("536383", "22", "x", "1", None, "1.0", "1", "UK", f),
        ("536384", "22", "x", "1", "01/12/2010 10:00", "1.0", "1", "UK", f),
        ("536385", "22", "x", None, "2010-12-01 10:00:00", "1.0", "1", "UK", f),
        ("536386", "22", "x", "six", "2010-12-01 10:00:00", "1.0", "1", "UK", f),
        ("536387", "22", "x", "0", "2010-12-01 10:00:00", "1.0", "1", "UK", f),
        ("536388", "22", "x", "1", "2010-12-01 10:00:00", None, "1", "UK", f),
        ("536389", "22", "x", "1", "2010-12-01 10:00:00", "1,5", "1", "UK", f),
        ("C536390", "22", "x", "3", "2010-12-01 10:00:00", "1.0", "1", "UK", f),
        ("536391", "22", "damaged", "-3", "2010-12-01 10:00:00", "0", None, "UK", f),
        ("536392", "22", "x", "2", "2010-12-01 10:00:00", "-1.5", "1", "UK", f),
        ("536393", "22", "x", "2", "2010-12-01 10:00:00", "0.0", "1", "UK", f),
        ("536394", "22", "x", "NaN", "2010-12-01 10:00:00", "1.0", "1", "UK", f),
        # plausibility (conf defaults: 1 day after the start, 1990-01-01, 1e6, 1e6, 1e8)
        ("536395", "22", "x", "1", "2011-01-02 12:00:00", "1.0", "1", "UK", f),     # 1.5 days ahead
        ("536396", "22", "x", "1", "2011-01-01 23:00:00", "1.0", "1", "UK", f),     # within a day
        ("536397", "22", "x", "1", "1899-12-31 00:00:00", "1.0", "1", "UK", f),
        ("536398", "22", "x", "1e12", "2010-12-01 10:00:00", "1.0", "1", "UK", f),
        ("536399", "22", "x", "1", "2010-12-01 10:00:00", "1e308", "1", "UK", f),
        ("536400", "22", "x", "inf", "2010-12-01 10:00:00", "1.0", "1", "UK", f),
        ("536401", "22", "x", "1", "2010-12-01 10:00:00", "-Infinity", "1", "UK", f),
        ("536402", "22", "x", "100000", "2010-12-01 10:00:00", "10000", "1", "UK", f),  # 1e9 revenue
        ("536403", "22", "x", "-1000000", "2010-12-01 10:00:00", "1.0", "1", "UK", f),  # |q| = 1e6
    ]
    ts = dt.datetime(2010, 12, 1, 8, 26)
    at = lambda h, m: dt.datetime(2010, 12, 1, h, m)  # noqa: E731
    expected = spark.createDataFrame([
        ("536365", "85123A", 6.0, 2.55, ts, "sale", False, True, None, 2),
        ("C536379", "D", -1.0, 27.5, at(9, 41), "cancellation", False, True, None, 1),
        ("536380", "22961", -5.0, 1.45, at(9, 45), "return", True, True, None, 1),
        ("536381", "POST", 1.0, 18.0, at(9, 50), "sale", False, False, None, 1),
        (None, "22", 1.0, 1.0, at(10, 0), "sale", False, True, "missing_order_id", 1),
        ("536382", None, 1.0, 1.0, at(10, 0), "sale", False, None, "missing_sku", 1),
        ("536383", "22", 1.0, 1.0, None, "sale", False, True, "missing_date", 1),
        ("536384", "22", 1.0, 1.0, None, "sale", False, True, "unparsable_date", 1),
        ("536385", "22", None, 1.0, at(10, 0), "sale", False, True, "missing_quantity", 1),
        ("536386", "22", None, 1.0, at(10, 0), "sale", False, True, "quantity_not_numeric", 1),
        ("536387", "22", 0.0, 1.0, at(10, 0), "sale", False, True, "zero_quantity", 1),
        ("536388", "22", 1.0, None, at(10, 0), "sale", False, True, "missing_price", 1),
        ("536389", "22", 1.0, None, at(10, 0), "sale", False, True, "price_not_numeric", 1),
        ("C536390", "22", 3.0, 1.0, at(10, 0), "cancellation", False, True,
         "positive_quantity_on_cancellation", 1),
        ("536391", "22", -3.0, 0.0, at(10, 0), "return", True, True, "stock_adjustment", 1),
        ("536392", "22", 2.0, -1.5, at(10, 0), "sale", False, True, "non_positive_price", 1),
        ("536393", "22", 2.0, 0.0, at(10, 0), "sale", False, True, "non_positive_price", 1),
        ("536394", "22", None, 1.0, at(10, 0), "sale", False, True, "quantity_not_finite", 1),
        ("536395", "22", 1.0, 1.0, dt.datetime(2011, 1, 2, 12), "sale", False, True, "future_date", 1),
        ("536396", "22", 1.0, 1.0, dt.datetime(2011, 1, 1, 23), "sale", False, True, None, 1),
        ("536397", "22", 1.0, 1.0, dt.datetime(1899, 12, 31), "sale", False, True, "date_before_floor", 1),
        ("536398", "22", 1e12, 1.0, at(10, 0), "sale", False, True, "implausible_quantity", 1),
        ("536399", "22", 1.0, 1e308, at(10, 0), "sale", False, True, "implausible_price", 1),
        ("536400", "22", None, 1.0, at(10, 0), "sale", False, True, "quantity_not_finite", 1),
        ("536401", "22", 1.0, None, at(10, 0), "sale", False, True, "price_not_finite", 1),
        ("536402", "22", 1e5, 1e4, at(10, 0), "sale", False, True, "implausible_revenue", 1),
        ("536403", "22", -1e6, 1.0, at(10, 0), "return", False, True, None, 1),
    ], "order_id string, sku string, quantity double, unit_price double, ordered_at timestamp, "
       "line_type string, is_guest boolean, is_product boolean, reason string, copies bigint")
    assertDataFrameEqual(classify(spark, rows), expected, checkRowOrder=False)
