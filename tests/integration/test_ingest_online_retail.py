"""Ingest of the real Online Retail export (541,909 rows) through the conf mapping alone."""

import pytest
from pyspark.sql import functions as F

from shopsense.ingest import batch as ingest
from shopsense.core import tables

from conftest import ONLINE_RETAIL

pytestmark = [pytest.mark.real_data, pytest.mark.skipif(not ONLINE_RETAIL.exists(),
                                                         reason=f"{ONLINE_RETAIL} not present")]


@pytest.fixture(scope="module")
def retail(online_retail_ingested):
    return online_retail_ingested


def test_online_retail_reconciles_exactly(spark, retail):
    conf, summary = retail
    m = summary["metrics"]
    assert m["rows_read"] == 541_909
    assert m["rows_duplicate"] == 5_268  # as the export's SOURCE.md documents
    assert (m["rows_accepted"], m["rows_quarantined"]) == (534_129, 2_512)
    assert m["rows_read"] == m["rows_accepted"] + m["rows_quarantined"] + m["rows_duplicate"]
    assert tables.read_table(spark, conf, "silver.order_lines").count() == 534_129
    assert tables.read_table(spark, conf, "bronze.order_lines_raw").count() == 541_909
    reasons = dict(tables.read_table(spark, conf, "silver.quarantine").groupBy("reason").count().collect())
    assert reasons == {"stock_adjustment": 1_336, "non_positive_price": 1_176}


def test_online_retail_cases_are_kept_and_marked(spark, retail):
    conf, _ = retail
    lines = tables.read_table(spark, conf, "silver.order_lines")
    s = lines.agg(
        F.count_if("is_guest").alias("guest"),
        F.count_if(F.col("line_type") == "cancellation").alias("cancellations"),
        F.count_if(~F.col("is_product")).alias("non_products"),
        F.countDistinct("customer_id").alias("customers"),
        F.min("ordered_at").cast("string").alias("first"),
        F.max("ordered_at").cast("string").alias("last"),
        F.max(F.length("customer_id")).alias("id_len")).first()
    # 4,372 customer ids in the export; the one missing here appears only on quarantined lines.
    assert s["customers"] == 4_371 and s["id_len"] == 32
    assert s["guest"] == 132_565           # guest checkouts are sales, kept and flagged
    assert s["cancellations"] == 9_251     # "C" invoices marked, not mixed with sales
    assert s["non_products"] == 2_924      # postage, fees, manual adjustments
    assert (s["first"], s["last"]) == ("2010-12-01 08:26:00", "2011-12-09 12:50:00")
    assert lines.filter((F.col("line_type") == "sale") & (F.col("quantity") <= 0)).count() == 0
    products = tables.read_table(spark, conf, "silver.products")
    assert products.filter(F.col("product_name").isNull()).count() < products.count() * 0.01
