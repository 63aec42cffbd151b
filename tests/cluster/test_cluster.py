"""The pipeline on a real Spark standalone cluster, submitted the README's way ("Run on a
cluster"): a master and two workers (1 core, 1 GiB each) on 127.0.0.1 started from pyspark's
own spark-class, `spark-submit --master spark://...` of jobs/pipeline.py with the shopsense
environment packed by scripts/pack.sh and shipped with --archives, on the quick pipeline's raw
files and conf (tests/helpers.QUICK_FILES: fixed partitioning, so both runs lay the data out
alike). Every table it writes is compared with the quick pipeline's local-mode run, after one
worker (and its executor) was killed while the forecast job ran: the pipeline must still succeed
with the same tables.

One machine stands in for the cluster, so the raw files and the warehouse are local folders every
process can read; on a real cluster they must be on shared storage (conf/cluster.yaml)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from shopsense.core.config import load_conf
from shopsense.core.runs import read_runs
from shopsense.ingest.keys import DEV_PSEUDONYM_KEY
from shopsense.notebook import sample_overrides
from shopsense.pipeline import PIPELINE
from tests.cluster.compare import assert_tables_equal, table_frame
from tests.cluster.standalone import StandaloneCluster, spark_env
from tests.helpers import QUICK_FILES, REPO

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DELTA_PACKAGE = "io.delta:delta-spark_2.13:4.0.0"
KEY_ENV = "SHOPSENSE_PSEUDONYM_KEY"
SUBMIT_TIMEOUT = 1200
# The worker is killed once one of its executor's tasks has run this long in the forecast job
# (the per-SKU fits of its applyInPandas take seconds; the job's small stages take milliseconds).
FAULT_TASK_SECONDS = 1.5

# Model outputs: an iterative fit whose floating-point steps may run in another order on the
# cluster. Forecasts come from the same statsmodels code on the same series (the packed
# environment pins the driver's versions), so they agree closely; ALS is compared on what is
# meaningful (see assert_same_recommendations).
MODEL = dict(rtol=1e-4, atol=1e-6)


def cluster_args(warehouse: Path, raw: Path) -> list[str]:
    """The conf of the cluster run: conf/cluster.yaml instead of the local overlays, then the
    quick pipeline's files (a small sample, fixed partitioning), its raw folder, a warehouse."""
    files = [REPO / "conf" / "cluster.yaml", *QUICK_FILES]
    sets = [f"warehouse={warehouse}", *sample_overrides(raw), "ingest.source=sample"]
    return [*[a for f in files for a in ("--conf", str(f))], *[a for s in sets for a in ("--set", s)]]


@pytest.fixture(scope="module")
def packed_env(tmp_path_factory) -> Path:
    """scripts/pack.sh's archive (SHOPSENSE_PACKED_ENV names an existing one to reuse)."""
    existing = os.environ.get("SHOPSENSE_PACKED_ENV")
    if existing:
        return Path(existing)
    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    subprocess.run(["bash", str(REPO / "scripts" / "pack.sh"), str(out)], check=True, cwd=REPO)
    print(f"scripts/pack.sh took {time.monotonic() - started:.0f}s", file=sys.stderr)
    return out / "shopsense-env.tar.gz"


@pytest.fixture
def cluster(tmp_path):
    c = StandaloneCluster(tmp_path / "cluster", n_workers=2, worker_cores=1, worker_memory="1g")
    try:
        yield c.start()
    finally:
        c.stop()


class Submission:
    """spark-submit of jobs/pipeline.py, as README "Run on a cluster" writes it. Its stderr is
    copied to a log file, line by line, and watched for a line that triggers an event."""

    def __init__(self, cluster: StandaloneCluster, archive: Path, warehouse: Path, raw: Path,
                 log: Path, jobs: list[str] | None = None, trigger: str | None = None):
        self.log = log
        self.trigger = trigger
        self.triggered = threading.Event()
        self.lines: list[str] = []
        cmd = [
            str(Path(sys.executable).parent / "spark-submit"),
            "--master", cluster.url,
            "--packages", DELTA_PACKAGE,
            "--archives", f"{archive}#environment",
            "--conf", "spark.pyspark.python=./environment/bin/python",
            "--conf", f"spark.pyspark.driver.python={sys.executable}",
            "jobs/pipeline.py", *(["--jobs", ",".join(jobs)] if jobs else []),
            *cluster_args(warehouse, raw),
        ]
        env = spark_env(cluster.root)
        for var in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"):  # the test session's own
            env.pop(var, None)
        # Outside local mode the key must be given; the local run used the sample's own one.
        env[KEY_ENV] = DEV_PSEUDONYM_KEY
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with open(self.log, "w") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()
                self.lines.append(line)
                if self.trigger and self.trigger in line:
                    self.triggered.set()

    def wait(self, timeout: float = SUBMIT_TIMEOUT) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise
        finally:
            self.reader.join(timeout=10)
        self.seconds = time.monotonic() - self.started
        print(f"spark-submit took {self.seconds:.0f}s", file=sys.stderr)
        return rc

    def output(self, last: int = 60) -> str:
        return "".join(self.lines[-last:])

    def shopsense_lines(self) -> list[str]:
        return [line.rstrip() for line in self.lines if line.startswith("[shopsense]")]


_TASK = re.compile(r"Executor: (Running|Finished) task \S+ in stage \S+ \(TID (\d+)\)")


def unfinished_tasks(worker_dir: Path) -> set[str]:
    """Task ids the worker's executors logged as running and never as finished (their stderr,
    INFO level: "Executor: Running task 0.0 in stage 994.0 (TID 4428)")."""
    running, finished = set(), set()
    for log in worker_dir.glob("app-*/*/stderr"):
        for what, tid in _TASK.findall(log.read_text(errors="replace")):
            (running if what == "Running" else finished).add(tid)
    return running - finished


def kill_during_a_task(submission: "Submission", worker, worker_dir: Path) -> float:
    """SIGKILL ``worker``'s process group once a task of its executor has been running for
    FAULT_TASK_SECONDS; returns the seconds into the run. Fails if the job ends first."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + SUBMIT_TIMEOUT
    while time.monotonic() < deadline:
        now = time.monotonic()
        running = unfinished_tasks(worker_dir)
        seen = {tid: seen.get(tid, now) for tid in running}
        if any(now - first >= FAULT_TASK_SECONDS for first in seen.values()):
            worker.kill_group(signal.SIGKILL)
            return now - submission.started
        if submission.proc.poll() is not None or any("forecast: succeeded" in x for x in submission.lines):
            break
        time.sleep(0.2)
    pytest.fail(f"no task of the victim's executor ran {FAULT_TASK_SECONDS}s during forecast:\n"
                f"{submission.output()}")


def cluster_conf(warehouse: Path, raw: Path):
    """The cluster run's conf as the driver loaded it (to read its tables from the test)."""
    args = cluster_args(warehouse, raw)
    return load_conf([Path(v) for k, v in zip(args[::2], args[1::2]) if k == "--conf"],
                     [v for k, v in zip(args[::2], args[1::2]) if k == "--set"])


def assert_same_recommendations(spark, local, remote) -> dict[str, int]:
    """ALS output. Both runs fit on the same blocks (recommend.als.num_blocks fixed), but a
    block's normal equations sum the other blocks' factors in the order the shuffle delivers
    them, which differs between one process and two executors: scores may differ in the last
    float bits and swap two near-tied SKUs. Compared: every metric within 0.002 (less than one
    hit in a few hundred), the same customers with the same number of recommendations from the
    same source, scores within 1e-3 relative, and the same SKU at 99% of (customer, rank)."""
    metrics_tol = {c: dict(rtol=0.0, atol=0.002)
                   for c in ("precision", "recall", "ndcg", "map", "hit_rate", "coverage")}
    rows = {"gold.recommendation_metrics": assert_tables_equal(
        spark, local, remote, "gold.recommendation_metrics",
        ["split", "model", "als_rank", "reg_param", "alpha"], metrics_tol)}
    keys = ["customer_id", "rank"]
    expected = table_frame(spark, local, "gold.recommendations", keys)
    actual = table_frame(spark, remote, "gold.recommendations", keys)
    assert len(actual) == len(expected)
    assert (actual[[*keys, "source"]] == expected[[*keys, "source"]]).all().all()
    assert np.allclose(actual["score"], expected["score"], rtol=1e-3, atol=1e-6, equal_nan=True)
    same_sku = (actual["sku"] == expected["sku"]).mean()
    assert same_sku >= 0.99, f"the same SKU at only {same_sku:.3f} of (customer, rank)"
    rows["gold.recommendations"] = len(expected)
    return rows


# Each job's tables: (key columns, float tolerances). Deterministic tables are compared exactly
# (compare.EXACT: only the order of a floating-point sum may differ), KMeans too (same layout:
# segment.deterministic_layout over the same shuffle partitions); what derives from the
# forecasts gets MODEL; recommend has its own comparison.
C_ID = "customer_id"
TABLES: dict[str, dict[str, tuple[list[str], dict]]] = {
    "ingest": {"bronze.sample_orders": (["source_file", "row_hash"], {}),
               "silver.order_lines": (["line_id"], {}),
               "silver.quarantine": (["line_id"], {}),
               "silver.products": (["sku"], {}),
               "silver.inventory": (["sku"], {}),
               "bronze.sample_events": (["source_file", "row_hash"], {}),
               "silver.events": (["event_id"], {})},
    "features": {"gold.customer_features": (["customer_id"], {})},
    "segment": {"gold.customer_segments": (["customer_id"], {}),
                "gold.segment_profiles": (["segment_id"], {}),
                "gold.rfm_segments": ([C_ID], {})},
    "migration": {"gold.segment_transitions": (["scope", "period_end", "from_segment", "to_segment"], {}),
                  "gold.segment_mix": (["period_end", "kind", "segment"], {})},
    "value": {"gold.customer_value": ([C_ID], {}),
              "gold.customer_value_metrics": (["scope", "model", "metric"], {})},
    "propensity": {"gold.purchase_propensity": ([C_ID], {}),
                   "gold.propensity_metrics": (["model", "metric"], {}),
                   "gold.propensity_curves": (["model", "kind", "bin"], {})},
    "journey": {"gold.journey_funnel": (["step_index"], {}),
                "gold.journey_transitions": (["from_step", "to_step"], {})},
    "basket_rules": {"gold.association_rules": (["level", "antecedent", "consequent"], {}),
                     "gold.frequently_bought_together": (["level", "sku", "rank"], {})},
    "demand": {"gold.sku_daily_demand": (["sku", "date"], {})},
    "forecast": {"gold.demand_forecast": (["sku", "date"], {"*": MODEL}),
                 "gold.forecast_accuracy": (["sku", "model"], {"*": MODEL}),
                 "gold.forecast_accuracy_summary": (["scope"], {"*": MODEL})},
    "inventory": {"gold.inventory_policy": (["sku"], {"*": MODEL}),
                  "gold.inventory_simulation": (["sku"], {"*": MODEL})},
}


def assert_same_outputs(spark, local, remote, jobs=PIPELINE) -> dict[str, int]:
    """The tables of ``jobs``, cluster run vs local run. Returns rows compared per table."""
    rows = {}
    for job in jobs:
        if job == "recommend":
            rows.update(assert_same_recommendations(spark, local, remote))
            continue
        for name, (keys, tolerance) in TABLES[job].items():
            rows[name] = assert_tables_equal(spark, local, remote, name, keys, tolerance)
    return rows


def assert_same_runs(spark, remote, jobs) -> None:
    """gold.job_runs of the cluster run: one succeeded run of each job, nothing else."""
    runs = read_runs(spark, remote).select("job", "status").toPandas()
    assert sorted(zip(runs["job"], runs["status"])) == sorted((j, "succeeded") for j in jobs)


def test_cluster_run_survives_losing_a_worker_and_equals_local_run(spark, cluster, packed_env,
                                                                  quick_pipeline, tmp_path):
    """The whole pipeline, submitted the README's way. In the forecast job, once a task of its
    executor has run for FAULT_TASK_SECONDS, one worker is killed with its executor and Python
    workers (its whole process group: what a machine that dies takes with it). Spark re-runs the lost tasks, and recomputes the shuffle
    output that lived on the dead executor, on the surviving worker; forecast, recommend and
    inventory finish on that one worker. The run succeeds and writes the same tables as the
    local-mode run: the quick pipeline, on the same raw files. (One submission for both claims:
    a cluster run costs minutes on this machine.)"""
    local_conf, _ = quick_pipeline
    raw = Path(local_conf["sample"]["out_dir"])
    warehouse = tmp_path / "warehouse"
    submission = Submission(cluster, packed_env, warehouse, raw, tmp_path / "spark-submit.log",
                            trigger="[shopsense] forecast: started")
    if not submission.triggered.wait(timeout=SUBMIT_TIMEOUT):
        submission.proc.kill()
        pytest.fail(f"the forecast job never started:\n{submission.output()}")
    cores_used = {w["id"]: w["coresused"] for w in cluster.state()["workers"]}
    assert sum(cores_used.values()) == 2, f"both workers should run an executor: {cores_used}"
    victim, victim_dir = cluster.workers[1], cluster.root / "worker1"
    killed_at = kill_during_a_task(submission, victim, victim_dir)

    rc = submission.wait()
    assert rc == 0, f"spark-submit exited {rc} after a worker was lost:\n{submission.output()}"
    log = "".join(submission.lines)
    assert "Lost executor" in log, "the driver never noticed the lost executor"
    assert "forecast: succeeded" not in log[:log.find("Lost executor")], \
        "forecast ended before the worker was lost: kill earlier"
    # What died with the executor mid-task (the driver logs such a loss at INFO, so its own log
    # does not show it): re-run on the surviving worker, since the run succeeded.
    lost_tasks = unfinished_tasks(victim_dir)
    assert lost_tasks, "no task was running on the lost executor"
    print(f"worker killed {killed_at:.0f}s into the run; tasks it was running: {sorted(lost_tasks)}",
          file=sys.stderr)
    assert cluster.alive_workers() == 1
    print("\n".join(submission.shopsense_lines()), file=sys.stderr)
    # The jobs ran on the cluster: the master lists the application as finished.
    apps = cluster.state()["completedapps"]
    assert [a["name"] for a in apps] == ["shopsense"]

    remote = cluster_conf(warehouse, raw)
    assert_same_runs(spark, remote, PIPELINE)
    rows = assert_same_outputs(spark, local_conf, remote)
    print(f"rows compared: {rows}", file=sys.stderr)
