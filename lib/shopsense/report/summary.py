"""What the warehouse holds: every table with its row count, version and last run."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shopsense.core import tables
from shopsense.core.config import Conf, resolve_path

LAYERS = ("bronze", "silver", "gold")


def list_tables(spark: SparkSession, conf: Conf) -> list[str]:
    """Names (``layer.table``) of the Delta tables under the warehouse."""
    jvm = spark.sparkContext._jvm
    root = resolve_path(conf.warehouse).rstrip("/")
    found = []
    for layer in LAYERS:
        path = jvm.org.apache.hadoop.fs.Path(f"{root}/{layer}")
        fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        if not fs.exists(path):
            continue
        for status in fs.listStatus(path):
            name = f"{layer}.{status.getPath().getName()}"
            if status.isDirectory() and tables.table_exists(spark, conf, name):
                found.append(name)
    return sorted(found, key=lambda n: (LAYERS.index(n.split(".")[0]), n))


def table_rows(spark: SparkSession, conf: Conf) -> list[dict]:
    """One dict per table: name, rows, version, path, and the last run_id written into it."""
    out = []
    for name in list_tables(spark, conf):
        df = tables.read_table(spark, conf, name)
        last_run = None
        if "run_id" in df.columns:
            last_run = df.agg(F.max("run_id")).first()[0]
        out.append({"table": name, "rows": df.count(),
                    "version": tables.table_version(spark, conf, name),
                    "last_run": last_run, "path": tables.table_path(conf, name)})
    return out


def print_tables(spark: SparkSession, conf: Conf) -> None:
    """Print where the tables are and what they hold."""
    rows = table_rows(spark, conf)
    root = resolve_path(conf.warehouse)
    if not rows:
        print(f"No tables under {root} yet: run `shopsense demo` or `shopsense run all`.")
        return
    print(f"\nTables under {root}:")
    width = max(len(r["table"]) for r in rows)
    print(f"  {'table':<{width}}  {'rows':>12}  {'version':>7}  last run")
    for r in rows:
        print(f"  {r['table']:<{width}}  {r['rows']:>12,}  {r['version']:>7}  {r['last_run'] or '-'}")
    names = {r["table"] for r in rows}
    if "gold.job_runs" in names:
        runs = (tables.read_table(spark, conf, "gold.job_runs")
                .orderBy(F.desc("started_at")).limit(10).collect())
        ingest = next((r for r in runs if r["job"] == "ingest"), None)
        if ingest is not None and ingest["metrics"]:
            m = ingest["metrics"]
            print(f"\nLast ingest ({ingest['status']}): {m.get('rows_read', 0):,.0f} rows read = "
                  f"{m.get('rows_accepted', 0):,.0f} accepted + {m.get('rows_quarantined', 0):,.0f} "
                  f"quarantined + {m.get('rows_duplicate', 0):,.0f} exact duplicates")
    if "silver.quarantine" in names:
        reasons = (tables.read_table(spark, conf, "silver.quarantine").groupBy("reason").count()
                   .orderBy(F.desc("count")).collect())
        if reasons:
            print("Quarantined rows by reason: " + ", ".join(f"{r['reason']} {r['count']:,}" for r in reasons))
    if "silver.order_lines" in names:
        s = (tables.read_table(spark, conf, "silver.order_lines")
             .agg(F.countDistinct("order_id").alias("orders"),
                  F.countDistinct("customer_id").alias("customers"),
                  F.countDistinct("sku").alias("skus"),
                  F.min("order_date").alias("first"), F.max("order_date").alias("last"),
                  F.count_if(F.col("line_type") != "sale").alias("returns"),
                  F.count_if("is_guest").alias("guest_lines")).first())
        print(f"Order lines: {s['orders']:,} orders, {s['customers']:,} customers, {s['skus']:,} SKUs, "
              f"{s['first']} to {s['last']}; {s['returns']:,} return/cancellation lines, "
              f"{s['guest_lines']:,} guest-checkout lines")
