"""Ingest of the real Online Retail export (541,909 rows) through the conf mapping alone, checked
against a reference computed here with plain pandas from the raw file.

The reference implements the README's documented ingest rules ("Ingest": exact duplicates,
reason codes in order, cancellations, guests, non-product SKUs, float customer ids) on its own;
it imports nothing of shopsense's classification code, so a figure the job gets wrong cannot
also be wrong in the expectation.
"""

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from shopsense.core import tables

from tests.helpers import ONLINE_RETAIL

pytestmark = [pytest.mark.real_data, pytest.mark.skipif(not ONLINE_RETAIL.exists(),
                                                         reason=f"{ONLINE_RETAIL} not present")]

# README "Ingest", reason codes in the order they are checked (the first that applies wins).
README_REASONS = (
    "missing_order_id", "missing_sku", "missing_date", "unparsable_date", "missing_quantity",
    "quantity_not_numeric", "zero_quantity", "missing_price", "price_not_numeric",
    "positive_quantity_on_cancellation", "stock_adjustment", "non_positive_price",
)
# conf sources.online_retail.orders: the export's columns and formats.
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
CANCEL_PREFIX = "C"
# SOURCE.md: InvoiceDate is UK local time; silver.order_lines.ordered_at is documented as UTC.
SOURCE_TZ = "Europe/London"


def _text(s: pd.Series) -> pd.Series:
    """Trimmed text, blank as missing."""
    s = s.str.strip()
    return s.where(s != "")


def _number(s: pd.Series) -> pd.Series:
    """A finite number, else missing (text, NaN and infinity are not numbers)."""
    v = pd.to_numeric(_text(s), errors="coerce")
    return v.where(np.isfinite(v))


def reference_reasons(rows: pd.DataFrame) -> pd.Series:
    """The first README reason code each row fails (missing where the row is accepted)."""
    order_id, sku = _text(rows["InvoiceNo"]), _text(rows["StockCode"])
    date_text, qty_text, price_text = (_text(rows[c]) for c in ("InvoiceDate", "Quantity", "UnitPrice"))
    ordered_at = pd.to_datetime(date_text, format=TIMESTAMP_FORMAT, errors="coerce")
    qty, price = _number(rows["Quantity"]), _number(rows["UnitPrice"])
    cancel = order_id.str.startswith(CANCEL_PREFIX, na=False)
    checks = {
        "missing_order_id": order_id.isna(),
        "missing_sku": sku.isna(),
        "missing_date": date_text.isna(),
        "unparsable_date": ordered_at.isna(),
        "missing_quantity": qty_text.isna(),
        "quantity_not_numeric": qty.isna(),
        "zero_quantity": qty == 0,
        "missing_price": price_text.isna(),
        "price_not_numeric": price.isna(),
        "positive_quantity_on_cancellation": cancel & (qty > 0),
        "stock_adjustment": ~cancel & (qty < 0) & (price == 0),
        "non_positive_price": price <= 0,
    }
    assert tuple(checks) == README_REASONS
    reason = pd.Series(None, index=rows.index, dtype=object)
    for code, failed in checks.items():
        reason = reason.mask(reason.isna() & failed.fillna(False).astype(bool), code)
    return reason


@pytest.fixture(scope="module")
def retail(online_retail_ingested):
    return online_retail_ingested


@pytest.fixture(scope="module")
def reference(retail):
    """The expected figures, from the raw gzip read once as text."""
    conf, _ = retail
    raw = pd.read_csv(ONLINE_RETAIL, dtype=str, keep_default_na=False)
    duplicate = raw.duplicated(keep="first")           # identical in every column to an earlier row
    rows = raw[~duplicate]
    reason = reference_reasons(rows)
    accepted = rows[reason.isna()]
    customer = _text(accepted["CustomerID"]).str.replace(r"^(\d+)\.0+$", r"\1", regex=True)
    ordered_at = (pd.to_datetime(accepted["InvoiceDate"].str.strip(), format=TIMESTAMP_FORMAT)
                  .dt.tz_localize(SOURCE_TZ).dt.tz_convert("UTC").dt.tz_localize(None))
    non_products = {str(s) for s in conf["ingest"]["non_product_skus"]}
    quarantined = rows[reason.notna()]
    return {
        "rows_read": len(raw),
        "rows_duplicate": int(duplicate.sum()),
        "rows_accepted": len(accepted),
        "rows_quarantined": len(quarantined),
        "reasons": {code: int((reason == code).sum()) for code in README_REASONS},
        "quarantined_rows": sorted(zip(_text(quarantined["InvoiceNo"]), _text(quarantined["StockCode"]),
                                       _text(quarantined["Quantity"]), reason[reason.notna()])),
        "guests": int(customer.isna().sum()),
        "cancellations": int(_text(accepted["InvoiceNo"]).str.startswith(CANCEL_PREFIX).sum()),
        "non_products": int(_text(accepted["StockCode"]).isin(non_products).sum()),
        "customers": int(customer.nunique()),
        "first": str(ordered_at.min()),
        "last": str(ordered_at.max()),
    }


def test_online_retail_reconciles_with_the_pandas_reference(spark, retail, reference):
    conf, summary = retail
    m = summary["metrics"]
    expected = {k: reference[k] for k in ("rows_read", "rows_duplicate", "rows_accepted", "rows_quarantined")}
    assert {k: int(m[k]) for k in expected} == expected
    assert m["rows_read"] == m["rows_accepted"] + m["rows_quarantined"] + m["rows_duplicate"]
    assert tables.read_table(spark, conf, "bronze.online_retail_orders").count() == reference["rows_read"]
    assert tables.read_table(spark, conf, "silver.order_lines").count() == reference["rows_accepted"]


def test_online_retail_quarantines_the_reference_rows_for_the_reference_reasons(spark, retail, reference):
    conf, _ = retail
    quarantine = tables.read_table(spark, conf, "silver.quarantine")
    counted = dict(quarantine.groupBy("reason").count().collect())
    assert set(counted) <= set(README_REASONS), f"reason codes the README does not list: {counted}"
    assert {code: counted.get(code, 0) for code in README_REASONS} == reference["reasons"]
    raw_field = lambda name: F.get_json_object("raw_values", f"$.{name}")  # noqa: E731
    rows = quarantine.select(F.trim(raw_field("order_id")), F.trim(raw_field("sku")),
                             F.trim(raw_field("quantity")), "reason").collect()
    assert sorted(tuple(r) for r in rows) == reference["quarantined_rows"]


def test_online_retail_cases_are_kept_and_marked_as_the_reference_counts_them(spark, retail, reference):
    conf, _ = retail
    lines = tables.read_table(spark, conf, "silver.order_lines")
    s = lines.agg(
        F.count_if("is_guest").alias("guests"),
        F.count_if(F.col("line_type") == "cancellation").alias("cancellations"),
        F.count_if(~F.col("is_product")).alias("non_products"),
        F.countDistinct("customer_id").alias("customers"),
        F.min("ordered_at").cast("string").alias("first"),
        F.max("ordered_at").cast("string").alias("last"),
        F.max(F.length("customer_id")).alias("id_len")).first().asDict()
    id_len = s.pop("id_len")
    assert s == {k: reference[k] for k in s}
    assert id_len == 32                      # pseudonyms, never the export's ids
    assert lines.filter((F.col("line_type") == "sale") & (F.col("quantity") <= 0)).count() == 0
    products = tables.read_table(spark, conf, "silver.products")
    assert products.filter(F.col("product_name").isNull()).count() < products.count() * 0.01
