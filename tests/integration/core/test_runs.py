"""The run record in gold.job_runs: a run is ``running`` from its start, then its outcome; a run
killed with SIGKILL stays ``running`` until the next run finds its process gone and marks it
``abandoned``; a gold.job_runs table from before these columns gains them on the next run."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from pyspark.sql import types as T

from shopsense.core import tables
from shopsense.core.runs import JobRun, read_runs
from shopsense.customers import features
from tests.helpers import REPO, TEST_OVERLAY
from tests.integration.core.test_job_context import order_lines

D = dt.date

#: gold.job_runs as the code before running rows wrote it (13 columns, no host, pid, recorded_at).
OLD_JOB_RUNS = T.StructType([
    T.StructField("run_id", T.StringType(), False),
    T.StructField("job", T.StringType(), False),
    T.StructField("status", T.StringType(), False),
    T.StructField("started_at", T.TimestampType(), False),
    T.StructField("ended_at", T.TimestampType(), False),
    T.StructField("duration_s", T.DoubleType(), False),
    T.StructField("parameters", T.StringType(), False),
    T.StructField("input_versions", T.MapType(T.StringType(), T.LongType()), True),
    T.StructField("rows_in", T.LongType(), True),
    T.StructField("rows_out", T.LongType(), True),
    T.StructField("metrics", T.MapType(T.StringType(), T.DoubleType()), True),
    T.StructField("notes", T.ArrayType(T.StringType()), True),
    T.StructField("error", T.StringType(), True),
])


def log_rows(spark, conf, run_id):
    return (tables.read_table(spark, conf, "gold.job_runs").filter(f"run_id = '{run_id}'")
            .orderBy("recorded_at").collect())


def test_a_run_is_running_from_its_start_then_records_its_outcome(spark, conf):
    with JobRun(spark, conf, "probe") as run:
        during = log_rows(spark, conf, run.run_id)
        assert [(r["status"], r["host"], r["pid"], r["ended_at"]) for r in during] == [
            ("running", socket.gethostname(), os.getpid(), None)]
        assert read_runs(spark, conf).filter(f"run_id = '{run.run_id}'").first()["status"] == "running"
        run.metric("answer", 42)
    after = log_rows(spark, conf, run.run_id)
    assert [r["status"] for r in after] == ["running", "succeeded"]
    assert after[1]["metrics"] == {"answer": 42.0} and after[1]["ended_at"] is not None
    with pytest.raises(ZeroDivisionError):
        with JobRun(spark, conf, "probe") as failing:
            1 / 0
    latest = {r["run_id"]: r for r in read_runs(spark, conf).collect()}
    assert {k: v["status"] for k, v in latest.items()} == {run.run_id: "succeeded", failing.run_id: "failed"}
    assert latest[failing.run_id]["error"] == "ZeroDivisionError: division by zero"


def test_an_old_job_runs_table_gains_the_new_columns(spark, conf):
    old = spark.createDataFrame([{
        "run_id": "20240101T000000Z-features-00000000", "job": "features", "status": "succeeded",
        "started_at": dt.datetime(2024, 1, 1), "ended_at": dt.datetime(2024, 1, 1, 0, 1),
        "duration_s": 60.0, "parameters": "{}", "input_versions": {"silver.order_lines": 0},
        "rows_in": 5, "rows_out": 2, "metrics": {}, "notes": [], "error": None}], OLD_JOB_RUNS)
    old.write.format("delta").save(tables.table_path(conf, "gold.job_runs"))
    with JobRun(spark, conf, "probe") as run:
        pass
    log = tables.read_table(spark, conf, "gold.job_runs")
    assert log.columns == tables.JOB_RUNS.names
    assert log.count() == 3       # the old row, this run's running row and its outcome
    latest = {r["run_id"]: r for r in read_runs(spark, conf).collect()}
    old_run = latest["20240101T000000Z-features-00000000"]
    assert (old_run["status"], old_run["rows_out"], old_run["host"], old_run["pid"]) == ("succeeded", 2, None, None)
    assert latest[run.run_id]["status"] == "succeeded"


def _features_process(warehouse, log):
    """`shopsense run features` on ``warehouse`` in its own process group (driver and JVM)."""
    args = [sys.executable, "-m", "shopsense.cli", "run", "features", "--conf",
            str(REPO / "conf" / "local.yaml"), "--conf", str(TEST_OVERLAY),
            "--set", f"warehouse={warehouse}", "--set", "spark.master=local[1]"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "lib"), str(REPO)])}
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log.open("w"), cwd=REPO,
                            env=env, start_new_session=True)


@pytest.mark.slow
def test_a_killed_run_shows_as_running_and_the_next_run_marks_it_abandoned(spark, conf, tmp_path):
    days = [D(2024, 3, 1) + dt.timedelta(days=i) for i in range(30)]
    tables.overwrite(order_lines(spark, days), conf, "silver.order_lines")
    log = tmp_path / "features.log"
    proc = _features_process(conf["warehouse"], log)
    deadline = time.monotonic() + 300
    while "features: started" not in log.read_text():
        assert proc.poll() is None, f"the job ended before it could be killed:\n{log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the job to start"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert "features: succeeded" not in log.read_text()

    killed = read_runs(spark, conf).filter("job = 'features'").collect()
    assert [(r["status"], r["pid"], r["host"]) for r in killed] == [("running", proc.pid, socket.gethostname())]

    summary = features.run(spark, conf)     # the next run in this warehouse
    runs = {r["run_id"]: r for r in read_runs(spark, conf).collect()}
    assert runs[killed[0]["run_id"]]["status"] == "abandoned"
    assert f"its process ({proc.pid} on {socket.gethostname()}) ended" in runs[killed[0]["run_id"]]["error"]
    assert summary["run_id"] in runs[killed[0]["run_id"]]["error"]
    assert runs[summary["run_id"]]["status"] == "succeeded"
    assert any(killed[0]["run_id"] in n for n in runs[summary["run_id"]]["notes"])
    # the abandoned run is marked once: a later run finds nothing left running
    with JobRun(spark, conf, "probe") as later:
        pass
    assert not any("abandoned" in n for n in later.notes)
    assert read_runs(spark, conf).filter("status = 'abandoned'").count() == 1
