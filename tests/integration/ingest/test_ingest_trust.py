"""Ingest a data engineer can trust (issue #22), on small hand-made files and slices of the real
Online Retail export: row identity from canonical content, plausibility, records kept whole,
encodings, date formats, nested JSON, pandas Parquet, line totals, catalogue categories,
incremental files, per-source bronze, warehouse keys, stale staging."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import functions as F

from shopsense.core import tables
from shopsense.core.runs import read_runs
from shopsense.ingest import batch as ingest
from tests.helpers import ONLINE_RETAIL

MAPPING = ("{order_id: InvoiceNo, sku: StockCode, product_name: Description, quantity: Quantity, "
           "ordered_at: InvoiceDate, unit_price: UnitPrice, customer_id: CustomerID, country: Country}")
HEADER = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
          "CustomerID", "Country"]


def source_conf(conf_factory, tmp_path, orders: str, *overrides, name: str = "shop", extra: str = ""):
    """A conf whose source ``name`` reads ``orders`` (YAML for the orders entry, indented)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    overlay = tmp_path / f"{name}.yaml"
    overlay.write_text(f"ingest: {{source: {name}}}\nsources:\n  {name}:\n    orders:\n{orders}{extra}")
    return conf_factory(*overrides, files=(overlay,))


def csv_orders(path, *, mapping: str = MAPPING, fmt: str = "csv", extra: str = "") -> str:
    return (f"      path: {path}\n      format: {fmt}\n      cancel_prefix: C\n"
            f"      timestamp_format: \"yyyy-MM-dd HH:mm:ss\"\n      columns: {mapping}\n{extra}")


def metrics(summary):
    return summary["metrics"]


def last_run(spark, conf):
    """The latest run's final record (gold.job_runs also holds each run's ``running`` row, with
    the same started_at: read_runs keeps one row per run)."""
    return read_runs(spark, conf).orderBy(F.desc("started_at")).first()


@pytest.fixture(scope="module")
def retail_slice(tmp_path_factory):
    """The first 3,000 records of the Online Retail export, as the export writes them (the file's
    own lines, unparsed), and the same records read by pandas (all text)."""
    if not ONLINE_RETAIL.exists():
        pytest.skip(f"the Online Retail export is not at {ONLINE_RETAIL}")
    folder = tmp_path_factory.mktemp("retail-slice")
    with gzip.open(ONLINE_RETAIL, "rt", encoding="utf-8", newline="") as src:
        lines = [next(src) for _ in range(3001)]
    path = folder / "orders" / "slice.csv"
    path.parent.mkdir()
    path.write_text("".join(lines), encoding="utf-8")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return path, frame


def retail_conf(conf_factory, tmp_path, path, *overrides, name="online_retail"):
    orders = csv_orders(path, mapping=MAPPING)
    return source_conf(conf_factory, tmp_path, orders, *overrides, name=name)


# --- 1. row identity -----------------------------------------------------------------------------

def test_a_reexport_in_another_format_adds_nothing(spark, tmp_path, conf_factory, retail_slice):
    path, frame = retail_slice
    conf = retail_conf(conf_factory, tmp_path, path.parent)
    first = metrics(ingest.run(spark, conf))
    lines_before = tables.read_table(spark, conf, "silver.order_lines").count()
    assert lines_before == first["rows_accepted"] > 2500

    # The same records written back by pandas: floats for customer ids and prices, columns in
    # another order, one column more, another file name in the same folder.
    again = frame.copy()
    again["CustomerID"] = pd.to_numeric(again["CustomerID"], errors="coerce").map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    again["UnitPrice"] = pd.to_numeric(again["UnitPrice"], errors="coerce").map(lambda v: f"{v:.4f}")
    again["Quantity"] = pd.to_numeric(again["Quantity"], errors="coerce").astype(float)
    again["ExportedBy"] = "pandas"
    again = again[list(reversed(again.columns))]
    again.to_csv(path.parent / "reexport.csv", index=False)
    assert (path.parent / "reexport.csv").read_text() != path.read_text()

    second = metrics(ingest.run(spark, conf))
    assert tables.read_table(spark, conf, "silver.order_lines").count() == lines_before
    assert second["rows_read"] == len(frame)
    # every line of the re-export was there already; duplicates within the file stay duplicates
    assert second["rows_already_present"] == second["rows_accepted"] + second["rows_quarantined"]
    assert second["rows_duplicate"] == first["rows_duplicate"]
    record = last_run(spark, conf)
    assert any("already in silver" in n for n in record["notes"])


def test_declared_natural_key(spark, tmp_path, conf_factory):
    raw = tmp_path / "raw"
    raw.mkdir()
    header = "Invoice,Line,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    (raw / "a.csv").write_text(header + "1,1,A,a,2,2011-01-01 10:00:00,1.0,7,UK\n"
                                        "1,2,A,a,2,2011-01-01 10:00:00,1.0,7,UK\n")
    # the same line 1 corrected later (quantity 3): the natural key says it is the same line
    (raw / "b.csv").write_text(header + "1,1,A,a,3,2011-01-01 10:00:00,1.0,7,UK\n")
    mapping = MAPPING.replace("InvoiceNo", "Invoice")
    conf = source_conf(conf_factory, tmp_path, csv_orders(raw, mapping=mapping,
                                                          extra="      key_columns: [Invoice, Line]\n"))
    m = metrics(ingest.run(spark, conf))
    assert (m["rows_read"], m["rows_accepted"], m["rows_duplicate"]) == (3, 2, 1)


# --- 2. plausibility, as_of and empty outputs ------------------------------------------------------

def test_future_ancient_and_absurd_values_are_quarantined_with_their_reasons(spark, tmp_path, conf_factory):
    raw = tmp_path / "raw"
    raw.mkdir()
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=5 * 365)).strftime("%Y-%m-%d %H:%M:%S")
    rows = [
        ["1", "A", "ok", "2", "2011-01-01 10:00:00", "1.0", "7", "UK"],
        ["2", "A", "future", "2", future, "1.0", "7", "UK"],
        ["3", "A", "ancient", "2", "1899-01-01 10:00:00", "1.0", "7", "UK"],
        ["4", "A", "big qty", "1e12", "2011-01-01 10:00:00", "1.0", "7", "UK"],
        ["5", "A", "big price", "1", "2011-01-01 10:00:00", "1e308", "7", "UK"],
        ["6", "A", "inf qty", "inf", "2011-01-01 10:00:00", "1.0", "7", "UK"],
        ["7", "A", "inf price", "1", "2011-01-01 10:00:00", "Infinity", "7", "UK"],
        ["8", "A", "big total", "900000", "2011-01-01 10:00:00", "999999", "7", "UK"],
    ]
    with open(raw / "orders.csv", "w", newline="") as f:
        csv.writer(f).writerows([HEADER, *rows])
    conf = source_conf(conf_factory, tmp_path, csv_orders(raw))
    m = metrics(ingest.run(spark, conf))
    assert (m["rows_read"], m["rows_accepted"], m["rows_quarantined"]) == (8, 1, 7)
    reasons = dict(tables.read_table(spark, conf, "silver.quarantine")
                   .select("reason", F.get_json_object("raw_values", "$.order_id").alias("o"))
                   .rdd.map(lambda r: (r["o"], r["reason"])).collect())
    assert reasons == {"2": "future_date", "3": "date_before_floor", "4": "implausible_quantity",
                       "5": "implausible_price", "6": "quantity_not_finite",
                       "7": "price_not_finite", "8": "implausible_revenue"}
    silver = tables.read_table(spark, conf, "silver.order_lines")
    assert silver.agg(F.max("ordered_at")).first()[0] == dt.datetime(2011, 1, 1, 10)


def test_as_of_before_the_first_order_and_an_empty_output_are_errors(spark, tmp_path, conf_factory):
    from shopsense.customers import features
    from shopsense.core.runs import EmptyOutputError

    raw = tmp_path / "raw"
    raw.mkdir()
    with open(raw / "orders.csv", "w", newline="") as f:
        csv.writer(f).writerows([HEADER, ["1", "A", "a", "2", "2011-01-01 10:00:00", "1.0", "7", "UK"],
                                 ["2", "P2", "b", "1", "2011-01-10 10:00:00", "2.0", "8", "UK"]])
    conf = source_conf(conf_factory, tmp_path, csv_orders(raw))
    ingest.run(spark, conf)
    features.run(spark, conf)
    version = tables.table_version(spark, conf, "gold.customer_features")
    early = source_conf(conf_factory, tmp_path, csv_orders(raw), "as_of=2010-06-30")
    with pytest.raises(ValueError, match=r"as_of 2010-06-30 is before the first order \(2011-01-01\)"):
        features.run(spark, early)
    assert tables.table_version(spark, conf, "gold.customer_features") == version

    # a 1-day window between the two orders holds no line: an empty output
    empty = source_conf(conf_factory, tmp_path, csv_orders(raw), "as_of=2011-01-05", "features.window_days=1")
    # (guard against a vacuous test: the days around the window hold no line)
    assert tables.read_table(spark, conf, "silver.order_lines").filter(
        "order_date BETWEEN date'2011-01-03' AND date'2011-01-06'").count() == 0
    with pytest.raises(EmptyOutputError, match="gold.customer_features: this run's output is empty"):
        features.run(spark, empty)
    assert tables.read_table(spark, conf, "gold.customer_features").count() == 2
    allowed = source_conf(conf_factory, tmp_path, csv_orders(raw), "as_of=2011-01-05",
                          "features.window_days=1", "allow_empty_output=true")
    features.run(spark, allowed)
    assert tables.read_table(spark, conf, "gold.customer_features").count() == 0


def test_default_as_of_is_the_last_complete_day(spark):
    from shopsense.core.runs import last_complete_day

    day = lambda n: dt.date(2024, 1, 1) + dt.timedelta(days=n)  # noqa: E731
    rows = [(day(n),) for n in range(28) for _ in range(100)] + [(day(28),)] * 5
    lines = spark.createDataFrame(rows, "order_date date")
    assert last_complete_day(lines, 0.25)[0] == day(27)      # 5 lines against a median of 100
    assert last_complete_day(lines, 0.01)[0] == day(28)
    full = spark.createDataFrame(rows + [(day(28),)] * 60, "order_date date")
    taken, why = last_complete_day(full, 0.25)
    assert taken == day(28) and "65 lines" in why


# --- 3. parsing ----------------------------------------------------------------------------------

def test_quoted_newlines_and_malformed_records_stay_whole(spark, tmp_path, conf_factory):
    raw = tmp_path / "raw"
    raw.mkdir()
    good = [["1", "A", "plain", "1", "2011-01-01 10:00:00", "1.0", "17850", "UK"],
            ["2", "B", "two\nlines, and a comma", "2", "2011-01-01 10:00:00", "2.0", "17851", "UK"],
            ["3", "C", 'a "quoted" word', "3", "2011-01-01 10:00:00", "3.0", "17852", "UK"],
            ["4", "D", "three\nlines\nhere", "4", "2011-01-01 10:00:00", "4.0", "17853", "UK"]]
    with open(raw / "orders.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerows([HEADER, *good])
        f.write('5,E,too many fields,1,2011-01-01 10:00:00,1.0,17854,UK,surplus,"more"\n')
        f.write("6,F,too few\n")
    conf = source_conf(conf_factory, tmp_path, csv_orders(raw))
    m = metrics(ingest.run(spark, conf))
    # 6 logical records: 4 accepted whole, 2 malformed kept whole
    assert (m["rows_read"], m["rows_accepted"], m["rows_quarantined"]) == (6, 4, 2)
    names = {r["order_id"]: r["product_name"] for r in tables.read_table(spark, conf, "silver.order_lines").collect()}
    assert names == {"1": "plain", "2": "two\nlines, and a comma", "3": 'a "quoted" word', "4": "three\nlines\nhere"}
    quarantine = tables.read_table(spark, conf, "silver.quarantine").collect()
    assert {r["reason"] for r in quarantine} == {"malformed_record"}
    # a malformed record's content is not copied (it may be misaligned): it points at bronze
    assert all("1785" not in r["raw_values"] for r in quarantine)
    bronze = tables.read_table(spark, conf, "bronze.shop_orders")
    hashes = {json.loads(r["raw_values"])["bronze_row_hash"] for r in quarantine}
    assert bronze.filter(F.col("row_hash").isin(list(hashes))).count() == 2


def test_files_with_different_headers_in_one_run_and_one_lacking_a_column(spark, tmp_path, conf_factory):
    """Two files of one source with their columns in another order (and an extra one) are read
    together in one run; a third whose header lacks a required column stops the run with one
    message naming that file, and the tables stay as they were."""
    raw = tmp_path / "raw"
    raw.mkdir()
    reordered = ["Country", *reversed(HEADER[:-1]), "Extra"]
    with open(raw / "a.csv", "w", newline="") as f:
        csv.writer(f).writerows([HEADER, ["1", "A", "a", "1", "2011-01-01 10:00:00", "1.0", "7", "UK"]])
    with open(raw / "b.csv", "w", newline="") as f:
        row = dict(zip(HEADER, ["2", "B", "b", "2", "2011-01-02 10:00:00", "2.0", "8", "FR"]), Extra="x")
        csv.writer(f).writerows([reordered, [row[c] for c in reordered]])
    conf = source_conf(conf_factory, tmp_path, csv_orders(raw))
    assert metrics(ingest.run(spark, conf))["rows_accepted"] == 2
    lines = {r["order_id"]: (r["sku"], r["quantity"], r["country"], Path(r["source_file"]).name)
             for r in tables.read_table(spark, conf, "silver.order_lines").collect()}
    assert lines == {"1": ("A", 1.0, "UK", "a.csv"), "2": ("B", 2.0, "FR", "b.csv")}

    version = tables.table_version(spark, conf, "silver.order_lines")
    with open(raw / "c.csv", "w", newline="") as f:
        lacking = [c for c in HEADER if c != "Quantity"]
        csv.writer(f).writerows([lacking, ["3", "C", "c", "2011-01-03 10:00:00", "3.0", "9", "UK"]])
    with pytest.raises(ingest.IngestError) as error:
        ingest.run(spark, conf)
    assert "c.csv lacks required column Quantity (for quantity); its header: InvoiceNo," in str(error.value)
    assert tables.table_version(spark, conf, "silver.order_lines") == version


def test_files_that_are_not_csv_text_are_named_with_what_to_set(spark, tmp_path, conf_factory):
    """A file that cannot be the CSV its spec says stops the run before anything is read, with
    one message naming the file and what to set: UTF-16 without a declared encoding, a workbook
    renamed .csv, another delimiter, a header naming a column twice."""
    text = ",".join(HEADER) + "\n1,A,a,1,2011-01-01 10:00:00,1.0,7,UK\n"
    cases = {"utf16": (text.encode("utf-16"), "set encoding: utf-16"),
             "xlsx": (b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)), "ZIP archive"),
             "semicolon": (text.replace(",", ";").encode(), "options: {sep: ';'}"),
             "twice": (text.replace("Country", "Quantity").encode(), "names column Quantity more than once")}
    for name, (content, expected) in cases.items():
        raw = tmp_path / name
        raw.mkdir()
        (raw / "orders.csv").write_bytes(content)
        conf = source_conf(conf_factory, tmp_path / f"conf-{name}", csv_orders(raw),
                           f"warehouse={tmp_path / f'w-{name}'}")
        with pytest.raises(ingest.IngestError) as error:
            ingest.run(spark, conf)
        message = str(error.value)
        assert expected in message and f"/{name}" in message, (name, message)
        assert "\n" not in message
        assert not tables.table_exists(spark, conf, "silver.order_lines")


def test_control_characters_are_undecodable_and_declared_utf16_reads(spark, tmp_path, conf_factory):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [["1", "A", "plain", "1", "2011-01-01 10:00:00", "1.0", "7", "UK"],
            ["2", "B\x00C", "a NUL in the SKU", "1", "2011-01-01 10:00:00", "1.0", "7", "UK"],
            ["3", "D", "a bell\x07", "1", "2011-01-01 10:00:00", "1.0", "7", "UK"],
            ["4", "E", "tab\tinside", "1", "2011-01-01 10:00:00", "1.0", "7", "UK"]]
    with open(raw / "orders.csv", "w", newline="", encoding="utf-16") as f:
        csv.writer(f).writerows([HEADER, *rows])
    conf = source_conf(conf_factory, tmp_path, csv_orders(raw, extra="      encoding: utf-16\n"))
    m = metrics(ingest.run(spark, conf))
    assert (m["rows_accepted"], m["rows_quarantined"]) == (2, 2)
    reasons = {r["reason"] for r in tables.read_table(spark, conf, "silver.quarantine").collect()}
    assert reasons == {"undecodable_text"}
    names = {r["order_id"]: r["product_name"] for r in tables.read_table(spark, conf, "silver.order_lines").collect()}
    assert names == {"1": "plain", "4": "tab\tinside"}


def test_latin1_with_and_without_a_declared_encoding(spark, tmp_path, conf_factory):
    raw = tmp_path / "raw"
    raw.mkdir()
    text = ",".join(HEADER) + "\n1,A,Crème brûlée dish,1,2011-01-01 10:00:00,1.0,7,France\n"
    (raw / "orders.csv").write_bytes(text.encode("latin-1"))
    undeclared = source_conf(conf_factory, tmp_path, csv_orders(raw), name="latin")
    m = metrics(ingest.run(spark, undeclared))
    assert (m["rows_accepted"], m["rows_quarantined"]) == (0, 1)
    assert tables.read_table(spark, undeclared, "silver.quarantine").first()["reason"] == "undecodable_text"

    declared = source_conf(conf_factory, tmp_path / "declared", csv_orders(raw, extra="      encoding: latin-1\n"),
                           "warehouse=" + str(tmp_path / "w2"), name="latin")
    m = metrics(ingest.run(spark, declared))
    assert m["rows_accepted"] == 1
    assert tables.read_table(spark, declared, "silver.order_lines").first()["product_name"] == "Crème brûlée dish"
    # Windows-1252 (beyond the encodings Spark reads by default): the euro sign is 0x80
    (raw / "orders.csv").write_bytes(text.replace("dish", "dish €5").encode("cp1252"))
    cp1252 = source_conf(conf_factory, tmp_path / "cp1252", csv_orders(raw, extra="      encoding: cp1252\n"),
                         "warehouse=" + str(tmp_path / "w3"), name="latin")
    assert metrics(ingest.run(spark, cp1252))["rows_accepted"] == 1
    assert tables.read_table(spark, cp1252, "silver.order_lines").first()["product_name"] == "Crème brûlée dish €5"


def test_several_date_formats(spark, tmp_path, conf_factory):
    raw = tmp_path / "raw"
    raw.mkdir()
    with open(raw / "orders.csv", "w", newline="") as f:
        csv.writer(f).writerows([HEADER, ["1", "A", "a", "1", "2011-01-01 10:00:00", "1.0", "7", "UK"],
                                 ["2", "A", "a", "1", "02/01/2011 11:30", "1.0", "7", "UK"],
                                 ["3", "A", "a", "1", "Jan 3 2011", "1.0", "7", "UK"]])
    orders = csv_orders(raw).replace('timestamp_format: "yyyy-MM-dd HH:mm:ss"',
                                     'timestamp_format: ["yyyy-MM-dd HH:mm:ss", "dd/MM/yyyy HH:mm"]')
    conf = source_conf(conf_factory, tmp_path, orders)
    m = metrics(ingest.run(spark, conf))
    assert (m["rows_accepted"], m["rows_quarantined"]) == (2, 1)
    times = sorted(r[0] for r in tables.read_table(spark, conf, "silver.order_lines").select("ordered_at").collect())
    assert times == [dt.datetime(2011, 1, 1, 10), dt.datetime(2011, 1, 2, 11, 30)]
    assert tables.read_table(spark, conf, "silver.quarantine").first()["reason"] == "unparsable_date"


def test_nested_json_through_dotted_paths(spark, tmp_path, conf_factory):
    raw = tmp_path / "raw"
    raw.mkdir()
    records = [{"id": "1", "placed": "2011-01-01 10:00:00", "customer": {"id": 7, "email": "a@b.c"},
                "item": {"sku": "A", "qty": 2, "price": {"amount": 1.5}}},
               {"id": "2", "placed": "2011-01-01 11:00:00", "customer": {"id": None},
                "item": {"sku": "B", "qty": 1, "price": {"amount": 4.0}}}]
    (raw / "orders.json").write_text("\n".join(json.dumps(r) for r in records) + "\n{not json\n")
    mapping = ("{order_id: id, ordered_at: placed, customer_id: customer.id, sku: item.sku, "
               "quantity: item.qty, unit_price: item.price.amount}")
    conf = source_conf(conf_factory, tmp_path, csv_orders(raw, mapping=mapping, fmt="json"))
    m = metrics(ingest.run(spark, conf))
    assert (m["rows_read"], m["rows_accepted"], m["rows_quarantined"]) == (3, 2, 1)
    rows = {r["order_id"]: r for r in tables.read_table(spark, conf, "silver.order_lines").collect()}
    assert (rows["1"]["sku"], rows["1"]["quantity"], rows["1"]["unit_price"]) == ("A", 2.0, 1.5)
    assert rows["1"]["customer_id"] is not None and rows["2"]["is_guest"]
    assert tables.read_table(spark, conf, "silver.quarantine").first()["reason"] == "malformed_record"


def test_pandas_parquet_with_nanosecond_timestamps(spark, tmp_path, conf_factory):
    raw = tmp_path / "raw"
    raw.mkdir()
    frame = pd.DataFrame({"order_id": ["1", "2"], "sku": ["A", "B"], "quantity": [2, 1],
                          "unit_price": [1.5, 2.0], "customer_id": ["7", None],
                          "ordered_at": pd.to_datetime(["2011-01-01 10:00:00.123456789", "2011-01-02 09:00:00.000000000"])})
    frame.to_parquet(raw / "orders.parquet", coerce_timestamps=None, allow_truncated_timestamps=False)
    import pyarrow.parquet as pq
    assert "ns" in str(pq.read_schema(raw / "orders.parquet").field("ordered_at").type)
    conf = source_conf(conf_factory, tmp_path, f"      path: {raw}\n      format: parquet\n")
    m = metrics(ingest.run(spark, conf))
    assert (m["rows_read"], m["rows_accepted"]) == (2, 2)
    times = sorted(r[0] for r in tables.read_table(spark, conf, "silver.order_lines").select("ordered_at").collect())
    assert times == [dt.datetime(2011, 1, 1, 10, 0, 0, 123456), dt.datetime(2011, 1, 2, 9)]


# --- 7. what the catalogue and the export give ------------------------------------------------------

def test_line_totals_give_unit_prices(spark, tmp_path, conf_factory):
    raw = tmp_path / "raw"
    raw.mkdir()
    with open(raw / "orders.csv", "w", newline="") as f:
        csv.writer(f).writerows([["order", "product", "units", "total", "at", "customer"],
                                 ["1", "A", "4", "10.00", "2011-01-01 10:00:00", "7"],
                                 ["C2", "A", "-2", "-5.00", "2011-01-02 10:00:00", "7"],
                                 ["3", "B", "0", "3.00", "2011-01-02 10:00:00", "8"]])
    mapping = "{order_id: order, sku: product, quantity: units, revenue: total, ordered_at: at, customer_id: customer}"
    conf = source_conf(conf_factory, tmp_path, csv_orders(raw, mapping=mapping))
    m = metrics(ingest.run(spark, conf))
    assert (m["rows_accepted"], m["rows_quarantined"]) == (2, 1)
    got = sorted((r["order_id"], r["unit_price"], r["revenue"])
                 for r in tables.read_table(spark, conf, "silver.order_lines").collect())
    assert got == [("1", 2.5, 10.0), ("C2", 2.5, -5.0)]


def test_catalogue_categories_reach_order_lines_features_and_category_rules(spark, tmp_path, conf_factory):
    from shopsense.baskets import rules
    from shopsense.customers import features

    raw = tmp_path / "raw"
    (raw / "orders").mkdir(parents=True)
    rows = [HEADER]
    for order in range(40):   # baskets of two departments, so category rules have support
        for sku in ("A1", "B1") if order % 2 else ("A2", "B2"):
            rows.append([str(order), sku, "", "1", f"2011-01-{1 + order % 28:02d} 10:00:00", "1.0",
                         str(100 + order % 10), "UK"])
    with open(raw / "orders" / "orders.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with open(raw / "catalogue.csv", "w", newline="") as f:
        csv.writer(f).writerows([["sku", "name", "department"], ["A1", "apple", "fruit"],
                                 ["A2", "pear", "fruit"], ["B1", "bread", "bakery"], ["B2", "bun", "bakery"]])
    extra = (f"    catalogue:\n      path: {raw / 'catalogue.csv'}\n      format: csv\n"
             f"      columns: {{sku: sku, product_name: name, category: department}}\n")
    conf = source_conf(conf_factory, tmp_path, csv_orders(raw / "orders"), "basket_rules.level=category",
                       "basket_rules.min_support=0.1", extra=extra)
    ingest.run(spark, conf)
    lines = tables.read_table(spark, conf, "silver.order_lines")
    assert dict(lines.groupBy("category").count().collect()) == {"fruit": 40, "bakery": 40}
    assert lines.filter("sku = 'A1'").first()["product_name"] == "apple"
    features.run(spark, conf)
    distinct = [r[0] for r in tables.read_table(spark, conf, "gold.customer_features")
                .select("distinct_categories").collect()]
    assert distinct and all(d == 2 for d in distinct)
    rules.run(spark, conf)
    mined = tables.read_table(spark, conf, "gold.association_rules").collect()
    assert {(tuple(r["antecedent"]), tuple(r["consequent"])) for r in mined} == {
        (("bakery",), ("fruit",)), (("fruit",), ("bakery",))}


# --- 4. incremental by file ----------------------------------------------------------------------

def test_a_changed_file_replaces_its_own_rows(spark, tmp_path, conf_factory):
    raw = tmp_path / "raw"
    raw.mkdir()
    write = lambda name, rows: (raw / name).write_text(  # noqa: E731
        "\n".join([",".join(HEADER), *[",".join(r) for r in rows]]) + "\n")
    write("day1.csv", [["1", "A", "a", "1", "2011-01-01 10:00:00", "1.0", "7", "UK"],
                       ["2", "B", "b", "1", "2011-01-01 11:00:00", "1.0", "7", "UK"]])
    write("day2.csv", [["3", "C", "c", "1", "2011-01-02 10:00:00", "1.0", "7", "UK"]])
    conf = source_conf(conf_factory, tmp_path, csv_orders(raw))
    ingest.run(spark, conf)
    # day 1 is exported again with order 2 corrected and order 4 added; day 2 untouched
    write("day1.csv", [["1", "A", "a", "1", "2011-01-01 10:00:00", "1.0", "7", "UK"],
                       ["2", "B", "b", "5", "2011-01-01 11:00:00", "1.0", "7", "UK"],
                       ["4", "D", "d", "1", "2011-01-01 12:00:00", "1.0", "7", "UK"]])
    os.utime(raw / "day1.csv", (1e9, 1e9))
    m = metrics(ingest.run(spark, conf))
    assert (m["rows_read"], m["files"], m["files_changed"], m["files_unchanged"]) == (3, 1, 1, 1)
    got = sorted((r["order_id"], r["quantity"]) for r in tables.read_table(spark, conf, "silver.order_lines").collect())
    assert got == [("1", 1.0), ("2", 5.0), ("3", 1.0), ("4", 1.0)]
    assert tables.read_table(spark, conf, "bronze.shop_orders").count() == 4
    entries = tables.read_table(spark, conf, "silver.ingested_files").collect()
    assert sorted((Path(r["path"]).name, r["records"]) for r in entries) == [("day1.csv", 3), ("day2.csv", 1)]
    # touched but unchanged content: not read again
    os.utime(raw / "day2.csv", (2e9, 2e9))
    assert metrics(ingest.run(spark, conf))["rows_read"] == 0


# --- 5. per-source bronze, the demo then Online Retail -----------------------------------------------

def test_the_demo_then_online_retail_in_the_same_warehouse(spark, tmp_path, conf_factory, quick_pipeline,
                                                           retail_slice):
    quick, _ = quick_pipeline
    warehouse = tmp_path / "warehouse"
    shutil.copytree(quick.warehouse, warehouse)
    path, frame = retail_slice
    conf = retail_conf(conf_factory, tmp_path, path, f"warehouse={warehouse}")
    m = metrics(ingest.run(spark, conf))
    assert m["rows_read"] == len(frame)
    assert tables.table_exists(spark, conf, "bronze.sample_orders")
    assert tables.read_table(spark, conf, "bronze.online_retail_orders").count() == len(frame)
    sources = {r[0] for r in tables.read_table(spark, conf, "silver.order_lines")
               .select(F.when(F.col("source_file").contains("slice.csv"), "retail").otherwise("sample")).distinct().collect()}
    assert sources == {"retail", "sample"}


# --- 6. keys that protect ----------------------------------------------------------------------------

def test_each_warehouse_has_its_own_key_and_keeps_it(spark, tmp_path, conf_factory, retail_slice, monkeypatch):
    monkeypatch.delenv("SHOPSENSE_PSEUDONYM_KEY", raising=False)
    path, _ = retail_slice

    def pseudonyms(conf):
        lines = tables.read_table(spark, conf, "silver.order_lines")
        return {r["order_id"]: r["customer_id"] for r in lines.filter("NOT is_guest").collect()}

    a = retail_conf(conf_factory, tmp_path / "a", path, f"warehouse={tmp_path / 'a' / 'warehouse'}")
    b = retail_conf(conf_factory, tmp_path / "b", path, f"warehouse={tmp_path / 'b' / 'warehouse'}")
    ingest.run(spark, a)
    ingest.run(spark, b)
    in_a, in_b = pseudonyms(a), pseudonyms(b)
    assert in_a.keys() == in_b.keys() and not set(in_a.values()) & set(in_b.values())
    key_file = tmp_path / "a" / "warehouse" / "_secrets" / "pseudonym.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert (key_file.parent.stat().st_mode & 0o777) == 0o700
    assert json.loads(last_run(spark, a)["parameters"])["pseudonym_key"] == "warehouse"
    # the same warehouse, a fresh run over every file: the same pseudonyms
    shutil.rmtree(tmp_path / "a" / "warehouse" / "silver")
    ingest.run(spark, a)
    assert pseudonyms(a) == in_a
    # no raw customer id of the slice in silver or quarantine
    raw_ids = {v for v in pd.read_csv(path, dtype=str)["CustomerID"].dropna()}
    quarantined = " ".join(r["raw_values"] for r in tables.read_table(spark, a, "silver.quarantine").collect())
    assert not {i.removesuffix(".0") for i in raw_ids} & set(in_a.values())
    assert not any(i in quarantined for i in raw_ids)


def test_staging_left_by_a_killed_run_is_removed(spark, tmp_path, conf_factory):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "orders.csv").write_text(",".join(HEADER) + "\n1,A,a,1,2011-01-01 10:00:00,1.0,7,UK\n")
    conf = source_conf(conf_factory, tmp_path, csv_orders(raw))
    stale = Path(conf.warehouse) / "_staging" / "20200101T000000Z-ingest-dead"
    (stale / "raw").mkdir(parents=True)
    (stale / "raw" / "part-0.parquet").write_text("raw rows")
    import socket
    (stale / "_owner").write_text(f"{socket.gethostname()} 999999999\n")   # no such process
    summary = ingest.run(spark, conf)
    assert not stale.exists()
    assert any("staging folder" in n for n in summary["notes"])
