"""The pipeline end to end on the quick sample: every job, the failure rules, and a pipeline
killed in the middle of a job then run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from shopsense.core import tables
from shopsense.core.runs import read_runs
from shopsense.pipeline import PIPELINE, run_jobs
from shopsense.report.summary import list_tables
from tests.helpers import REPO, make_conf, quick_cli_args, quick_conf

pytestmark = pytest.mark.slow

#: Every table a full run writes.
GOLD = ["gold.customer_features", "gold.customer_segments", "gold.segment_profiles",
        "gold.rfm_segments", "gold.segment_transitions", "gold.segment_mix", "gold.customer_value",
        "gold.customer_value_metrics", "gold.purchase_propensity", "gold.propensity_metrics",
        "gold.propensity_curves", "gold.journey_funnel", "gold.journey_transitions",
        "gold.association_rules", "gold.frequently_bought_together", "gold.sku_daily_demand",
        "gold.demand_forecast", "gold.forecast_accuracy", "gold.forecast_accuracy_summary",
        "gold.recommendations", "gold.recommendation_metrics", "gold.inventory_policy",
        "gold.inventory_simulation"]
SILVER = ["silver.order_lines", "silver.quarantine", "silver.products", "silver.inventory", "silver.events"]
#: The jobs on forecast's path, and the tables they write besides silver.
FORECAST_PATH = ("ingest", "demand", "forecast", "inventory")
FORECAST_PATH_GOLD = ["gold.sku_daily_demand", "gold.demand_forecast", "gold.forecast_accuracy",
                      "gold.forecast_accuracy_summary", "gold.inventory_policy",
                      "gold.inventory_simulation"]
#: Columns that differ between runs by design.
RUN_COLUMNS = {"run_id", "computed_at", "ingested_at"}
#: Absolute tolerance of model scores (ALS factors are solved in a partition-dependent order).
SCORE_TOLERANCE = {"gold.recommendations": 1e-4, "gold.recommendation_metrics": 1e-4}


def _pipeline(warehouse: Path, raw: Path, log: Path, jobs: tuple[str, ...] = ()) -> subprocess.Popen:
    selected = ["--jobs", ",".join(jobs)] if jobs else []
    return subprocess.Popen([sys.executable, str(REPO / "jobs" / "pipeline.py"), *selected,
                             *quick_cli_args(warehouse, raw)],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), cwd=REPO,
                            start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 900) -> None:
    """SIGKILL the pipeline's whole process group (Python driver and JVM) once ``ready()``."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the pipeline ended before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting for the point to kill at"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _rows(spark, conf, name: str):
    df = tables.read_table(spark, conf, name)
    keep = [c for c in df.columns if c not in RUN_COLUMNS]
    return df.select(*keep)


def _assert_same_table(spark, conf_a, conf_b, name: str) -> None:
    """Equal rows; where they are not bit-identical, equal in every non-floating column and
    within a tolerance in the floating ones (means and model fits sum in an order that depends
    on task scheduling): relative 1e-6, or SCORE_TOLERANCE for model scores."""
    a, b = _rows(spark, conf_a, name), _rows(spark, conf_b, name)
    assert a.columns == b.columns, name
    assert a.count() == b.count(), name
    if a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0:
        return
    numeric = [f.name for f in a.schema if f.dataType.typeName() in ("double", "float")]
    keys = [c for c in a.columns if c not in numeric]
    assert numeric, f"{name} differs"
    joined = a.alias("a").join(b.alias("b"), [F.col(f"a.`{k}`").eqNullSafe(F.col(f"b.`{k}`")) for k in keys])
    assert joined.count() == a.count(), f"{name}: rows differ beyond the floating-point columns"
    tolerance = SCORE_TOLERANCE.get(name)
    for c in numeric:
        x, y = F.col(f"a.`{c}`"), F.col(f"b.`{c}`")
        allowed = F.lit(tolerance) if tolerance else F.lit(1e-6) * F.greatest(F.lit(1.0), F.abs(x))
        bad = joined.filter(~(x.eqNullSafe(y) | (F.abs(x - y) <= allowed))).count()
        assert bad == 0, f"{name}.{c}: {bad} rows differ beyond the tolerance"


def test_quick_pipeline_runs_every_job(spark, quick_pipeline):
    conf, results = quick_pipeline
    assert list(results) == ["sample", *PIPELINE]
    assert set(list_tables(spark, conf)) >= set(GOLD + SILVER + ["gold.job_runs"])
    runs = read_runs(spark, conf)
    assert {r["job"]: r["status"] for r in runs.collect()} == {j: "succeeded" for j in ["sample", *PIPELINE]}
    for name in GOLD:
        assert tables.read_table(spark, conf, name).count() > 0, f"{name} is empty"


def test_failed_job_stops_its_dependents_and_the_others_still_run(spark, quick_pipeline, tmp_path):
    """forecast fails (its input table is missing): inventory is skipped, basket_rules still
    runs, the exit code is 1 and gold.job_runs says what failed and why."""
    import shutil

    ref_conf, _ = quick_pipeline
    warehouse = tmp_path / "warehouse"
    shutil.copytree(Path(tables.table_path(ref_conf, "silver.order_lines")).parent, warehouse / "silver")
    raw = Path(ref_conf["sample"]["out_dir"])
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "pipeline.py"), "--jobs", "forecast,inventory,basket_rules",
                           *quick_cli_args(warehouse, raw)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "\tat org.apache" not in proc.stderr
    assert "[shopsense] forecast: table gold.sku_daily_demand does not exist" in proc.stderr
    conf = make_conf(warehouse)
    runs = {r["job"]: r for r in read_runs(spark, conf).collect()}
    assert runs["forecast"]["status"] == "failed"
    assert "gold.sku_daily_demand" in runs["forecast"]["error"]
    assert runs["inventory"]["status"] == "skipped" and runs["inventory"]["error"] == "forecast failed"
    assert runs["basket_rules"]["status"] == "succeeded"
    _assert_same_table(spark, ref_conf, conf, "gold.association_rules")


def test_pipeline_killed_mid_job_then_rerun_leaves_every_table_correct(spark, quick_pipeline, tmp_path):
    """Kill -9 once in the middle of ingest (right after its first silver commit, before the
    quarantine and products tables), once in the middle of forecast; then run again. Every table
    the interrupted jobs and their dependents on forecast's path write equals the uninterrupted
    run's.

    The killed runs are processes of their own (jobs/pipeline.py, the driver and its JVM killed
    together) running the jobs on forecast's path (ingest, demand, forecast, inventory); the
    last run is the same jobs in this test's Spark session (as the quick pipeline was run): the
    warehouse the kills left is what is under test, not the process that reads it (time: each
    new driver costs a JVM start and a cold JIT). The other jobs read only silver, compared here,
    and their re-runs are tested on their own (time: they would double this test's)."""
    ref_conf, _ = quick_pipeline
    raw = Path(ref_conf["sample"]["out_dir"])
    warehouse = tmp_path / "warehouse"

    first_commit = warehouse / "silver" / "order_lines" / "_delta_log" / "00000000000000000000.json"
    proc = _pipeline(warehouse, raw, tmp_path / "run1.log", jobs=FORECAST_PATH)
    _kill_when(proc, first_commit.exists)
    assert proc.returncode == -signal.SIGKILL

    log2 = tmp_path / "run2.log"
    proc = _pipeline(warehouse, raw, log2, jobs=FORECAST_PATH)
    started = []

    def forecast_running() -> bool:
        if not started and "forecast: started" in log2.read_text():
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] > 4
    _kill_when(proc, forecast_running)
    log = log2.read_text()
    assert "forecast: succeeded" not in log, "forecast ended before the kill: kill earlier"

    conf = quick_conf(warehouse, raw)
    results = run_jobs(spark, conf, list(FORECAST_PATH))
    failed = {job: r for job, r in results.items() if isinstance(r, Exception)}
    assert not failed, f"the run after the kills failed: {failed}"

    assert {t for t in list_tables(spark, conf) if t.startswith("gold.")} == \
        {*FORECAST_PATH_GOLD, "gold.job_runs"}
    for name in SILVER + FORECAST_PATH_GOLD:
        _assert_same_table(spark, ref_conf, conf, name)
    assert tables.read_table(spark, conf, "bronze.sample_orders").count() == \
        tables.read_table(spark, ref_conf, "bronze.sample_orders").count()
    runs = read_runs(spark, conf).groupBy("job").agg(
        F.count("*").alias("n"), F.count_if(F.col("status") == "succeeded").alias("ok"),
        F.collect_list(F.when(F.col("status") != "succeeded", F.col("status"))).alias("other")).collect()
    # the last run recorded every job; each killed run was recorded as running when it started
    # and marked abandoned by the next run's first job (its process was gone)
    assert {r["job"]: r["ok"] for r in runs} == {"ingest": 2, "demand": 2, "forecast": 1, "inventory": 1}
    assert all(r["ok"] >= 1 for r in runs)
    assert {r["job"]: r["other"] for r in runs if r["other"]} == {"ingest": ["abandoned"],
                                                                   "forecast": ["abandoned"]}
