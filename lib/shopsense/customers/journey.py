"""The journey job: how sessions move through the funnel view → add_to_cart → purchase, as of the
as-of date, from silver.events (docs/journey.md).

* **gold.journey_funnel** -- one row per funnel step (``journey.steps``): the sessions and the
  (identified) customers reaching it, their share of the first step, and the step's conversion
  from the step before. A session *reaches* step k when it has at least one event of step k and
  of every step before it (a purchase without an add-to-cart does not count as a funnel
  purchase; the transitions show it).
* **gold.journey_transitions** -- the sessions' paths as a Markov chain over their events in time
  order: for each step (and ``start``), how often the next event is each step (or ``exit``),
  with the probability of each next step given the current one. Repeated views count
  (view → view).

Only events on or before as_of count (and, with ``journey.window_days``, on the last days up to
it), so the same events up to as_of give the same tables whatever comes after; ties in time are
broken by step order, SKU and event key, so the paths do not depend on the partitioning. Without
an events file in the ingested source the job writes nothing, says so in its run record and
succeeds. Nothing that grows with the events reaches the driver: the funnel (a row per step) is
read back for the run's metrics.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.core.config import Conf
from shopsense.core.errors import require_columns
from shopsense.core.runs import JobRun

START, EXIT = "start", "exit"
STEP_INDEX = "step_index"

JOURNEY_FUNNEL = T.StructType([
    T.StructField(C.AS_OF, T.DateType(), False),
    T.StructField("window_start", T.DateType(), True),     # first day counted; null: all history
    T.StructField(STEP_INDEX, T.IntegerType(), False),     # 1 for the first step
    T.StructField("step", T.StringType(), False),
    T.StructField("sessions", T.LongType(), False),        # sessions reaching the step
    T.StructField("customers", T.LongType(), False),       # identified customers with such a session
    T.StructField("share_of_first", T.DoubleType(), True),   # sessions / sessions at step 1
    T.StructField("step_conversion", T.DoubleType(), True),  # sessions / sessions at the step before
    T.StructField("customer_share_of_first", T.DoubleType(), True),
    *tables.RUN_COLUMNS,
])

JOURNEY_TRANSITIONS = T.StructType([
    T.StructField(C.AS_OF, T.DateType(), False),
    T.StructField("from_step", T.StringType(), False),     # a step, or start
    T.StructField("to_step", T.StringType(), False),       # a step, or exit
    T.StructField("transitions", T.LongType(), False),
    T.StructField("sessions", T.LongType(), False),        # sessions making the transition at least once
    T.StructField("probability", T.DoubleType(), False),   # transitions / all transitions from from_step
    *tables.RUN_COLUMNS,
])

REQUIRED_INPUT = (C.EVENT_ID, C.SESSION_ID, C.CUSTOMER_ID, C.SKU, C.EVENT_TYPE, C.EVENT_AT, C.EVENT_DATE)


class JourneyError(ValueError):
    """The journey job's input does not allow a result; the message says why."""


def window_start(as_of: dt.date, window_days: int | None) -> dt.date | None:
    """The first day counted: window_days days up to and including as_of (None: all history)."""
    return None if window_days is None else as_of - dt.timedelta(days=window_days - 1)


def filter_window(events: DataFrame, as_of: dt.date, window_days: int | None, steps: list[str]) -> DataFrame:
    """The events of the funnel's steps dated on or before ``as_of`` (and in the window), with
    ``step_index`` (1 for the first step)."""
    require_columns(events, REQUIRED_INPUT, "events", JourneyError)
    keep = (F.col(C.EVENT_DATE) <= F.lit(as_of)) & F.col(C.EVENT_TYPE).isin(steps)
    start = window_start(as_of, window_days)
    if start is not None:
        keep &= F.col(C.EVENT_DATE) >= F.lit(start)
    index = F.array_position(F.array(*[F.lit(s) for s in steps]), F.col(C.EVENT_TYPE)).cast("int")
    return events.filter(keep).withColumn(STEP_INDEX, index)


def session_depths(events: DataFrame, n_steps: int) -> DataFrame:
    """(session_id, customer_id, depth): how many funnel steps each session reaches, 0 to
    ``n_steps`` (a session reaches step k with events of steps 1..k). A session's customer is
    its smallest non-null id (a session has one; anonymous sessions have none)."""
    has = [F.max((F.col(STEP_INDEX) == k).cast("int")).alias(f"_has{k}") for k in range(1, n_steps + 1)]
    per = events.groupBy(C.SESSION_ID).agg(F.min(C.CUSTOMER_ID).alias(C.CUSTOMER_ID), *has)
    depth = F.lit(0)
    for k in range(n_steps, 0, -1):   # depth k when steps 1..k are all there
        reached = F.lit(True)
        for j in range(1, k + 1):
            reached = reached & (F.col(f"_has{j}") == 1)
        depth = F.when(reached & (depth == 0), F.lit(k)).otherwise(depth)
    return per.select(C.SESSION_ID, C.CUSTOMER_ID, depth.cast("int").alias("depth"))


def funnel(depths: DataFrame, steps: list[str], as_of: dt.date, start: dt.date | None) -> DataFrame:
    """The funnel table (JOURNEY_FUNNEL without the run columns): a row per step, steps no
    session reached included (zero sessions)."""
    spark = depths.sparkSession
    reached = (depths.filter(F.col("depth") > 0)
               .select(C.SESSION_ID, C.CUSTOMER_ID,
                       F.explode(F.sequence(F.lit(1), F.col("depth"))).alias(STEP_INDEX))
               .groupBy(STEP_INDEX)
               .agg(F.count("*").alias("sessions"), F.count_distinct(C.CUSTOMER_ID).alias("customers")))
    all_steps = spark.createDataFrame([(i + 1, s) for i, s in enumerate(steps)],
                                      f"{STEP_INDEX} int, step string")
    order = Window.orderBy(STEP_INDEX)   # a row per step: one partition is right
    counts = (all_steps.join(reached, STEP_INDEX, "left")
              .select(STEP_INDEX, "step", F.coalesce("sessions", F.lit(0)).alias("sessions"),
                      F.coalesce("customers", F.lit(0)).alias("customers")))
    ratio = lambda a, b: F.when(b > 0, a / b)  # noqa: E731
    return counts.select(
        F.lit(as_of).alias(C.AS_OF), F.lit(start).cast("date").alias("window_start"), STEP_INDEX, "step",
        "sessions", "customers",
        ratio(F.col("sessions"), F.first("sessions").over(order)).alias("share_of_first"),
        ratio(F.col("sessions"), F.lag("sessions").over(order)).alias("step_conversion"),
        ratio(F.col("customers"), F.first("customers").over(order)).alias("customer_share_of_first"))


def transitions(events: DataFrame, as_of: dt.date) -> DataFrame:
    """The transitions table (JOURNEY_TRANSITIONS without the run columns): each event's step
    after the one before it in its session (``start`` before the first), and ``exit`` after the
    last; events in time order, ties by step, SKU and event key."""
    path = Window.partitionBy(C.SESSION_ID).orderBy(C.EVENT_AT, STEP_INDEX, C.SKU, C.EVENT_ID)
    steps = events.select(C.SESSION_ID, F.col(C.EVENT_TYPE).alias("step"),
                          F.lag(C.EVENT_TYPE).over(path).alias("_before"),
                          F.lead(C.EVENT_TYPE).over(path).alias("_after"))
    into = steps.select(C.SESSION_ID, F.coalesce("_before", F.lit(START)).alias("from_step"),
                        F.col("step").alias("to_step"))
    out = steps.filter(F.col("_after").isNull()).select(C.SESSION_ID, F.col("step").alias("from_step"),
                                                        F.lit(EXIT).alias("to_step"))
    counted = (into.unionByName(out).groupBy("from_step", "to_step")
               .agg(F.count("*").alias("transitions"), F.count_distinct(C.SESSION_ID).alias("sessions")))
    total = F.sum("transitions").over(Window.partitionBy("from_step"))
    return counted.select(F.lit(as_of).alias(C.AS_OF), "from_step", "to_step", "transitions", "sessions",
                          (F.col("transitions") / total).alias("probability"))


def record_funnel(run: JobRun, steps: list[str]) -> None:
    """The funnel's figures in the run record (the table has a row per step)."""
    rows = {r["step"]: r for r in run.read_output("gold.journey_funnel").collect()}
    first, last = rows[steps[0]], rows[steps[-1]]
    run.metric("sessions", first["sessions"])
    run.metric("customers", first["customers"])
    for step in steps[1:]:
        run.metric(f"conversion_{step}", rows[step]["step_conversion"])
    run.metric(f"share_reaching_{steps[-1]}", last["share_of_first"], key=True)
    if first["sessions"] == 0:
        run.note(f"no session reached {steps[0]!r} up to as_of: the funnel is all zeros")


def run(spark, conf: Conf) -> dict:
    """The journey job: silver.events -> gold.journey_funnel, gold.journey_transitions; without
    an events file in the ingested source, nothing (noted). Returns the run summary; metrics:
    sessions, customers, each step's conversion, the share of sessions reaching the last step."""
    settings = conf.journey
    source = conf.sources[conf.ingest.source]
    with JobRun(spark, conf, "journey", settings) as run:
        as_of = run.as_of()
        if source.events is None:
            run.note(f"source {conf.ingest.source!r} has no events file (sources.{conf.ingest.source}"
                     f".events): no journey tables written")
        else:
            events = filter_window(run.read("silver.events"), as_of, settings.window_days, settings.steps)
            events = events.persist()
            start = window_start(as_of, settings.window_days)
            depths = session_depths(events, len(settings.steps))
            run.rows_out = run.write(funnel(depths, settings.steps, as_of, start), "gold.journey_funnel")
            run.write(transitions(events, as_of), "gold.journey_transitions")
            run.rows_in = events.count()
            record_funnel(run, settings.steps)
            events.unpersist()
    return run.summary()
