"""The job context: the one piece of plumbing every job uses.

A job's ``run`` opens a :class:`JobRun` and does everything with tables through it: reading
(recording each input's Delta version), resolving the as-of date (one resolver for every job,
recorded in the run record), stamping and writing outputs against the one table registry (rows
written taken from the Delta commit), and on exit one row in gold.job_runs, on success and on
failure.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import uuid
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.core.config import Conf


class EmptyOutputError(RuntimeError):
    """A job's output is empty where the table it would replace has rows."""


def last_complete_day(lines: DataFrame, min_share: float) -> tuple[dt.date, str]:
    """(the last complete order day, why): the last order date, or the day before it when that
    day has fewer lines than ``min_share`` of the median day of the 28 days before it (an
    export cut off mid-day). Raises ValueError when there are no order lines. Reads only the
    daily counts of the last 29 days (a few dozen rows)."""
    from pyspark.sql import functions as F

    last = tables.last_value(lines, C.ORDER_DATE)
    if last is None:
        raise ValueError("silver.order_lines has no order lines: there is no date to compute as "
                         "of (set as_of, or ingest orders first)")
    days = {r[0]: int(r[1]) for r in (
        lines.filter(F.col(C.ORDER_DATE) >= F.lit(last - dt.timedelta(days=28)))
        .groupBy(C.ORDER_DATE).count().collect())}
    before = sorted(n for d, n in days.items() if d < last)
    if not before:
        return last, f"the last order date in silver.order_lines"
    median = before[len(before) // 2] if len(before) % 2 else (before[len(before) // 2 - 1] + before[len(before) // 2]) / 2
    if days[last] < min_share * median:
        earlier = max(d for d in days if d < last)
        return earlier, (f"the last complete order day: the last order date, {last}, has "
                         f"{days[last]:,} lines against a median of {median:,.0f} in the 28 days "
                         f"before it (less than as_of_min_day_share {min_share}), so it is taken "
                         f"as cut off")
    return last, f"the last order date in silver.order_lines ({days[last]:,} lines)"


def new_run_id(job: str) -> str:
    """A unique, sortable run id: UTC time plus a random suffix."""
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{job}-{uuid.uuid4().hex[:8]}"


def _log(message: str) -> None:
    print(f"[shopsense] {message}", file=sys.stderr, flush=True)


def format_value(value: float) -> str:
    """A metric for people: counts as integers with thousands separators, the rest to 4
    significant digits."""
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.4g}"


def _plain(parameters: Any) -> dict:
    """Parameters as a JSON-ready mapping (a typed conf section or a dict)."""
    if hasattr(parameters, "model_dump"):
        return parameters.model_dump(mode="json")
    return dict(parameters or {})


class JobRun:
    """The job context: a context manager around one job run, and the only plumbing a job uses.

        with JobRun(spark, conf, "demand", conf.demand) as run:
            lines = run.read("silver.order_lines")
            run.rows_out = run.write(build(lines, run.as_of()), "gold.sku_daily_demand")
        return run.summary()

    Collects the parameters (a typed conf section or a dict), the versions of the tables read,
    the as-of date, row counts, metrics and notes, and on exit appends one row to gold.job_runs
    with status ``succeeded`` or ``failed`` (and the error message); a failure is re-raised
    after it is recorded. Prints one line when the job starts and one when it ends.
    """

    def __init__(self, spark: SparkSession, conf: Conf, job: str, parameters: Any = None):
        self.spark = spark
        self.conf = conf
        self.job = job
        self.run_id = new_run_id(job)
        self.parameters = _plain(parameters)
        self._as_of: dt.date | None = None
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

    # --- reading ---------------------------------------------------------------------------

    def read(self, name: str) -> DataFrame:
        """Read an input table, recording its version for reproducibility; raises
        TableNotFoundError naming the table when an upstream job has not written it."""
        df = tables.read_table(self.spark, self.conf, name)
        version = tables.table_version(self.spark, self.conf, name)
        if version is not None:
            self.input_versions[name] = version
        return df

    def read_output(self, name: str) -> DataFrame:
        """A table this run wrote, read back for its figures (not recorded as an input)."""
        return tables.read_table(self.spark, self.conf, name)

    def read_optional(self, name: str, without: str) -> DataFrame | None:
        """An optional input: the table, or None with a note saying what the job does
        ``without`` it."""
        if not tables.table_exists(self.spark, self.conf, name):
            self.note(f"no {name}: {without}")
            return None
        return self.read(name)

    def as_of(self) -> dt.date:
        """The date the job computes as of, the same resolver for every job: conf ``as_of``
        (``--as-of``), or else the last complete order day in silver.order_lines (see
        :func:`last_complete_day`; noted). Recorded in the run's parameters. Raises ValueError
        when there are no order lines, or when conf's date is before the first order (every
        output would be empty)."""
        if self._as_of is None:
            if self.conf.as_of is not None and not tables.table_exists(self.spark, self.conf,
                                                                       "silver.order_lines"):
                self._as_of = self.conf.as_of   # a job on gold tables alone: nothing to check
            elif self.conf.as_of is not None:
                first = tables.first_value(self.read("silver.order_lines"), C.ORDER_DATE)
                if first is None or self.conf.as_of < first:
                    raise ValueError(f"as_of {self.conf.as_of} is before the first order "
                                     f"({first or 'there are none'}) in silver.order_lines: every "
                                     f"output would be empty (give a later --as-of)")
                self._as_of = self.conf.as_of
            else:
                self._as_of, why = last_complete_day(self.read("silver.order_lines"),
                                                     self.conf.as_of_min_day_share)
                self.note(f"as_of not set: using {self._as_of}, {why}")
            self.parameters["as_of"] = str(self._as_of)
        return self._as_of

    # --- writing ---------------------------------------------------------------------------

    def stamp(self, df: DataFrame, name: str) -> DataFrame:
        """``df`` with this run's ``run_id`` and time, under the time column table ``name``
        has (``computed_at``; ``ingested_at`` for bronze, silver's order lines and quarantine)."""
        from pyspark.sql import functions as F

        schema = tables.schema(name)
        at = C.COMPUTED_AT if schema is not None and C.COMPUTED_AT in schema.names else C.INGESTED_AT
        return df.withColumn(C.RUN_ID, F.lit(self.run_id)).withColumn(at, F.lit(self.computed_at))

    def write(self, df: DataFrame, name: str) -> int:
        """Replace table ``name`` with ``df`` stamped with this run and conformed to the
        table's registered schema (one Delta commit). Returns the rows written, from the commit.
        Raises EmptyOutputError, with the table restored to its previous version, when the
        output is empty and the table it replaced was not (unless conf ``allow_empty_output``)."""
        before = tables.table_version(self.spark, self.conf, name)
        had_rows = before is not None and not tables.read_table(self.spark, self.conf, name).isEmpty()
        rows = int(tables.overwrite(self.stamp(df, name), self.conf, name) or 0)
        if rows == 0 and had_rows and not self.conf.allow_empty_output:
            tables.restore(self.spark, self.conf, name, before)
            raise EmptyOutputError(f"{name}: this run's output is empty and would have replaced a "
                                   f"table with rows; the table was left as it was (check the "
                                   f"inputs and as_of, or set allow_empty_output: true)")
        return rows

    def insert_new(self, df: DataFrame, name: str, key: str, replace: str | None = None) -> int:
        """Insert the stamped rows of ``df`` whose ``key`` table ``name`` lacks (and delete the
        rows matching ``replace`` that ``df`` no longer has); returns the rows inserted."""
        return int(tables.insert_new(self.spark, self.stamp(df, name), self.conf, name, key, replace) or 0)

    def metric(self, name: str, value: float | int | None, key: bool = False) -> None:
        """Record a figure in the run record (``key``: the one printed when the job ends)."""
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
            parts.append(f"{self.key_metric} {format_value(self.metrics[self.key_metric])}")
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
