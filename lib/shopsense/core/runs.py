"""Run records: every job writes one row to gold.job_runs, on success and on failure."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import uuid
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from shopsense.core import tables
from shopsense.core.config import Conf


def new_run_id(job: str) -> str:
    """A unique, sortable run id: UTC time plus a random suffix."""
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{job}-{uuid.uuid4().hex[:8]}"


def _log(message: str) -> None:
    print(f"[shopsense] {message}", file=sys.stderr, flush=True)


class JobRun:
    """Context manager around one job run.

    Collects the parameters, the versions of the tables read, row counts, metrics and notes, and
    on exit appends one row to gold.job_runs with status ``succeeded`` or ``failed`` (and the
    error message); a failure is re-raised after it is recorded. Prints one line when the job
    starts and one when it ends.
    """

    def __init__(self, spark: SparkSession, conf: Conf, job: str, parameters: dict | None = None):
        self.spark = spark
        self.conf = conf
        self.job = job
        self.run_id = new_run_id(job)
        self.parameters = parameters or {}
        self.input_versions: dict[str, int] = {}
        self.rows_in: int | None = None
        self.rows_out: int | None = None
        self.metrics: dict[str, float] = {}
        self.notes: list[str] = []
        self.key_metric: str | None = None
        self.started_at = dt.datetime.now(dt.timezone.utc)
        self._t0 = time.monotonic()
        self.status: str | None = None

    @property
    def computed_at(self) -> dt.datetime:
        """The time outputs of this run are stamped with (the run's start, timezone-aware UTC)."""
        return self.started_at

    def read(self, name: str) -> DataFrame:
        """Read an input table, recording its version for reproducibility."""
        df = tables.read_table(self.spark, self.conf, name)
        version = tables.table_version(self.spark, self.conf, name)
        if version is not None:
            self.input_versions[name] = version
        return df

    def resolve_as_of(self, df: DataFrame, date_col: str, table: str) -> dt.date:
        """The date the job computes as of: conf ``as_of``, or else the latest ``date_col`` of
        ``df`` (noted in the run record). Recorded in the run's parameters. Raises ValueError
        when conf leaves it open and ``table`` is empty."""
        from pyspark.sql import functions as F

        if self.conf.get("as_of"):
            as_of = dt.date.fromisoformat(str(self.conf["as_of"]))
        else:
            latest = df.agg(F.max(date_col)).first()[0]
            if latest is None:
                raise ValueError(f"{table} is empty: there is no date to compute as of")
            as_of = latest.date() if isinstance(latest, dt.datetime) else latest
            self.note(f"as_of not set: using the last date in {table}, {as_of}")
        self.parameters["as_of"] = str(as_of)
        return as_of

    def metric(self, name: str, value: float | int | None, key: bool = False) -> None:
        if value is None:
            return
        self.metrics[name] = float(value)
        if key:
            self.key_metric = name

    def note(self, text: str) -> None:
        """A fact the user should know about this run (a default used, a key flagged, …)."""
        self.notes.append(text)
        _log(f"{self.job}: {text}")

    def __enter__(self) -> "JobRun":
        _log(f"{self.job}: started (run {self.run_id})")
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        duration = time.monotonic() - self._t0
        self.status = "failed" if exc is not None else "succeeded"
        error = None if exc is None else f"{type(exc).__name__}: {exc}".splitlines()[0][:2000]
        try:
            self._write(duration, error)
        except Exception as write_exc:  # the job's own error matters more than the log's
            _log(f"{self.job}: could not write gold.job_runs ({write_exc!r})")
            if exc is None:
                raise
        parts = [f"{self.job}: {self.status} in {duration:.1f}s"]
        if self.rows_in is not None:
            parts.append(f"rows in {self.rows_in:,}")
        if self.rows_out is not None:
            parts.append(f"rows out {self.rows_out:,}")
        if self.key_metric:
            parts.append(f"{self.key_metric} {self.metrics[self.key_metric]:.4g}")
        if error:
            parts.append(f"error: {error}")
        _log(", ".join(parts))
        return False

    def _write(self, duration: float, error: str | None) -> None:
        row = {
            "run_id": self.run_id,
            "job": self.job,
            "status": self.status,
            "started_at": self.computed_at,
            "ended_at": dt.datetime.now(dt.timezone.utc),
            "duration_s": float(duration),
            "parameters": json.dumps(self.parameters, sort_keys=True, default=str),
            "input_versions": self.input_versions,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "metrics": self.metrics,
            "notes": self.notes,
            "error": error,
        }
        df = self.spark.createDataFrame([row], schema=tables.JOB_RUNS)
        tables.append(df, self.conf, "gold.job_runs")

    def summary(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "job": self.job, "status": self.status,
                "rows_in": self.rows_in, "rows_out": self.rows_out, "metrics": dict(self.metrics),
                "notes": list(self.notes)}


def record_skipped(spark: SparkSession, conf: Conf, job: str, reason: str) -> None:
    """Record in gold.job_runs that ``job`` did not run (status ``skipped``) and why."""
    run = JobRun(spark, conf, job)
    run.status = "skipped"
    run._write(0.0, reason)
    _log(f"{job}: skipped ({reason})")
