"""The ingest job on files: accounting, quarantine, idempotency, increments, failures."""

import gzip
import json

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopsense.ingest import batch as ingest
from shopsense.core import tables
from shopsense.core.runs import read_runs
from shopsense.core.config import ConfigError

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
DAY1 = [
    "536365,85123A,WHITE HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
    "536365,71053,WHITE LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom",
    "536365,71053,WHITE LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom",   # duplicate
    "536366,22633,HAND WARMER,6,2010-12-01 08:28:00,1.85,,United Kingdom",             # guest sale
    "C536379,D,Discount,-1,2010-12-01 09:41:00,27.50,14527.0,United Kingdom",          # cancellation
    "536367,84879,BIRD,32,01/12/2010 08:34,1.69,13047.0,United Kingdom",               # bad date
    "536368,22960,JAM,six,2010-12-01 08:34:00,4.25,13047.0,United Kingdom",            # text quantity
    ",22913,RED COAT,3,2010-12-01 08:34:00,4.95,13047.0,United Kingdom",               # no order id
    "536369,,RED COAT,3,2010-12-01 08:34:00,4.95,13047.0,United Kingdom",              # no sku
    "536370,22912,YELLOW COAT,3,2010-12-01 08:34:00,-4.95,13047.0,United Kingdom",     # negative price
    "536371,POST,POSTAGE,2,2010-12-01 08:45:00,18.00,12583.0,France",                  # not a product
]
DAY2 = [
    "536400,85123A,WHITE HEART,12,2010-12-02 10:00:00,2.55,17850.0,United Kingdom",
    "536401,21730,GLASS LANTERN,1,2010-12-02 11:00:00,4.25,,United Kingdom",
]


def write_csv(path, lines, gz=False, header=HEADER):
    text = "\n".join([header, *lines]) + "\n" if header else "\n".join(lines)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def shop_conf(conf_factory, tmp_path, orders_path, *overrides, fmt="csv", extra=""):
    overlay = tmp_path / "shop.yaml"
    overlay.write_text(f"""
ingest: {{source: shop}}
sources:
  shop:
    orders:
      path: {orders_path}
      format: {fmt}
      timestamp_format: "yyyy-MM-dd HH:mm:ss"
      cancel_prefix: C
      columns: {{order_id: InvoiceNo, sku: StockCode, product_name: Description, quantity: Quantity,
                ordered_at: InvoiceDate, unit_price: UnitPrice, customer_id: CustomerID, country: Country}}
{extra}""")
    return conf_factory(*overrides, files=(overlay,))


@pytest.fixture
def shop(tmp_path, conf_factory):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_csv(raw / "day1.csv", DAY1)
    return raw, shop_conf(conf_factory, tmp_path, raw)


def run_record(spark, conf):
    return (read_runs(spark, conf).orderBy(F.desc("started_at")).first())


def test_every_row_is_accounted_for(spark, shop):
    raw, conf = shop
    summary = ingest.run(spark, conf)
    m = summary["metrics"]
    assert (m["rows_read"], m["rows_accepted"], m["rows_quarantined"], m["rows_duplicate"]) == (11, 5, 5, 1)

    reasons = tables.read_table(spark, conf, "silver.quarantine").groupBy("reason").count()
    assertDataFrameEqual(reasons, spark.createDataFrame(
        [("unparsable_date", 1), ("quantity_not_numeric", 1), ("missing_order_id", 1),
         ("missing_sku", 1), ("non_positive_price", 1)], "reason string, count bigint"))

    lines = tables.read_table(spark, conf, "silver.order_lines")
    got = lines.select("order_id", "sku", "quantity", "line_type", "is_guest", "is_product")
    assertDataFrameEqual(got, spark.createDataFrame([
        ("536365", "85123A", 6.0, "sale", False, True),
        ("536365", "71053", 6.0, "sale", False, True),
        ("536366", "22633", 6.0, "sale", True, True),
        ("C536379", "D", -1.0, "cancellation", False, False),
        ("536371", "POST", 2.0, "sale", False, False),
    ], "order_id string, sku string, quantity double, line_type string, is_guest boolean, "
       "is_product boolean"))
    # Pseudonymised: 32 hex digits, the raw id nowhere in silver.
    ids = [r[0] for r in lines.select("customer_id").distinct().collect() if r[0]]
    assert len(ids) == 3 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert "17850" not in " ".join(r["raw_values"] for r in tables.read_table(spark, conf, "silver.quarantine").collect())

    bronze = tables.read_table(spark, conf, "bronze.shop_orders")
    assert bronze.count() == 11 and {"InvoiceNo", "source_file", "row_hash", "run_id"} <= set(bronze.columns)

    record = run_record(spark, conf)
    assert record["status"] == "succeeded" and record["rows_in"] == 11 and record["rows_out"] == 5
    # a real source without SHOPSENSE_PSEUDONYM_KEY in local mode: the warehouse's own key
    assert json.loads(record["parameters"])["pseudonym_key"] == "warehouse"
    assert any("warehouse's own random key" in n for n in record["notes"])
    products = tables.read_table(spark, conf, "silver.products")
    assert products.filter("sku = '71053'").first()["product_name"] == "WHITE LANTERN"


def test_rerun_on_the_same_files_changes_nothing(spark, shop):
    raw, conf = shop
    ingest.run(spark, conf)
    first = {t: tables.read_table(spark, conf, t).cache() for t in ("silver.order_lines", "silver.quarantine")}
    for df in first.values():
        df.count()
    versions = {t: tables.table_version(spark, conf, t) for t in first}
    again = ingest.run(spark, conf)
    assert again["metrics"]["rows_read"] == 0 and any("nothing read" in n for n in again["notes"])
    for name, before in first.items():
        assertDataFrameEqual(tables.read_table(spark, conf, name), before)
    assert tables.read_table(spark, conf, "bronze.shop_orders").count() == 11
    products = tables.read_table(spark, conf, "silver.products").drop("run_id", "computed_at")
    assert products.count() == 5
    assert all(tables.table_version(spark, conf, t) >= v for t, v in versions.items())


def test_a_new_days_file_adds_only_its_rows(spark, shop):
    raw, conf = shop
    first = ingest.run(spark, conf)
    write_csv(raw / "day2.csv", DAY2)
    second = ingest.run(spark, conf)
    # only the new file is read (silver.ingested_files knows day 1), and only its rows are new
    assert (second["metrics"]["rows_read"], second["metrics"]["files_unchanged"]) == (2, 1)
    lines = tables.read_table(spark, conf, "silver.order_lines")
    assert lines.count() == 7
    by_run = dict(lines.groupBy("run_id").count().collect())
    assert by_run == {first["run_id"]: 5, second["run_id"]: 2}
    assert tables.read_table(spark, conf, "bronze.shop_orders").count() == 13


def test_missing_column_stops_before_writing_and_keeps_previous_tables(spark, shop, tmp_path, conf_factory):
    raw, conf = shop
    ingest.run(spark, conf)
    version = tables.table_version(spark, conf, "silver.order_lines")
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    write_csv(bad_dir / "x.csv", DAY2, header=HEADER.replace("StockCode", "Stock Code"))
    bad = shop_conf(conf_factory, tmp_path, bad_dir)
    with pytest.raises(ingest.IngestError, match=r"x\.csv lacks required column StockCode \(for sku\); "
                                                 r"its header: InvoiceNo, Stock Code"):
        ingest.run(spark, bad)
    assert tables.table_version(spark, conf, "silver.order_lines") == version
    assert tables.read_table(spark, conf, "silver.order_lines").count() == 5
    failed = run_record(spark, conf)
    assert failed["status"] == "failed" and "StockCode" in failed["error"]


def test_empty_and_header_only_files(spark, tmp_path, conf_factory):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "empty.csv").write_text("")
    conf = shop_conf(conf_factory, tmp_path, raw)
    with pytest.raises(ingest.IngestError, match=r"input file .*empty\.csv is empty"):
        ingest.run(spark, conf)
    assert not tables.table_exists(spark, conf, "silver.order_lines")
    (raw / "empty.csv").unlink()
    write_csv(raw / "header_only.csv", [])
    summary = ingest.run(spark, conf)
    assert summary["metrics"]["rows_read"] == 0 and summary["metrics"]["rows_accepted"] == 0


def test_no_matching_files_is_one_clear_error(spark, tmp_path, conf_factory):
    conf = shop_conf(conf_factory, tmp_path, tmp_path / "nowhere" / "*.csv")
    with pytest.raises(ingest.IngestError, match="no input files match .*nowhere"):
        ingest.run(spark, conf)


def test_unreadable_gzip_stops_before_writing(spark, tmp_path, conf_factory):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "orders.csv.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not gzip data at all")
    conf = shop_conf(conf_factory, tmp_path, raw)
    with pytest.raises(Exception):
        ingest.run(spark, conf)
    assert not tables.table_exists(spark, conf, "silver.order_lines")
    assert not tables.table_exists(spark, conf, "bronze.shop_orders")


def test_json_source_through_mapping(spark, tmp_path, conf_factory):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [{"InvoiceNo": "1", "StockCode": "A", "Description": "a", "Quantity": 2,
             "InvoiceDate": "2024-01-02 10:00:00", "UnitPrice": 1.5, "CustomerID": 7, "Country": "DE",
             "Email": "someone@example.com"},
            {"InvoiceNo": "2", "StockCode": "B", "Description": "b", "Quantity": "x",
             "InvoiceDate": "2024-01-02 10:00:00", "UnitPrice": 1.5, "CustomerID": None, "Country": "DE"}]
    (raw / "orders.json").write_text("\n".join(json.dumps(r) for r in rows))
    conf = shop_conf(conf_factory, tmp_path, raw, fmt="json")
    m = ingest.run(spark, conf)["metrics"]
    assert (m["rows_read"], m["rows_accepted"], m["rows_quarantined"]) == (2, 1, 1)
    silver = tables.read_table(spark, conf, "silver.order_lines")
    assert "Email" not in silver.columns  # unmapped personal data never passes silver
    assert silver.first()["quantity"] == 2.0


def test_pseudonym_key_required_outside_local_mode(spark, shop, monkeypatch, conf_factory, tmp_path):
    raw, _ = shop
    monkeypatch.delenv("SHOPSENSE_PSEUDONYM_KEY", raising=False)
    conf = shop_conf(conf_factory, tmp_path, raw, "spark.master=null")  # as under spark-submit
    assert not conf.is_local
    with pytest.raises(ingest.IngestError, match="SHOPSENSE_PSEUDONYM_KEY is not set"):
        ingest.run(spark, conf)
    assert not tables.table_exists(spark, conf, "silver.order_lines")
    monkeypatch.setenv("SHOPSENSE_PSEUDONYM_KEY", "a-real-secret")
    summary = ingest.run(spark, conf)
    assert json.loads(run_record(spark, conf)["parameters"])["pseudonym_key"] == "environment"
    assert summary["notes"] == ["no product catalogue: silver.products derived from order lines "
                                "(latest name, median sale price; costs and lead times empty)",
                                "no inventory snapshot: silver.inventory not written",
                                "the source has no events file: silver.events not written"]


def test_invalid_conf_is_refused_before_spark(conf_factory):
    with pytest.raises(ConfigError, match="unknown key 'ingest.sourc'"):
        conf_factory("ingest.sourc=x")
