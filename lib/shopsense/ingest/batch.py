"""Ingest: raw order files → bronze.<source>_orders, silver.order_lines, silver.quarantine,
silver.products (and silver.inventory when the source has a snapshot, silver.events when it has
events: :mod:`shopsense.ingest.events`), silver.ingested_files.

Every input record is accounted for: records read = accepted + quarantined + duplicates within
the batch; of the accepted and quarantined, the run record also says how many silver already
held (a re-export of orders ingested before). A line's key (``line_id``) is a hash of its
canonical content (rules.content_key) or of the natural key the source declares, never of the
raw text, so the same order line in any formatting is inserted once. Only files that are new or
changed since the last run are read (ingest.files). Nothing is written until every file read
has been staged and every record classified (under ``<warehouse>/_staging/<run id>``), so an
unreadable file, a missing column or a bad config leaves the previous tables as they were;
staging left by a killed run is removed at the next start.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.core.config import Conf, resolve_path
from shopsense.core.runs import JobRun
from shopsense.core.settings import FileSpec, SourceSpec
from shopsense.ingest import events as ingest_events
from shopsense.ingest import files as ingested
from shopsense.ingest.keys import pseudonym_key, pseudonymise, warehouse_key_path
from shopsense.ingest.products import build_products
from shopsense.ingest.read import (IngestError, InputFile, check_headers, column_mapping, field_type,
                                   list_input_files, read_files, source_column)
from shopsense.ingest.rules import (CONTROL_CHARACTERS_SQL, CORRUPT_RECORD, REPLACEMENT_CHARACTER, content_key,
                                    declared_key, line_type, normalise_customer_id,
                                    rejection_reason, text, to_number, to_timestamp)

__all__ = ["IngestError", "run", "quarantine_summary"]

ROW_HASH = "row_hash"
COPIES = "copies"


def bronze_table(source_name: str) -> str:
    """Each source's own bronze table, so sources with different column spellings coexist."""
    return f"bronze.{source_name}_orders"


# --------------------------------------------------------------------------------------------
# Transforms

def with_row_hash(raw: DataFrame) -> DataFrame:
    """Add ``row_hash``: SHA-256 of the record as read (not its file): bronze's row id, which a
    quarantined malformed record points at instead of copying it."""
    data_cols = [c for c in raw.columns if c != C.SOURCE_FILE]
    return raw.withColumn(ROW_HASH, F.sha2(F.to_json(F.struct(*[F.col(f"`{c}`") for c in data_cols])), 256))


def with_canonical(df: DataFrame, mapping: dict[str, str | None], spec: FileSpec, key: bytes,
                   run_started, rules) -> DataFrame:
    """Parse, type and validate the mapped columns of each record; add ``reason`` (null when the
    line is valid), ``line_id`` and the silver columns. Keeps the raw text of each canonical field
    (customer pseudonymised) for the quarantine; a malformed record keeps none of its content."""
    def src(canon: str) -> Column:
        name = mapping.get(canon)
        return source_column(df, name) if name else F.lit(None).cast("string")

    order_id = text(src(C.ORDER_ID))
    is_cancel = F.coalesce(order_id.startswith(spec.cancel_prefix) if spec.cancel_prefix else F.lit(False),
                           F.lit(False))
    qty = to_number(src(C.QUANTITY))
    if mapping.get(C.UNIT_PRICE):
        price_text, price = text(src(C.UNIT_PRICE)), to_number(src(C.UNIT_PRICE))
    else:  # a line-total export: the unit price is the total over the quantity
        price_text, price = text(src(C.REVENUE)), F.try_divide(to_number(src(C.REVENUE)), qty)
    ts = to_timestamp(src(C.ORDERED_AT), field_type(df, mapping[C.ORDERED_AT]), spec.timestamp_formats)
    customer = pseudonymise(normalise_customer_id(src(C.CUSTOMER_ID)), key)
    texts = {canon: text(src(canon)) for canon in C.MAPPABLE_ORDER_COLUMNS}
    malformed = F.col(CORRUPT_RECORD).isNotNull()
    undecodable = reduce(lambda a, b: a | b, [
        F.coalesce(t.contains(REPLACEMENT_CHARACTER) | t.rlike(CONTROL_CHARACTERS_SQL), F.lit(False))
        for t in texts.values()])
    out = (df.withColumn("_order_id", order_id).withColumn("_is_cancel", is_cancel)
           .withColumn("_qty", qty).withColumn("_price", price).withColumn("_ts", ts)
           .withColumn("_customer", customer))
    fields = {C.ORDER_ID: F.col("_order_id"), C.SKU: texts[C.SKU], "ordered_at_text": texts[C.ORDERED_AT],
              C.ORDERED_AT: F.col("_ts"), "quantity_text": texts[C.QUANTITY], C.QUANTITY: F.col("_qty"),
              "unit_price_text": price_text, C.UNIT_PRICE: F.col("_price")}
    reason = rejection_reason(fields, malformed, undecodable, F.col("_is_cancel"), run_started, rules)
    typed_or_text = {
        C.ORDER_ID: F.col("_order_id"), C.CUSTOMER_ID: F.col("_customer"), C.SKU: texts[C.SKU],
        C.PRODUCT_NAME: texts[C.PRODUCT_NAME], C.CATEGORY: texts[C.CATEGORY], C.COUNTRY: texts[C.COUNTRY],
        C.QUANTITY: F.coalesce(F.col("_qty").cast("string"), F.concat(F.lit("text:"), texts[C.QUANTITY])),
        C.UNIT_PRICE: F.coalesce(F.col("_price").cast("string"), F.concat(F.lit("text:"), price_text)),
        C.ORDERED_AT: F.coalesce(F.unix_micros(F.col("_ts")).cast("string"),
                                 F.concat(F.lit("text:"), texts[C.ORDERED_AT])),
    }
    if spec.key_columns:
        line_id = declared_key([source_column(df, c) for c in spec.key_columns])
    else:
        line_id = content_key(typed_or_text)
    raw_values = F.when(malformed, F.to_json(F.struct(
        F.lit(True).alias("malformed_record"), F.col(ROW_HASH).alias("bronze_row_hash")))).otherwise(
        F.to_json(F.struct(*[(F.col("_customer") if canon == C.CUSTOMER_ID else texts[canon]).alias(canon)
                             for canon in C.MAPPABLE_ORDER_COLUMNS])))
    out = out.withColumn(C.REASON, reason)
    return out.select(
        F.when(malformed, F.sha2(F.col(CORRUPT_RECORD), 256)).otherwise(line_id).alias(C.LINE_ID),
        F.col(ROW_HASH), F.col(C.SOURCE_FILE), F.col(C.REASON), raw_values.alias("raw_values"),
        F.col("_order_id").alias(C.ORDER_ID),
        F.col("_customer").alias(C.CUSTOMER_ID),
        F.col("_customer").isNull().alias(C.IS_GUEST),
        texts[C.SKU].alias(C.SKU),
        texts[C.PRODUCT_NAME].alias(C.PRODUCT_NAME),
        texts[C.CATEGORY].alias(C.CATEGORY),
        texts[C.COUNTRY].alias(C.COUNTRY),
        F.col("_qty").alias(C.QUANTITY),
        F.col("_price").alias(C.UNIT_PRICE),
        (F.col("_qty") * F.col("_price")).alias(C.REVENUE),
        F.col("_ts").alias(C.ORDERED_AT),
        F.to_date(F.col("_ts")).alias(C.ORDER_DATE),
        line_type(F.col("_is_cancel"), F.col("_qty")).alias(C.LINE_TYPE),
    )


def dedupe(lines: DataFrame) -> DataFrame:
    """One row per ``line_id`` with ``copies`` (how many records of the batch carry it); the kept
    copy is the one from the first file by name."""
    data_cols = [c for c in lines.columns if c not in (C.LINE_ID, C.SOURCE_FILE)]
    packed = F.struct(F.col(C.SOURCE_FILE), *[F.col(f"`{c}`") for c in data_cols])
    return (lines.groupBy(C.LINE_ID)
            .agg(F.count(F.lit(1)).alias(COPIES), F.min(packed).alias("_row"))
            .select(C.LINE_ID, COPIES, "_row.*"))


def with_catalogue(lines: DataFrame, catalogue: DataFrame | None, non_products: list[str]) -> DataFrame:
    """``is_product``, and the catalogue's category (and name) where a line has none."""
    lines = lines.withColumn(C.IS_PRODUCT, ~F.col(C.SKU).isin(non_products))
    if catalogue is None:
        return lines
    cat = (catalogue.filter(F.col(C.SKU).isNotNull()).dropDuplicates([C.SKU])
           .select(C.SKU, F.col(C.CATEGORY).alias("_cat_category"),
                   F.col(C.PRODUCT_NAME).alias("_cat_name")))
    return (lines.join(F.broadcast(cat), C.SKU, "left")
            .withColumn(C.CATEGORY, F.coalesce(C.CATEGORY, "_cat_category"))
            .withColumn(C.PRODUCT_NAME, F.coalesce(C.PRODUCT_NAME, "_cat_name"))
            .drop("_cat_category", "_cat_name"))


def read_catalogue(spark: SparkSession, spec: FileSpec) -> DataFrame:
    """The product catalogue, typed; rows without a SKU are dropped by the caller (counted)."""
    df = read_files(spark, spec, "catalogue")
    mapping = column_mapping(df, spec, (C.SKU,), C.CATALOGUE_COLUMNS[1:], "catalogue")
    cols = []
    for canon in C.CATALOGUE_COLUMNS:
        name = mapping.get(canon)
        value = source_column(df, name) if name else F.lit(None)
        cols.append((text(value) if canon in (C.SKU, C.PRODUCT_NAME, C.CATEGORY)
                     else to_number(value)).alias(canon))
    return df.select(*cols)


def read_inventory(spark: SparkSession, spec: FileSpec) -> DataFrame:
    df = read_files(spark, spec, "inventory")
    mapping = column_mapping(df, spec, (C.SKU, C.ON_HAND), (C.ON_ORDER, C.AS_OF), "inventory")
    col = lambda canon: source_column(df, mapping[canon])  # noqa: E731
    as_of = col(C.AS_OF) if mapping[C.AS_OF] else F.current_date()
    on_order = to_number(col(C.ON_ORDER)) if mapping[C.ON_ORDER] else F.lit(0.0)
    return df.select(
        text(col(C.SKU)).alias(C.SKU),
        to_number(col(C.ON_HAND)).alias(C.ON_HAND),
        F.coalesce(on_order, F.lit(0.0)).alias(C.ON_ORDER),
        F.to_date(as_of).alias(C.AS_OF))


# --------------------------------------------------------------------------------------------
# Staging

def _delete_path(spark: SparkSession, path: str) -> None:
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(hpath, True)


def staging_root(conf: Conf) -> str:
    return f"{resolve_path(conf.warehouse).rstrip('/')}/_staging"


def _owner_alive(owner: str) -> bool:
    """Whether the process an ``owner`` marker (``host pid``) names still runs on this host;
    a marker from another host counts as alive (it cannot be checked from here)."""
    host, _, pid = owner.partition(" ")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def clean_stale_staging(run: JobRun) -> int:
    """Remove staging folders whose run is gone (killed), which hold raw rows; returns how many."""
    spark = run.spark
    jvm = spark.sparkContext._jvm
    root = jvm.org.apache.hadoop.fs.Path(staging_root(run.conf))
    fs = root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(root):
        return 0
    removed = 0
    for status in fs.listStatus(root):
        marker = jvm.org.apache.hadoop.fs.Path(status.getPath(), "_owner")
        owner = ""
        if fs.exists(marker):
            stream = fs.open(marker)
            owner = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8")).readLine() or ""
            stream.close()
        if not owner or not _owner_alive(owner):
            fs.delete(status.getPath(), True)
            removed += 1
    if removed:
        run.note(f"removed {removed} staging folder(s) left by killed ingest runs (they held raw rows)")
    return removed


def _mark_owner(spark: SparkSession, staging: str) -> None:
    jvm = spark.sparkContext._jvm
    marker = jvm.org.apache.hadoop.fs.Path(f"{staging}/_owner")
    fs = marker.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    out = fs.create(marker, True)
    out.write(f"{socket.gethostname()} {os.getpid()}\n".encode("utf-8"))
    out.close()


@dataclass
class Staged:
    """One batch read whole into the staging folder before any table is written: the raw
    records (with their hash), the classified distinct lines, the records per file, and the
    optional inputs."""

    raw: DataFrame | None
    classified: DataFrame | None
    records: dict[str, int]
    catalogue: DataFrame | None
    inventory: DataFrame | None


def stage(run: JobRun, source_name: str, source: SourceSpec, read: list[InputFile], key: bytes,
          staging: str) -> Staged:
    """Read every file to read once into ``staging`` (a corrupt or unreadable file fails here,
    before any write) and classify the distinct lines; the catalogue and inventory snapshot
    likewise."""
    spark, conf = run.spark, run.conf

    def parked(df: DataFrame, part: str) -> DataFrame:
        df.write.mode("overwrite").parquet(f"{staging}/{part}")
        return spark.read.parquet(f"{staging}/{part}")

    _mark_owner(spark, staging)
    catalogue = parked(read_catalogue(spark, source.catalogue), "catalogue") if source.catalogue else None
    inventory = parked(read_inventory(spark, source.inventory), "inventory") if source.inventory else None
    if not read:
        return Staged(None, None, {}, catalogue, inventory)
    what = f"source {source_name!r} orders"
    headers: dict[tuple[str, ...], list[str]] = {}
    raw = read_files(spark, source.orders, what, read, headers)
    named = lambda canon: source.orders.columns.get(canon, canon)  # noqa: E731
    label = lambda canon: named(canon) if named(canon) == canon else f"{named(canon)} (for {canon})"  # noqa: E731
    check_headers(headers, {label(c): (named(c), named(C.REVENUE)) if c == C.UNIT_PRICE else (named(c),)
                            for c in C.REQUIRED_ORDER_COLUMNS}, what)   # a unit price or a line total
    mapping = column_mapping(raw, source.orders, C.REQUIRED_ORDER_COLUMNS, C.OPTIONAL_ORDER_COLUMNS + (C.REVENUE,),
                             what, alternatives={C.UNIT_PRICE: C.REVENUE})
    missing_keys = [c for c in source.orders.key_columns if field_type(raw, c) is None]
    if missing_keys:
        raise IngestError(f"{what}: key column(s) {', '.join(missing_keys)} not found in "
                          f"{source.orders.path}; columns present: {', '.join(raw.columns)}")
    staged_raw = parked(with_row_hash(raw), "raw")
    lines = with_canonical(staged_raw, mapping, source.orders, key, run.computed_at,
                           conf.ingest.plausibility)
    classified = parked(with_catalogue(dedupe(lines), catalogue, conf.ingest.non_product_skus), "classified")
    records = {r[C.SOURCE_FILE]: int(r["count"]) for r in staged_raw.groupBy(C.SOURCE_FILE).count().collect()}
    return Staged(staged_raw, classified, records, catalogue, inventory)


def reconcile(run: JobRun, classified: DataFrame | None) -> dict[str, int]:
    """Records read, accepted, quarantined, duplicates within the batch, and (of the accepted
    and quarantined) already present in silver; raises AssertionError when they do not add up
    (a bug, never bad input)."""
    names = ("read", "accepted", "quarantined", "duplicate", "already_present")
    if classified is None:
        return dict.fromkeys(names, 0)
    present = None
    for table in ("silver.order_lines", "silver.quarantine"):
        if tables.table_exists(run.spark, run.conf, table):
            ids = run.read_output(table).select(C.LINE_ID)
            present = ids if present is None else present.unionByName(ids)
    flagged = classified.withColumn("_present", F.lit(False))
    if present is not None:
        hits = present.distinct().withColumn("_hit", F.lit(True))
        flagged = classified.join(hits, C.LINE_ID, "left").withColumn("_present", F.coalesce("_hit", F.lit(False)))
    row = flagged.agg(
        F.sum(COPIES).alias("read"),
        F.sum(F.col(COPIES) - 1).alias("duplicate"),
        F.count_if(F.col(C.REASON).isNull()).alias("accepted"),
        F.count_if(F.col(C.REASON).isNotNull()).alias("quarantined"),
        F.count_if("_present").alias("already_present")).first()
    counts = {k: int(row[k] or 0) for k in names}
    if counts["read"] != counts["accepted"] + counts["quarantined"] + counts["duplicate"]:
        raise AssertionError(f"records do not reconcile: {counts}")
    return counts


# --------------------------------------------------------------------------------------------
# Writing

def write_tables(run: JobRun, staged: Staged, source_name: str, changed: list[str]) -> None:
    """Bronze replaced per file read; silver and quarantine insert-if-absent, a changed file's
    former rows replaced in the same commit; products and the inventory snapshot replaced whole."""
    non_products = run.conf.ingest.non_product_skus
    if staged.classified is not None:
        files = sorted(staged.records)
        bronze = run.stamp(staged.raw.withColumn("source_name", F.lit(source_name)), bronze_table(source_name))
        condition = f"{C.SOURCE_FILE} IN ({', '.join(tables.sql_string(f) for f in files)})"
        tables.replace_where(bronze, run.conf, bronze_table(source_name), condition)
        replace = (f"t.{C.SOURCE_FILE} IN ({', '.join(tables.sql_string(f) for f in changed)})"
                   if changed else None)
        lines = staged.classified
        run.insert_new(lines.filter(F.col(C.REASON).isNull()), "silver.order_lines", C.LINE_ID, replace)
        run.insert_new(lines.filter(F.col(C.REASON).isNotNull()), "silver.quarantine", C.LINE_ID, replace)
    if tables.table_exists(run.spark, run.conf, "silver.order_lines"):
        order_lines = run.read_output("silver.order_lines")
        run.write(build_products(order_lines, staged.catalogue, non_products), "silver.products")
    if staged.catalogue is None:
        run.note("no product catalogue: silver.products derived from order lines "
                 "(latest name, median sale price; costs and lead times empty)")
    else:
        no_sku = staged.catalogue.filter(F.col(C.SKU).isNull()).count()
        if no_sku:
            run.note(f"{no_sku:,} catalogue rows without a SKU were left out of silver.products")
    if staged.inventory is not None:
        run.write(staged.inventory.filter(F.col(C.SKU).isNotNull())
                  .withColumn(C.ON_HAND, F.coalesce(C.ON_HAND, F.lit(0.0))), "silver.inventory")
    else:
        run.note("no inventory snapshot: silver.inventory not written")


def require_not_empty(files: list[InputFile], what: str) -> None:
    """An empty file (no header, no rows) is an error: it is a failed export, not an empty day."""
    empty = [f.path for f in files if f.size == 0]
    if empty:
        raise IngestError(f"{what}: input file {empty[0]} is empty (no header, no rows)")


def source_key(run: JobRun, source: SourceSpec) -> bytes:
    """The pseudonymisation key (ingest.keys), its kind recorded in the run's parameters."""
    key, kind = pseudonym_key(run.conf, source)
    run.parameters["pseudonym_key"] = kind
    env_name = run.conf.ingest.pseudonym_key_env
    if kind == "development":
        run.note(f"{env_name} is not set: the generated sample's ids were pseudonymised with the "
                 f"fixed development key")
    elif kind == "warehouse":
        run.note(f"{env_name} is not set: customer ids were pseudonymised with this warehouse's own "
                 f"random key, {warehouse_key_path(run.conf)} (keep it with the warehouse)")
    return key


def rekey_old_silver(run: JobRun) -> None:
    """A warehouse written before line keys came from content (silver.order_lines without
    silver.ingested_files) has keys hashed from the raw text: re-key its lines from their
    canonical content, the same hash new lines get, keeping one line per key (one commit), so
    that re-reading its files inserts nothing twice. Quarantine keys are left as they were."""
    spark, conf = run.spark, run.conf
    if (not tables.table_exists(spark, conf, "silver.order_lines")
            or tables.table_exists(spark, conf, ingested.TABLE)):
        return
    lines = run.read_output("silver.order_lines")
    values = {c: F.col(c) for c in (C.ORDER_ID, C.CUSTOMER_ID, C.SKU, C.PRODUCT_NAME, C.CATEGORY, C.COUNTRY)}
    values[C.QUANTITY] = F.col(C.QUANTITY).cast("string")
    values[C.UNIT_PRICE] = F.col(C.UNIT_PRICE).cast("string")
    values[C.ORDERED_AT] = F.unix_micros(F.col(C.ORDERED_AT)).cast("string")
    rekeyed = lines.withColumn(C.LINE_ID, content_key(values))
    first = F.min(F.struct(C.SOURCE_FILE, C.INGESTED_AT, *[c for c in lines.columns if c not in
                                                          (C.LINE_ID, C.SOURCE_FILE, C.INGESTED_AT)]))
    kept = rekeyed.groupBy(C.LINE_ID).agg(first.alias("_l")).select(C.LINE_ID, "_l.*")
    before = lines.count()
    # written as is (not re-stamped): the lines keep the run and time that ingested them
    tables.overwrite(kept.localCheckpoint(), conf, "silver.order_lines")
    after = run.read_output("silver.order_lines").count()
    run.note(f"silver.order_lines had keys from the raw text (written by an older shopsense): "
             f"re-keyed from content; {before - after:,} lines that were the same line exported "
             f"twice were merged ({after:,} remain)")
    run.metric("rows_merged_by_rekey", before - after)


def record_counts(run: JobRun, counts: dict[str, int], plan: ingested.FilePlan) -> None:
    run.rows_in, run.rows_out = counts["read"], counts["accepted"] - counts["already_present"]
    for metric in ("read", "accepted", "quarantined", "duplicate", "already_present"):
        run.metric(f"rows_{metric}", counts[metric])
    run.metric("files", len(plan.read))
    run.metric("files_changed", len(plan.changed))
    run.metric("files_unchanged", plan.unchanged + len(plan.touched))
    if not plan.read:
        run.note(f"no new or changed files under the source's path ({plan.unchanged + len(plan.touched)} "
                 f"already ingested): nothing read")
    if counts["already_present"]:
        run.note(f"{counts['already_present']:,} lines were already in silver (ingested before from "
                 f"these or other files): not inserted again")
    run.metric("accepted_share", counts["accepted"] / counts["read"] if counts["read"] else None, key=True)


# --------------------------------------------------------------------------------------------
# The job

def run(spark: SparkSession, conf: Conf) -> dict:
    """Ingest the source ``conf.ingest.source`` names. Returns the run summary (counts in
    ``metrics``: rows_read, rows_accepted, rows_quarantined, rows_duplicate, rows_already_present)."""
    name = conf.ingest.source
    source = conf.sources[name]
    params = {"source": name, "orders": source.orders.path,
              "catalogue": source.catalogue.path if source.catalogue else None,
              "inventory": source.inventory.path if source.inventory else None,
              "events": source.events.path if source.events else None}
    with JobRun(spark, conf, "ingest", params) as run:
        key = source_key(run, source)
        clean_stale_staging(run)
        rekey_old_silver(run)
        listed = list_input_files(spark, resolve_path(source.orders.path))
        require_not_empty(listed, f"source {name!r} orders")
        plan = ingested.plan(run, name, listed, conf.ingest.incremental)
        staging = f"{staging_root(conf)}/{run.run_id}"
        try:
            staged = stage(run, name, source, plan.read, key, staging)
            events = ingest_events.stage(run, name, source, key, staging)
            counts = reconcile(run, staged.classified)
            event_counts = ingest_events.reconcile(run, events)
            write_tables(run, staged, name, plan.changed)
            ingested.record(run, name, plan, staged.records)
            ingest_events.write(run, events, name)
        finally:
            _delete_path(spark, staging)
        record_counts(run, counts, plan)
        ingest_events.record_counts(run, event_counts, events)
    return run.summary()


def quarantine_summary(spark: SparkSession, conf: Conf) -> DataFrame:
    """Rows per reason code in silver.quarantine (small: one row per reason)."""
    return (tables.read_table(spark, conf, "silver.quarantine")
            .groupBy(C.REASON).count().orderBy(F.desc("count")))
