"""Ingest of a source's optional events file (views, add-to-cart, purchases): raw events →
bronze.<source>_events, silver.events, silver.quarantine.

The same rules as the order lines (:mod:`shopsense.ingest.batch`): every record read is accepted,
quarantined with a reason code (:data:`EVENT_REASONS`) or a duplicate within the batch, and the
run record's figures (``events_read`` = ``events_accepted`` + ``events_quarantined`` +
``events_duplicate``) reconcile; customer ids are pseudonymised with the orders' key, so events
and order lines join on ``customer_id``; only files new or changed since the last run are read
(silver.ingested_files, under the source's name); everything is staged before anything is written.
An event's key (``event_id``) is a hash of its canonical content, so the same event exported
twice is inserted once. A quarantined event is told from a quarantined order line by its
``source_file`` (the events path) and its ``raw_values`` (the event's fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.core.config import resolve_path
from shopsense.core.runs import JobRun
from shopsense.core.settings import EventsSpec, PlausibilitySection, SourceSpec
from shopsense.ingest import files as ingested
from shopsense.ingest.keys import pseudonymise
from shopsense.ingest.read import (IngestError, check_headers, column_mapping, field_type, list_input_files,
                                   read_files, source_column)
from shopsense.ingest.rules import (CONTROL_CHARACTERS_SQL, CORRUPT_RECORD, REPLACEMENT_CHARACTER,
                                    normalise_customer_id, text, to_timestamp)

SILVER = "silver.events"

EVENTS = T.StructType([
    T.StructField(C.EVENT_ID, T.StringType(), False),
    T.StructField(C.SESSION_ID, T.StringType(), False),
    T.StructField(C.CUSTOMER_ID, T.StringType(), True),      # null: an anonymous session
    T.StructField(C.SKU, T.StringType(), False),
    T.StructField(C.EVENT_TYPE, T.StringType(), False),      # view | add_to_cart | purchase
    T.StructField(C.EVENT_AT, T.TimestampType(), False),
    T.StructField(C.EVENT_DATE, T.DateType(), False),
    T.StructField(C.SOURCE_FILE, T.StringType(), False),
    T.StructField(C.RUN_ID, T.StringType(), False),
    T.StructField(C.INGESTED_AT, T.TimestampType(), False),
])

# Reason codes of quarantined events, in the order they are checked (the first that applies wins).
EVENT_REASONS = ("malformed_record", "undecodable_text", "missing_session_id", "missing_sku",
                 "missing_event_type", "unknown_event_type", "missing_event_time",
                 "unparsable_event_time", "event_time_before_floor", "future_event_time")

COUNTS = ("read", "accepted", "quarantined", "duplicate", "already_present")


def bronze_table(source_name: str) -> str:
    return f"bronze.{source_name}_events"


def event_reason(fields: dict[str, Column], malformed: Column, undecodable: Column,
                 ingest_started, rules: PlausibilitySection) -> Column:
    """The first reason code (see EVENT_REASONS) an event fails, or null when it is valid.
    ``fields``: session_id, sku, event_type_text, event_type (canonical; null when unknown),
    event_at_text and event_at (typed)."""
    import datetime as dt

    f = fields
    latest = ingest_started + dt.timedelta(days=rules.future_tolerance_days)
    checks = [
        (malformed, "malformed_record"),
        (undecodable, "undecodable_text"),
        (f[C.SESSION_ID].isNull(), "missing_session_id"),
        (f[C.SKU].isNull(), "missing_sku"),
        (f["event_type_text"].isNull(), "missing_event_type"),
        (f[C.EVENT_TYPE].isNull(), "unknown_event_type"),
        (f["event_at_text"].isNull(), "missing_event_time"),
        (f[C.EVENT_AT].isNull(), "unparsable_event_time"),
        (f[C.EVENT_AT] < F.lit(dt.datetime.combine(rules.earliest_date, dt.time())),
         "event_time_before_floor"),
        (f[C.EVENT_AT] > F.lit(latest), "future_event_time"),
    ]
    assert tuple(reason for _, reason in checks) == EVENT_REASONS
    return reduce(lambda expr, check: expr.when(*check), checks[1:], F.when(*checks[0]))


def with_event_canonical(df: DataFrame, mapping: dict[str, str | None], spec: EventsSpec, key: bytes,
                         run_started, rules: PlausibilitySection) -> DataFrame:
    """Parse, type and validate each raw event; returns ``line_id`` (the event's key), ``reason``
    (null when valid), ``raw_values`` (the fields as text, customer pseudonymised, for the
    quarantine; a malformed record keeps none of its content) and the silver columns."""
    src = lambda canon: source_column(df, mapping[canon])  # noqa: E731
    texts = {canon: text(src(canon)) for canon in C.EVENT_COLUMNS if canon != C.CUSTOMER_ID}
    customer = pseudonymise(normalise_customer_id(src(C.CUSTOMER_ID)), key)
    types = F.create_map(*[F.lit(v) for pair in spec.type_values.items() for v in pair])
    event_type = types[F.lower(texts[C.EVENT_TYPE])]
    event_at = to_timestamp(src(C.EVENT_AT), field_type(df, mapping[C.EVENT_AT]), spec.timestamp_formats)
    malformed = F.col(CORRUPT_RECORD).isNotNull()
    undecodable = reduce(lambda a, b: a | b, [
        F.coalesce(t.contains(REPLACEMENT_CHARACTER) | t.rlike(CONTROL_CHARACTERS_SQL), F.lit(False))
        for t in texts.values()])
    out = df.withColumn("_customer", customer).withColumn("_type", event_type).withColumn("_at", event_at)
    fields = {C.SESSION_ID: texts[C.SESSION_ID], C.SKU: texts[C.SKU], "event_type_text": texts[C.EVENT_TYPE],
              C.EVENT_TYPE: F.col("_type"), "event_at_text": texts[C.EVENT_AT], C.EVENT_AT: F.col("_at")}
    reason = event_reason(fields, malformed, undecodable, run_started, rules)
    # typed where it parsed, else the marked raw text: the same event in any formatting, one key
    content = [F.lit("event"), texts[C.SESSION_ID], F.col("_customer"), texts[C.SKU],
               F.coalesce(F.col("_type"), F.concat(F.lit("text:"), texts[C.EVENT_TYPE])),
               F.coalesce(F.unix_micros(F.col("_at")).cast("string"),
                          F.concat(F.lit("text:"), texts[C.EVENT_AT]))]
    event_id = F.sha2(F.concat_ws("\u0001", *[F.coalesce(c, F.lit("\u0000")) for c in content]), 256)
    raw_values = F.when(malformed, F.to_json(F.struct(F.lit(True).alias("malformed_record")))).otherwise(
        F.to_json(F.struct(texts[C.SESSION_ID].alias(C.SESSION_ID), F.col("_customer").alias(C.CUSTOMER_ID),
                           texts[C.SKU].alias(C.SKU), texts[C.EVENT_TYPE].alias(C.EVENT_TYPE),
                           texts[C.EVENT_AT].alias(C.EVENT_AT))))
    return out.select(
        F.when(malformed, F.sha2(F.concat(F.lit("event"), F.col(CORRUPT_RECORD)), 256)).otherwise(event_id)
        .alias(C.LINE_ID),
        F.col(C.SOURCE_FILE), reason.alias(C.REASON), raw_values.alias("raw_values"),
        texts[C.SESSION_ID].alias(C.SESSION_ID), F.col("_customer").alias(C.CUSTOMER_ID),
        texts[C.SKU].alias(C.SKU), F.col("_type").alias(C.EVENT_TYPE), F.col("_at").alias(C.EVENT_AT),
        F.to_date(F.col("_at")).alias(C.EVENT_DATE))


@dataclass
class StagedEvents:
    """The events of one batch, staged: raw records, classified distinct events, records per file,
    and which files were read (the file plan)."""

    plan: ingested.FilePlan
    raw: DataFrame | None
    classified: DataFrame | None
    records: dict[str, int]


def stage(run: JobRun, source_name: str, source: SourceSpec, key: bytes, staging: str) -> StagedEvents | None:
    """Plan, read and classify the source's events files into ``staging`` (None when the source
    has no events). Raises IngestError for a missing file or column, as the orders do."""
    from shopsense.ingest.batch import dedupe, with_row_hash

    spec = source.events
    if spec is None:
        return None
    spark, what = run.spark, f"source {source_name!r} events"
    listed = list_input_files(spark, resolve_path(spec.path))
    plan = ingested.plan(run, source_name, listed, run.conf.ingest.incremental)
    if not plan.read:
        return StagedEvents(plan, None, None, {})
    headers: dict[tuple[str, ...], list[str]] = {}
    raw = read_files(spark, spec, what, plan.read, headers)
    check_headers(headers, {c: (spec.columns.get(c, c),) for c in C.EVENT_COLUMNS}, what)
    mapping = column_mapping(raw, spec, C.EVENT_COLUMNS, (), what)
    with_row_hash(raw).write.mode("overwrite").parquet(f"{staging}/events_raw")
    staged_raw = spark.read.parquet(f"{staging}/events_raw")
    events = with_event_canonical(staged_raw, mapping, spec, key, run.computed_at,
                                  run.conf.ingest.plausibility)
    dedupe(events).write.mode("overwrite").parquet(f"{staging}/events_classified")
    classified = spark.read.parquet(f"{staging}/events_classified")
    records = {r[C.SOURCE_FILE]: int(r["count"]) for r in staged_raw.groupBy(C.SOURCE_FILE).count().collect()}
    return StagedEvents(plan, staged_raw, classified, records)


def reconcile(run: JobRun, staged: StagedEvents | None) -> dict[str, int] | None:
    """Events read, accepted, quarantined, duplicates within the batch, and (of the accepted and
    quarantined) already in silver; raises AssertionError when they do not add up (a bug)."""
    if staged is None:
        return None
    if staged.classified is None:
        return dict.fromkeys(COUNTS, 0)
    present = None
    for table, column in ((SILVER, C.EVENT_ID), ("silver.quarantine", C.LINE_ID)):
        if tables.table_exists(run.spark, run.conf, table):
            ids = run.read_output(table).select(F.col(column).alias(C.LINE_ID))
            present = ids if present is None else present.unionByName(ids)
    flagged = staged.classified.withColumn("_present", F.lit(False))
    if present is not None:
        hits = present.distinct().withColumn("_hit", F.lit(True))
        flagged = (staged.classified.join(hits, C.LINE_ID, "left")
                   .withColumn("_present", F.coalesce("_hit", F.lit(False))))
    row = flagged.agg(F.sum("copies").alias("read"), F.sum(F.col("copies") - 1).alias("duplicate"),
                      F.count_if(F.col(C.REASON).isNull()).alias("accepted"),
                      F.count_if(F.col(C.REASON).isNotNull()).alias("quarantined"),
                      F.count_if("_present").alias("already_present")).first()
    counts = {k: int(row[k] or 0) for k in COUNTS}
    if counts["read"] != counts["accepted"] + counts["quarantined"] + counts["duplicate"]:
        raise AssertionError(f"events do not reconcile: {counts}")
    return counts


def write(run: JobRun, staged: StagedEvents | None, source_name: str) -> None:
    """Bronze replaced per file read; silver.events and the quarantine insert-if-absent, a changed
    file's former rows replaced in the same commit; the files recorded in silver.ingested_files."""
    if staged is None:
        return
    if staged.classified is not None:
        files = sorted(staged.records)
        bronze = run.stamp(staged.raw.withColumn("source_name", F.lit(source_name)),
                           bronze_table(source_name))
        condition = f"{C.SOURCE_FILE} IN ({', '.join(tables.sql_string(f) for f in files)})"
        tables.replace_where(bronze, run.conf, bronze_table(source_name), condition)
        changed = staged.plan.changed
        replace = (f"t.{C.SOURCE_FILE} IN ({', '.join(tables.sql_string(f) for f in changed)})"
                   if changed else None)
        events = staged.classified
        run.insert_new(events.filter(F.col(C.REASON).isNull()).withColumnRenamed(C.LINE_ID, C.EVENT_ID),
                       SILVER, C.EVENT_ID, replace)
        run.insert_new(events.filter(F.col(C.REASON).isNotNull()), "silver.quarantine", C.LINE_ID, replace)
    ingested.record(run, source_name, staged.plan, staged.records)


def record_counts(run: JobRun, counts: dict[str, int] | None, staged: StagedEvents | None) -> None:
    """The events' figures in the run record (``events_read``, ...); a note without events."""
    if counts is None or staged is None:
        run.note("the source has no events file: silver.events not written")
        return
    for name in COUNTS:
        run.metric(f"events_{name}", counts[name])
    run.metric("events_files", len(staged.plan.read))
    if counts["quarantined"]:
        run.note(f"{counts['quarantined']:,} of {counts['read']:,} events quarantined (silver.quarantine, "
                 f"reasons in EVENT_REASONS)")


__all__ = ["EVENTS", "EVENT_REASONS", "IngestError", "stage", "reconcile", "write", "record_counts"]
