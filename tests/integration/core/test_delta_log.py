"""A table's rows, version and last run id read from its Delta log equal what Spark counts,
through every kind of commit shopsense makes (overwrite, append, MERGE, replaceWhere, DELETE),
across checkpoints, and with deletion vectors; what the log cannot answer exactly is None."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from shopsense.core import delta_log, tables
from shopsense.core.runs import JobRun, read_runs
from shopsense.report.summary import last_run_of, print_tables, table_rows
from tests.integration.core.test_job_context import order_lines


def spark_says(spark, path):
    df = spark.read.format("delta").load(path)
    version = DeltaTable.forPath(spark, path).history(1).first()["version"]
    return df.count(), version, df.agg(F.max("run_id")).first()[0]


def log_says(path):
    snap = delta_log.snapshot(path)
    return snap.rows, snap.version, delta_log.max_value(snap, "run_id")


def lines(spark, first: int, n: int, run_id: str):
    return (order_lines(spark, [dt.date(2024, 1, 1)] * n)
            .withColumn("line_id", F.concat(F.lit("l"), (F.expr("substring(line_id, 2)").cast("int") + first)
                                            .cast("string")))
            .withColumn("run_id", F.lit(run_id)))


def test_the_log_agrees_with_spark_through_every_kind_of_commit(spark, conf):
    path = tables.table_path(conf, "silver.order_lines")
    states = []
    tables.overwrite(lines(spark, 0, 5, "20240101T000000Z-ingest-a"), conf, "silver.order_lines")
    states.append(spark_says(spark, path) == log_says(path))
    # a checkpoint every 2 commits, so the later states are read from a checkpoint plus commits
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.checkpointInterval' = '2')")
    for i in range(1, 4):
        tables.insert_new(spark, lines(spark, 100 * i, 4, f"20240101T00000{i}Z-ingest-b"), conf,
                          "silver.order_lines", "line_id")
        states.append(spark_says(spark, path) == log_says(path))
    tables.replace_where(lines(spark, 1000, 2, "20240102T000000Z-ingest-c"), conf, "silver.order_lines",
                         "line_id LIKE 'l10%'")
    states.append(spark_says(spark, path) == log_says(path))
    DeltaTable.forPath(spark, path).delete("line_id = 'l201'")
    states.append(spark_says(spark, path) == log_says(path))
    assert states == [True] * len(states)
    assert any(p.name.endswith(".checkpoint.parquet") for p in (Path(path) / "_delta_log").iterdir())
    rows, version, last = log_says(path)
    assert (rows, last) == (5 + 12 - 4 + 2 - 1, "20240102T000000Z-ingest-c") and version == 6


def test_deletion_vectors_are_subtracted_and_the_footer_maximum_is_not_trusted(spark, conf):
    path = tables.table_path(conf, "silver.order_lines")
    lines(spark, 0, 6, "r1").coalesce(1).write.format("delta").option("delta.enableDeletionVectors", "true").save(path)
    DeltaTable.forPath(spark, path).delete("line_id IN ('l0', 'l1')")
    snap = delta_log.snapshot(path)
    assert snap.deleted_rows == 2                      # the delete wrote a deletion vector
    assert snap.rows == spark.read.format("delta").load(path).count() == 4
    assert delta_log.max_value(snap, "run_id") is None  # ask Spark instead


def test_remote_tables_and_missing_logs_are_left_to_spark(tmp_path):
    assert delta_log.snapshot("s3a://bucket/warehouse/silver/order_lines") is None
    assert delta_log.snapshot(str(tmp_path / "nothing")) is None


def test_the_table_listing_comes_from_the_logs_without_spark(spark, conf, capsys):
    tables.overwrite(lines(spark, 0, 7, "20240101T000000Z-ingest-a"), conf, "silver.order_lines")
    bronze = spark.createDataFrame([("a", 1), ("b", 2), ("c", None)], "InvoiceNo string, Quantity int")
    tables.overwrite(bronze, conf, "bronze.order_lines_raw")          # no run_id column
    with JobRun(spark, conf, "ingest") as run:
        run.metric("rows_read", 7)
        run.metric("rows_accepted", 7)

    def no_spark():
        pytest.fail("the listing started Spark")
    got = {r["table"]: (r["rows"], r["version"], r["last_run"], r["source"]) for r in table_rows(no_spark, conf)}
    assert got == {"silver.order_lines": (7, 0, "20240101T000000Z-ingest-a", "log"),
                   "bronze.order_lines_raw": (3, 0, None, "log"),
                   "gold.job_runs": (2, 1, run.run_id, "log")}     # the running row and the outcome
    last = last_run_of(no_spark, conf, "ingest")
    expected = read_runs(spark, conf).filter("job = 'ingest'").first()
    assert (last["run_id"], last["status"], last["metrics"]) == (expected["run_id"], "succeeded", expected["metrics"])
    print_tables(no_spark, conf)
    out = capsys.readouterr().out
    assert "Last ingest (succeeded): 7 rows read = 7 accepted" in out
    assert "Order lines:" not in out                                  # no scan without details
