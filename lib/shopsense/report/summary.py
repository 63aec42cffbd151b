"""What the warehouse holds: every table with its row count, version and last run.

The listing comes from each table's Delta log (:mod:`shopsense.core.delta_log`): the version,
the rows its files hold (``numRecords``) and the last run id (the Parquet footers' maximum of
``run_id``), with no Spark job and no scan; the last ingest comes from gold.job_runs' files the
same way. A table whose log cannot answer exactly (a remote warehouse, say) is counted with
Spark as before, and only that one. ``spark`` may be a session or a function that builds one:
on a local warehouse whose logs answer everything, no session is started at all.
"""

from __future__ import annotations

import os
from typing import Callable, Union

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shopsense.core import delta_log, tables
from shopsense.core.config import Conf, resolve_path

LAYERS = ("bronze", "silver", "gold")

Session = Union[SparkSession, Callable[[], SparkSession]]


def _session(spark: Session) -> SparkSession:
    return spark if isinstance(spark, SparkSession) else spark()


def list_tables(spark: Session, conf: Conf) -> list[str]:
    """Names (``layer.table``) of the Delta tables under the warehouse (a local one is listed
    without Spark)."""
    root = resolve_path(conf.warehouse).rstrip("/")
    local = delta_log.local_path(root)
    found = []
    if local is not None:
        for layer in LAYERS:
            folder = os.path.join(local, layer)
            entries = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
            found += [f"{layer}.{e}" for e in entries if os.path.isdir(os.path.join(folder, e, "_delta_log"))]
        return sorted(found, key=lambda n: (LAYERS.index(n.split(".")[0]), n))
    spark = _session(spark)
    jvm = spark.sparkContext._jvm
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


def table_rows(spark: Session, conf: Conf) -> list[dict]:
    """One dict per table: name, rows, version, path, the last run_id written into it (the
    largest), and ``source``: ``log`` when the Delta log gave the figures, ``scan`` when Spark
    counted the table."""
    out = []
    for name in list_tables(spark, conf):
        path = tables.table_path(conf, name)
        snap = delta_log.snapshot(path)
        last_run = delta_log.max_value(snap, "run_id") if snap is not None else None
        if snap is not None and (last_run is not None or "run_id" not in snap.columns or snap.rows == 0):
            out.append({"table": name, "rows": snap.rows, "version": snap.version,
                        "last_run": last_run, "path": path, "source": "log"})
            continue
        session = _session(spark)
        df = tables.read_table(session, conf, name)
        if "run_id" in df.columns:
            last_run = df.agg(F.max("run_id")).first()[0]
        out.append({"table": name, "rows": df.count(),
                    "version": tables.table_version(session, conf, name),
                    "last_run": last_run, "path": path, "source": "scan"})
    return out


def last_run_of(spark: Session, conf: Conf, job: str) -> dict | None:
    """The latest state of ``job``'s last run (by start) in gold.job_runs, or None: read from the
    table's files when its log allows (see :func:`shopsense.core.delta_log.read_columns`),
    otherwise with Spark (:func:`shopsense.core.runs.read_runs`)."""
    from shopsense.core.runs import RUNNING, read_runs

    snap = delta_log.snapshot(tables.table_path(conf, "gold.job_runs"))
    wanted = ["run_id", "job", "status", "started_at", "metrics", "recorded_at"]
    log = delta_log.read_columns(snap, wanted) if snap is not None else None
    if log is None:
        rows = (read_runs(_session(spark), conf).filter(F.col("job") == job)
                .orderBy(F.desc("started_at")).limit(1).collect())
        return rows[0].asDict() if rows else None
    runs = [r for r in log if r["job"] == job]
    if not runs:
        return None
    last = max(runs, key=lambda r: r["started_at"])["run_id"]
    states = [r for r in runs if r["run_id"] == last]
    # as read_runs: an outcome wins over the running row, then the last recorded
    state = max(states, key=lambda r: (r["status"] != RUNNING, str(r["recorded_at"] or "")))
    state["metrics"] = dict(state["metrics"] or {})
    return state


def print_tables(spark: Session, conf: Conf, details: bool = False) -> None:
    """Print where the tables are and what they hold (from the Delta logs), and the last
    ingest's reconciliation; with ``details`` also the quarantine's reasons and what the order
    lines hold (these two scan their tables)."""
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
        ingest = last_run_of(spark, conf, "ingest")
        if ingest is not None and ingest["metrics"]:
            m = ingest["metrics"]
            print(f"\nLast ingest ({ingest['status']}): {m.get('rows_read', 0):,.0f} rows read = "
                  f"{m.get('rows_accepted', 0):,.0f} accepted + {m.get('rows_quarantined', 0):,.0f} "
                  f"quarantined + {m.get('rows_duplicate', 0):,.0f} exact duplicates")
    if not details:
        return
    spark = _session(spark)
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
