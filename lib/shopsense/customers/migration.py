"""Segment migration: who moves between segments from one period to the next, and the next
period's segment mix projected from those moves.

At each period end (calendar month ends by default, conf ``migration``) the customer features
are computed as of that day from silver.order_lines (:func:`shopsense.customers.features.
customer_features`, over ``features.window_days`` as the features job computes them) and the
PipelineModel the segment job saved assigns each customer a segment, named as the segment job
names it. A customer's state at a period end is then:

* its segment, or ``returns only`` (the segment job's segment -1) when its lines in the window
  are all returns;
* ``(inactive)`` when it ordered before but has no line in the feature window (only with
  ``features.window_days`` set: without a window every customer keeps a row);
* nothing before its first line: a customer is not in a period that ends before it first
  bought. In the period it first appears in, its from-state is ``(new)``.

gold.segment_transitions counts the customers per (from, to) in each period (scope ``period``)
and over all periods together (scope ``pooled``), with ``probability`` the share of the
from-state's customers that moved to the to-state (each from-state's row sums to 1 per period).
gold.segment_mix holds each period end's mix (kind ``observed``) and the next period end's,
projected (kind ``projected``): the last mix times the pooled transition probabilities, plus the
mean number of new customers per period times the pooled ``(new)`` row (:func:`project_mix`).

Only period ends on or before as_of are used, and features at a period end read only lines up
to it, so the tables depend on nothing ordered after as_of.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass

import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.core.config import Conf
from shopsense.core.errors import require_columns
from shopsense.core.runs import JobRun
from shopsense.customers import features as FT
from shopsense.customers import segments as SG

NEW = "(new)"
INACTIVE = "(inactive)"
PERIOD_END = "period_end"
PERIOD_START = "period_start"
PREVIOUS_END = "previous_end"
SEGMENT = "segment"
FROM = "from_segment"
TO = "to_segment"
CUSTOMERS = "customers"
PROBABILITY = "probability"
SHARE = "share"
SCOPE = "scope"
SCOPE_PERIOD, SCOPE_POOLED = "period", "pooled"
KIND = "kind"
OBSERVED, PROJECTED = "observed", "projected"

SEGMENT_TRANSITIONS = T.StructType([
    # "period": one period's moves; "pooled": the moves of every period added up.
    T.StructField(SCOPE, T.StringType(), False),
    # First and last day of the period (pooled: of the first and the last period).
    T.StructField(PERIOD_START, T.DateType(), False),
    T.StructField(PERIOD_END, T.DateType(), False),
    # State at the end of the period before ("(new)": not a customer yet) and at period_end.
    T.StructField(FROM, T.StringType(), False),
    T.StructField(TO, T.StringType(), False),
    T.StructField(CUSTOMERS, T.LongType(), False),
    # customers / all customers of from_segment in the scope and period.
    T.StructField(PROBABILITY, T.DoubleType(), False),
    *tables.RUN_COLUMNS,
])

SEGMENT_MIX = T.StructType([
    T.StructField(PERIOD_END, T.DateType(), False),
    # "observed": assigned at period_end; "projected": the period end after the last observed.
    T.StructField(KIND, T.StringType(), False),
    T.StructField(SEGMENT, T.StringType(), False),
    # A count when observed, an expected count (fractional) when projected.
    T.StructField(CUSTOMERS, T.DoubleType(), False),
    T.StructField(SHARE, T.DoubleType(), False),
    *tables.RUN_COLUMNS,
])


class MigrationError(ValueError):
    """Segment migration cannot run: no saved segment model, bad input or parameters."""


@dataclass(frozen=True)
class MigrationParams:
    period: str
    period_days: int
    periods: int
    window_days: int | None

    @classmethod
    def from_conf(cls, conf: Conf) -> "MigrationParams":
        m = conf.migration
        return cls(period=m.period, period_days=m.period_days, periods=m.periods,
                   window_days=conf.features.window_days)


# --------------------------------------------------------------------------------------------
# Period ends

def month_end(day: dt.date) -> dt.date:
    """The last day of ``day``'s month."""
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def previous_month_end(day: dt.date) -> dt.date:
    """The last day of the month before ``day``'s."""
    return day.replace(day=1) - dt.timedelta(days=1)


def period_ends(as_of: dt.date, period: str, periods: int, period_days: int = 28) -> list[dt.date]:
    """The ``periods + 1`` period ends up to ``as_of``, oldest first: month ends (the last one
    on or before as_of) for ``period`` "month", as_of and every ``period_days`` before it for
    "days". Raises MigrationError for another period or fewer than one period."""
    if periods < 1:
        raise MigrationError(f"migration.periods must be at least 1, got {periods}")
    if period == "month":
        last = as_of if month_end(as_of) == as_of else previous_month_end(as_of)
        ends = [last]
        for _ in range(periods):
            ends.append(previous_month_end(ends[-1]))
        return ends[::-1]
    if period == "days":
        if period_days < 1:
            raise MigrationError(f"migration.period_days must be at least 1, got {period_days}")
        return [as_of - dt.timedelta(days=period_days * i) for i in range(periods, -1, -1)]
    raise MigrationError(f"migration.period must be 'month' or 'days', got {period!r}")


def next_period_end(last: dt.date, period: str, period_days: int = 28) -> dt.date:
    """The period end after ``last``: the next month end, or ``period_days`` later."""
    if period == "month":
        return month_end(last + dt.timedelta(days=1))
    return last + dt.timedelta(days=period_days)


# --------------------------------------------------------------------------------------------
# Segments at each period end

def load_segment_model(spark: SparkSession, path: str) -> PipelineModel:
    """The PipelineModel the segment job saved at ``path``; raises MigrationError saying to run
    the segment job when there is none (or it cannot be read)."""
    try:
        return PipelineModel.load(path)
    except Exception as exc:  # Py4J/IO errors of many kinds: the message says what to do
        cause = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise MigrationError(f"no segment model can be read at {path} (run the segment job "
                             f"first: shopsense run segment): {cause}") from None


def segments_at(lines: DataFrame, model: PipelineModel, ends: list[dt.date],
                window_days: int | None) -> DataFrame:
    """(customer_id, period_end, segment) of every customer with a line in the feature window
    of each period end: the model's segment name, or "returns only" for a customer whose lines
    there are all returns (as the segment job assigns them)."""
    feats = None
    for end in ends:
        one = FT.customer_features(lines, end, window_days)
        feats = one if feats is None else feats.unionByName(one)
    scored = (model.transform(feats.filter(F.col(FT.HAS_ORDERS)))
              .select(C.CUSTOMER_ID, C.AS_OF, F.col(SG.SEGMENT_NAME).alias(SEGMENT)))
    returns_only = (feats.filter(~F.col(FT.HAS_ORDERS))
                    .select(C.CUSTOMER_ID, C.AS_OF, F.lit(SG.RETURNS_ONLY_NAME).alias(SEGMENT)))
    return scored.unionByName(returns_only).withColumnRenamed(C.AS_OF, PERIOD_END)


def period_states(lines: DataFrame, model: PipelineModel, ends: list[dt.date],
                  window_days: int | None) -> DataFrame:
    """(customer_id, period_end, segment): every customer with a product line on or before a
    period end, in its segment there (:func:`segments_at`) or ``(inactive)`` when it has no
    line in that end's feature window."""
    spark = lines.sparkSession
    first = (FT.filter_customer_lines(lines).groupBy(C.CUSTOMER_ID)
             .agg(F.min(C.ORDER_DATE).alias("_first")))
    end_frame = F.broadcast(spark.createDataFrame([(e,) for e in ends], f"{PERIOD_END} date"))
    present = first.crossJoin(end_frame).filter(F.col("_first") <= F.col(PERIOD_END)).drop("_first")
    return (present.join(segments_at(lines, model, ends, window_days), [C.CUSTOMER_ID, PERIOD_END], "left")
            .withColumn(SEGMENT, F.coalesce(F.col(SEGMENT), F.lit(INACTIVE))))


# --------------------------------------------------------------------------------------------
# Transitions and mix

def count_transitions(states: DataFrame, ends: list[dt.date]) -> DataFrame:
    """Per period (ends[i - 1], ends[i]]: period_start, period_end, from_segment, to_segment,
    customers. A customer in a period end's states but not in the one before comes from
    ``(new)``."""
    spark = states.sparkSession
    pairs = F.broadcast(spark.createDataFrame(list(zip(ends[1:], ends[:-1])),
                                              f"{PERIOD_END} date, {PREVIOUS_END} date"))
    before = states.select(C.CUSTOMER_ID, F.col(PERIOD_END).alias(PREVIOUS_END), F.col(SEGMENT).alias(FROM))
    return (states.join(pairs, PERIOD_END)
            .join(before, [C.CUSTOMER_ID, PREVIOUS_END], "left")
            .groupBy(PREVIOUS_END, PERIOD_END, F.coalesce(F.col(FROM), F.lit(NEW)).alias(FROM),
                     F.col(SEGMENT).alias(TO))
            .agg(F.count("*").alias(CUSTOMERS))
            .withColumn(PERIOD_START, F.date_add(F.col(PREVIOUS_END), 1))
            .select(PERIOD_START, PERIOD_END, FROM, TO, CUSTOMERS))


def with_pooled(counts: DataFrame) -> DataFrame:
    """The per-period counts (scope "period") and their sums over all periods (scope "pooled",
    from the first period's start to the last period's end)."""
    span = counts.agg(F.min(PERIOD_START).alias(PERIOD_START), F.max(PERIOD_END).alias(PERIOD_END))
    pooled = (counts.groupBy(FROM, TO).agg(F.sum(CUSTOMERS).alias(CUSTOMERS))
              .crossJoin(span).withColumn(SCOPE, F.lit(SCOPE_POOLED)))
    cols = [SCOPE, PERIOD_START, PERIOD_END, FROM, TO, CUSTOMERS]
    return counts.withColumn(SCOPE, F.lit(SCOPE_PERIOD)).select(cols).unionByName(pooled.select(cols))


def with_probability(counts: DataFrame) -> DataFrame:
    """``probability``: customers over all customers of the same scope, period and from_segment
    (integer sums, so the same counts give the same bits)."""
    row = Window.partitionBy(SCOPE, PERIOD_START, PERIOD_END, FROM)
    return counts.withColumn(PROBABILITY, F.col(CUSTOMERS) / F.sum(CUSTOMERS).over(row))


def transition_table(states: DataFrame, ends: list[dt.date]) -> DataFrame:
    """gold.segment_transitions (without run columns), in a fixed row order."""
    return (count_transitions(states, ends).transform(with_pooled).transform(with_probability)
            .select(*tables.without_run_columns(SEGMENT_TRANSITIONS).names)
            .orderBy(SCOPE, PERIOD_END, FROM, TO))


def observed_mix(states: DataFrame) -> DataFrame:
    """Customers and share of each segment at each period end (kind "observed")."""
    end = Window.partitionBy(PERIOD_END)
    return (states.groupBy(PERIOD_END, SEGMENT).agg(F.count("*").cast("double").alias(CUSTOMERS))
            .withColumn(SHARE, F.col(CUSTOMERS) / F.sum(CUSTOMERS).over(end))
            .withColumn(KIND, F.lit(OBSERVED)))


def project_mix(current: pd.DataFrame, pooled: pd.DataFrame, n_periods: int) -> pd.DataFrame:
    """The next period's expected mix: for every to-state, the sum over from-states of the
    current customers times P(from -> to), plus the mean new customers per period
    (pooled ``(new)`` customers / ``n_periods``) times P((new) -> to). A current segment with no
    pooled row of its own (first seen at the last period end) is kept where it is.

    ``current``: segment, customers; ``pooled``: from_segment, to_segment, customers (small:
    segments x segments). Returns segment, customers, share, sorted by segment."""
    pooled = pooled.sort_values([FROM, TO], kind="mergesort")
    totals = pooled.groupby(FROM, sort=True)[CUSTOMERS].sum()
    start = {s: float(n) for s, n in zip(current[SEGMENT], current[CUSTOMERS])}
    if NEW in totals.index:
        start[NEW] = float(totals[NEW]) / n_periods
    out: dict[str, float] = {}
    for segment in sorted(start):
        n = start[segment]
        if segment not in totals.index:
            out[segment] = out.get(segment, 0.0) + n
            continue
        rows = pooled[pooled[FROM] == segment]
        for to, moved in zip(rows[TO], rows[CUSTOMERS]):
            out[to] = out.get(to, 0.0) + n * float(moved) / float(totals[segment])
    frame = pd.DataFrame(sorted(out.items()), columns=[SEGMENT, CUSTOMERS])
    total = frame[CUSTOMERS].sum()
    frame[SHARE] = frame[CUSTOMERS] / total if total else 0.0
    return frame


def mix_table(states: DataFrame, pooled: pd.DataFrame, n_periods: int, last_end: dt.date,
              next_end: dt.date) -> DataFrame:
    """gold.segment_mix (without run columns): the observed mix at every period end and the
    projected one at ``next_end``, in a fixed row order."""
    observed = observed_mix(states)
    current = observed.filter(F.col(PERIOD_END) == F.lit(last_end)).select(SEGMENT, CUSTOMERS).toPandas()
    projected = project_mix(current, pooled, n_periods).assign(**{PERIOD_END: next_end, KIND: PROJECTED})
    cols = [PERIOD_END, KIND, SEGMENT, CUSTOMERS, SHARE]
    schema = T.StructType([f for f in SEGMENT_MIX.fields if f.name in cols])
    projected_df = states.sparkSession.createDataFrame(projected[cols], schema=schema)
    return observed.select(cols).unionByName(projected_df).orderBy(PERIOD_END, KIND, SEGMENT)


# --------------------------------------------------------------------------------------------
# Job

def run(spark: SparkSession, conf: Conf) -> dict:
    """The migration job: silver.order_lines + the saved segment model -> gold.segment_transitions
    and gold.segment_mix. Returns the run summary (rows in: the customers' states, one per
    customer and period end); metrics: periods, customers (at the last period end),
    new_customers, stay_share (pooled share of customers already there that kept their
    segment). Raises MigrationError when the segment job has saved no model."""
    params = MigrationParams.from_conf(conf)
    path = SG.model_path(conf)
    with JobRun(spark, conf, "migration", {**conf.migration.model_dump(),
                                           "window_days": params.window_days, "model_path": path}) as run:
        lines = run.read("silver.order_lines")
        require_columns(lines, FT.REQUIRED_INPUT, "silver.order_lines", MigrationError)
        model = load_segment_model(spark, path)
        run.read("gold.segment_profiles")  # recorded: the segment run whose model assigns
        ends = period_ends(run.as_of(), params.period, params.periods, params.period_days)
        states = period_states(lines, model, ends, params.window_days).cache()
        try:
            run.rows_in = states.count()  # customer-period states (this fills the cache)
            run.rows_out = run.write(transition_table(states, ends), "gold.segment_transitions")
            pooled = pooled_counts(run.read_output("gold.segment_transitions"))
            next_end = next_period_end(ends[-1], params.period, params.period_days)
            run.write(mix_table(states, pooled, params.periods, ends[-1], next_end), "gold.segment_mix")
        finally:
            states.unpersist()
        record(run, ends, pooled, run.read_output("gold.segment_mix"))
    return run.summary()


def pooled_counts(transitions: DataFrame) -> pd.DataFrame:
    """The pooled rows (from_segment, to_segment, customers) of gold.segment_transitions: at
    most (segments + 2) x (segments + 1) rows."""
    return (transitions.filter(F.col(SCOPE) == SCOPE_POOLED).select(FROM, TO, CUSTOMERS)
            .orderBy(FROM, TO).toPandas())


def record(run: JobRun, ends: list[dt.date], pooled: pd.DataFrame, mix: DataFrame) -> None:
    """The run's figures and a note with the last and the projected mix (a few rows)."""
    stayers = pooled[pooled[FROM] != NEW]
    stay = stayers[stayers[FROM] == stayers[TO]][CUSTOMERS].sum()
    n_last = mix.filter((F.col(PERIOD_END) == F.lit(ends[-1])) & (F.col(KIND) == OBSERVED)).agg(
        F.sum(CUSTOMERS)).first()[0]
    run.metric("periods", len(ends) - 1)
    run.metric("customers", n_last or 0)
    run.metric("new_customers", int(pooled[pooled[FROM] == NEW][CUSTOMERS].sum()))
    if stayers[CUSTOMERS].sum():
        run.metric("stay_share", float(stay) / float(stayers[CUSTOMERS].sum()), key=True)
    run.note(f"segments assigned at {len(ends)} period ends, {ends[0]} .. {ends[-1]}")
    latest = (mix.filter(F.col(PERIOD_END) >= F.lit(ends[-1])).select(PERIOD_END, KIND, SEGMENT, SHARE)
              .orderBy(PERIOD_END, SEGMENT).toPandas())  # segments x 2 rows
    for (end, kind), rows in latest.groupby([PERIOD_END, KIND], sort=True):
        run.note(f"{kind} mix at {end}: " + ", ".join(
            f"{s} {v:.1%}" for s, v in zip(rows[SEGMENT], rows[SHARE])))
