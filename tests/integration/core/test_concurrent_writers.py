"""Two runs writing one Delta table at the same time: the run whose commit comes second gets
Delta's conflict (a real one: its write is held open until the other run has committed), which
becomes one line naming the table and saying what to do; the table keeps the other run's
version, and the run record says why the run failed."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from shopsense.cli import error_line
from shopsense.core import tables
from shopsense.core.errors import ConcurrentWriteError
from shopsense.core.runs import JobRun, read_runs

pytestmark = pytest.mark.slow

DEMAND = ("sku string, date date, units double, sale_units double, return_units double, "
          "n_orders long, avg_price double, usual_price double, promo boolean")


def demand(spark, units: float, days: int = 3):
    return spark.createDataFrame(
        [("A", dt.date(2024, 1, d), units, units, 0.0, 1, 2.0, 2.0, False) for d in range(1, days + 1)],
        DEMAND).coalesce(1)


def held_until(df, started: Path, gate: Path):
    """``df`` whose computation, inside the Delta write's transaction, waits for ``gate``
    (a Python function on each row; it touches ``started`` first)."""
    started_s, gate_s = str(started), str(gate)

    def wait(units):
        import pathlib
        import time as t

        pathlib.Path(started_s).touch()
        deadline = t.time() + 120
        while not pathlib.Path(gate_s).exists() and t.time() < deadline:
            t.sleep(0.05)
        return units
    return df.withColumn("units", F.udf(wait, "double")("units"))


def _wait_for(path: Path, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("writes", ["through the table registry", "straight to Delta"])
def test_a_second_writer_gets_one_line_and_the_table_keeps_the_first_ones_version(spark, conf, tmp_path, writes):
    name = "gold.sku_daily_demand"
    with JobRun(spark, conf, "demand") as first:
        first.write(demand(spark, 1.0), name)
    version = tables.table_version(spark, conf, name)
    started, gate = tmp_path / "started", tmp_path / "gate"
    outcome: dict = {}

    def slow_run() -> None:
        try:
            with JobRun(spark, conf, "demand") as run:
                outcome["run_id"] = run.run_id
                slow = held_until(demand(spark, 9.0), started, gate)
                if writes == "straight to Delta":    # a write the job context does not see
                    slow.write.format("delta").mode("overwrite").save(tables.table_path(conf, name))
                else:
                    run.write(slow, name)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=slow_run)
    thread.start()
    try:
        _wait_for(started, "the slow run's write to start")
        with JobRun(spark, conf, "demand") as other:          # commits while the slow one is open
            other.write(demand(spark, 5.0, days=2), name)
    finally:
        gate.touch()
        thread.join(timeout=300)

    exc = outcome.get("error")
    assert isinstance(exc, ConcurrentWriteError), repr(exc)
    cause = tables.delta_conflict(exc.__cause__)
    assert cause in tables.DELTA_CONFLICTS                   # Delta's own exception, recognised
    table = f"table {name}" if writes == "through the table registry" else "a table this job writes"
    line = error_line(exc)
    assert line == (f"another run is writing {table} at the same time (Delta {cause}): this run's "
                    f"write was not committed and the table's previous version is intact; wait "
                    f"for the other run to finish, then re-run this job")
    # the table is the other run's commit, whole: nothing of the slow run's
    assert tables.table_version(spark, conf, name) == version + 1
    got = tables.read_table(spark, conf, name)
    assert sorted((r["units"], r["run_id"]) for r in got.collect()) == [(5.0, other.run_id)] * 2
    runs = {r["run_id"]: r for r in read_runs(spark, conf).collect()}
    assert runs[outcome["run_id"]]["status"] == "failed"
    assert runs[outcome["run_id"]]["error"] == f"ConcurrentWriteError: {line}"
    assert runs[other.run_id]["status"] == "succeeded"
