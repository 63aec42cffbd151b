"""The job context: the one piece of plumbing every job uses.

A job's ``run`` opens a :class:`JobRun` and does everything with tables through it: reading
(recording each input's Delta version), resolving the as-of date (one resolver for every job,
recorded in the run record), stamping and writing outputs against the one table registry (rows
written taken from the Delta commit), and the run's record in gold.job_runs.

**The run record.** gold.job_runs is a log: rows are appended, never updated (appends never
conflict in Delta, so any number of concurrent runs can record themselves). A run appends a
``running`` row when it starts, before it reads or writes anything, and a row with its outcome
(``succeeded`` or ``failed``) and the same ``run_id`` when it ends. The state of a run is its
latest row: :func:`read_runs` gives one row per run, and every reader of gold.job_runs uses it.

**Killed runs.** A run killed without a chance to record its end (SIGKILL, a lost machine)
stays ``running``. Each row carries the driver's ``host`` and ``pid``; at its start every run
looks at the runs of its warehouse still ``running`` on the same host, and where that process
is gone (or the pid now belongs to a process started after the run) it appends an ``abandoned``
row for it, saying which run found it. Runs of other hosts (a cluster-mode driver) cannot be
checked this way and stay ``running`` until a run on their host looks.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import time
import uuid
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from shopsense.core import columns as C
from shopsense.core.errors import ConcurrentWriteError
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
        return last, "the last order date in silver.order_lines"
    median = before[len(before) // 2] if len(before) % 2 else (before[len(before) // 2 - 1] + before[len(before) // 2]) / 2
    if days[last] < min_share * median:
        earlier = max(d for d in days if d < last)
        return earlier, (f"the last complete order day: the last order date, {last}, has "
                         f"{days[last]:,} lines against a median of {median:,.0f} in the 28 days "
                         f"before it (less than as_of_min_day_share {min_share}), so it is taken "
                         f"as cut off")
    n = days[last]
    return last, f"the last order date in silver.order_lines ({n:,} line{'' if n == 1 else 's'})"


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


# The states of a run in gold.job_runs (see the module docstring).
RUNNING, SUCCEEDED, FAILED, SKIPPED, ABANDONED = "running", "succeeded", "failed", "skipped", "abandoned"


class JobRun:
    """The job context: a context manager around one job run, and the only plumbing a job uses.

        with JobRun(spark, conf, "demand", conf.demand) as run:
            lines = run.read("silver.order_lines")
            run.rows_out = run.write(build(lines, run.as_of()), "gold.sku_daily_demand")
        return run.summary()

    Collects the parameters (a typed conf section or a dict), the versions of the tables read,
    the as-of date, row counts, metrics and notes. On entry it checks that the warehouse can take
    writes (:func:`shopsense.core.tables.check_warehouse`), marks the runs of dead processes
    ``abandoned`` and appends this run's ``running`` row to gold.job_runs; on exit it appends
    the outcome, ``succeeded`` or ``failed`` (and the error message); a failure is re-raised
    after it is recorded (a Delta conflict as a
    :class:`~shopsense.core.errors.ConcurrentWriteError` saying what to do). Prints one line
    when the job starts and one when it ends.
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
        self.host = socket.gethostname()
        self.pid = os.getpid()

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
        rows = int(tables.overwrite(self.stamp(df, name), self.conf, name) or 0)
        if rows > 0 or self.conf.allow_empty_output:
            return rows
        # an empty output: looked at only then (most writes have rows; a check before every
        # write would cost two reads of the table)
        before = tables.table_version(self.spark, self.conf, name) - 1
        if before >= 0 and not tables.read_table(self.spark, self.conf, name, version=before).isEmpty():
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
        tables.check_warehouse(self.conf)
        try:
            found = mark_abandoned(self.spark, self.conf, self.run_id)
        except Exception as exc:  # never stop a job for want of tidying the log
            _log(f"{self.job}: could not check gold.job_runs for abandoned runs ({exc!r})"[:500])
            found = []
        if found:
            self.note(f"marked {len(found)} earlier run(s) abandoned (their process is gone): "
                      + ", ".join(found))
        self.status = RUNNING
        self._write(None, None)
        _log(f"{self.job}: started (run {self.run_id})")
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        duration = time.monotonic() - self._t0
        self.status = FAILED if exc is not None else SUCCEEDED
        raised = exc
        if isinstance(exc, Exception) and not isinstance(exc, ConcurrentWriteError):
            conflict = tables.delta_conflict(exc)
            if conflict is not None:  # a write outside the tables module: the table is unknown
                raised = ConcurrentWriteError(tables.concurrent_write_message(None, conflict))
        error = None if raised is None else f"{type(raised).__name__}: {raised}".splitlines()[0][:2000]
        try:
            self._write(duration, error)
        except Exception as write_exc:  # the job's own error matters more than the log's
            _log(f"{self.job}: could not write gold.job_runs ({write_exc!r})"[:500])
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
        if raised is not exc:
            raise raised from exc
        return False

    def _write(self, duration: float | None, error: str | None) -> None:
        """Append this run's current state to gold.job_runs (``duration`` None: still running)."""
        now = dt.datetime.now(dt.timezone.utc)
        row = {
            "run_id": self.run_id,
            "job": self.job,
            "status": self.status,
            "started_at": self.computed_at,
            "ended_at": None if duration is None else now,
            "duration_s": None if duration is None else float(duration),
            "parameters": json.dumps(self.parameters, sort_keys=True, default=str),
            "input_versions": self.input_versions,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "metrics": self.metrics,
            "notes": self.notes,
            "error": error,
            "host": self.host,
            "pid": self.pid,
            "recorded_at": now,
        }
        _append_runs(self.spark, self.conf, [row])

    def summary(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "job": self.job, "status": self.status,
                "rows_in": self.rows_in, "rows_out": self.rows_out, "metrics": dict(self.metrics),
                "notes": list(self.notes)}


def record_skipped(spark: SparkSession, conf: Conf, job: str, reason: str) -> None:
    """Record in gold.job_runs that ``job`` did not run (status ``skipped``) and why."""
    run = JobRun(spark, conf, job)
    run.status = SKIPPED
    run._write(0.0, reason)
    _log(f"{job}: skipped ({reason})")


# --- the run log ----------------------------------------------------------------------------------

def _append_runs(spark: SparkSession, conf: Conf, rows: list[dict]) -> None:
    """Append rows to gold.job_runs. Appends conflict only when another run creates the table or
    evolves its schema at the same moment: then the append is tried again (up to three times)."""
    df = spark.createDataFrame(rows, schema=tables.JOB_RUNS)
    for attempt in range(3):
        try:
            tables.append(df, conf, "gold.job_runs")
            return
        except ConcurrentWriteError:
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))


def read_runs(spark: SparkSession, conf: Conf) -> DataFrame:
    """gold.job_runs as one row per run, its latest state (an outcome row wins over the
    ``running`` row; otherwise the last recorded), with every column of the current schema
    (null where an older table lacks it). Raises TableNotFoundError when no run was recorded."""
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    log = tables.read_table(spark, conf, "gold.job_runs")
    for field in tables.JOB_RUNS.fields:
        if field.name not in log.columns:
            log = log.withColumn(field.name, F.lit(None).cast(field.dataType))
    latest = Window.partitionBy(C.RUN_ID).orderBy((F.col("status") == RUNNING).asc(),
                                                 F.col("recorded_at").desc_nulls_last())
    return (log.withColumn("_latest", F.row_number().over(latest)).filter("_latest = 1")
            .select(tables.JOB_RUNS.names))


def mark_abandoned(spark: SparkSession, conf: Conf, by_run: str) -> list[str]:
    """Append an ``abandoned`` row for every run of this warehouse that is still ``running`` on
    this host while its process is gone; returns their run ids. ``by_run`` is the run that
    looked (named in the rows' ``error``)."""
    from pyspark.sql import functions as F

    if not tables.table_exists(spark, conf, "gold.job_runs"):
        return []
    host = socket.gethostname()
    log = tables.read_table(spark, conf, "gold.job_runs")
    if "host" not in log.columns:  # a table from before running rows: nothing can be running
        return []
    # the runs of this host with no row but their running one (at most a few), in one pass;
    # their rows are read only when there are any
    unended = [r[C.RUN_ID] for r in log.filter(F.col("host") == host).groupBy(C.RUN_ID)
               .agg(F.max((F.col("status") != RUNNING).cast("int")).alias("_ended"))
               .filter("_ended = 0").select(C.RUN_ID).collect()]
    running = log.filter(F.col(C.RUN_ID).isin(unended)).collect() if unended else []
    now = dt.datetime.now(dt.timezone.utc)
    gone = [r for r in running if r["pid"] is not None and not process_alive(int(r["pid"]), r["started_at"])]
    rows = [{**r.asDict(), "status": ABANDONED, "recorded_at": now,
             "error": (f"abandoned: its process ({r['pid']} on {host}) ended without recording an "
                       f"outcome (killed?); found by run {by_run} at {now:%Y-%m-%d %H:%M:%S} UTC")}
            for r in gone]
    if rows:
        _append_runs(spark, conf, rows)
        for r in gone:
            _log(f"{r['job']}: run {r[C.RUN_ID]} marked abandoned (its process {r['pid']} is gone)")
    return [r[C.RUN_ID] for r in gone]


def process_alive(pid: int, started_before: dt.datetime | None = None) -> bool:
    """Whether process ``pid`` of this host runs (a zombie does not). With ``started_before``,
    also whether it is the same process: a process that started after that time reuses the pid
    (checked where the start time is known: Linux /proc)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    except OSError:
        return True
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, started = stat
    if state in ("Z", "X"):
        return False
    # (a naive datetime is local time, as PySpark collects timestamps)
    if started_before is not None and started is not None and started > started_before.timestamp() + 2.0:
        return False
    return True


def _proc_stat(pid: int) -> tuple[str, float | None] | None:
    """(state, start time in epoch seconds) of a Linux process, or None without /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
        fields = text[text.rindex(")") + 2:].split()
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
        return fields[0], boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
