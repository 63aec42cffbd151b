"""Ingest: raw order files → bronze.order_lines_raw, silver.order_lines, silver.quarantine,
silver.products (and silver.inventory when the source has a snapshot).

Every input row is accounted for: rows read = accepted + quarantined + exact duplicates.
Nothing is written until every file has been read and every row classified (the batch is staged
under ``<warehouse>/_staging/<run id>`` first), so an unreadable file, a missing column or a bad
config leaves the previous tables as they were. Writes are idempotent: silver and quarantine rows
are keyed by a hash of the raw row and merged (insert-if-absent), bronze rows are replaced per
source file, so re-ingesting the same files changes nothing and a new file adds only its rows.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.core.config import Conf, resolve_path
from shopsense.core.runs import JobRun
from shopsense.core.settings import FileSpec, SourceSpec
from shopsense.ingest.products import build_products

DEV_PSEUDONYM_KEY = "shopsense-local-development-key-not-secret"
ROW_HASH = "row_hash"
COPIES = "copies"

# Reason codes of silver.quarantine, in the order they are checked (the first that applies wins).
REASONS = (
    "missing_order_id", "missing_sku", "missing_date", "unparsable_date", "missing_quantity",
    "quantity_not_numeric", "zero_quantity", "missing_price", "price_not_numeric",
    "positive_quantity_on_cancellation", "stock_adjustment", "non_positive_price",
)


class IngestError(RuntimeError):
    """Input the ingest cannot take: a missing file or column, an empty file, a missing key."""


# --------------------------------------------------------------------------------------------
# Column rules

def text(col: Column) -> Column:
    """Trimmed text, with blank strings as null."""
    trimmed = F.trim(col.cast("string"))
    return F.when(trimmed == "", None).otherwise(trimmed)


def normalise_customer_id(col: Column) -> Column:
    """Customer ids exported as floats (``17850.0``) become ``17850``; blanks become null."""
    return F.regexp_replace(text(col), r"^(\d+)\.0+$", "$1")


def to_number(col: Column) -> Column:
    """Text to double; null where it is not a finite number (never an error)."""
    value = text(col).try_cast("double")
    return F.when(F.isnan(value) | (F.abs(value) == float("inf")), None).otherwise(value)


def to_timestamp(col: Column, dtype: T.DataType, fmt: str | None) -> Column:
    """A timestamp from a timestamp, date or text column (``fmt`` a Spark datetime pattern);
    null where text does not parse."""
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType)):
        return col.cast("timestamp")
    if isinstance(dtype, T.DateType):
        return col.cast("timestamp")
    if fmt:
        return F.try_to_timestamp(text(col), F.lit(fmt))
    return text(col).try_cast("timestamp")


def hmac_sha256_hex(col: Column, key: bytes) -> Column:
    """HMAC-SHA256 of a string column under ``key`` (RFC 2104), from Spark built-ins, as hex."""
    block = 64
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    ipad = bytearray(b ^ 0x36 for b in key)
    opad = bytearray(b ^ 0x5C for b in key)
    inner = F.unhex(F.sha2(F.concat(F.lit(ipad), F.encode(col, "UTF-8")), 256))
    return F.sha2(F.concat(F.lit(opad), inner), 256)


def pseudonymise(col: Column, key: bytes) -> Column:
    """The keyed pseudonym of a customer id: the first 32 hex digits (128 bits) of its
    HMAC-SHA256; null stays null."""
    return F.when(col.isNull(), None).otherwise(F.substring(hmac_sha256_hex(col, key), 1, 32))


def rejection_reason(order_id: Column, sku: Column, ts_text: Column, ts: Column, qty_text: Column,
                     qty: Column, price_text: Column, price: Column, is_cancel: Column) -> Column:
    """The first reason code (see REASONS) a parsed order line fails, or null when it is valid."""
    rules = [
        (order_id.isNull(), "missing_order_id"),
        (sku.isNull(), "missing_sku"),
        (ts_text.isNull(), "missing_date"),
        (ts.isNull(), "unparsable_date"),
        (qty_text.isNull(), "missing_quantity"),
        (qty.isNull(), "quantity_not_numeric"),
        (qty == 0, "zero_quantity"),
        (price_text.isNull(), "missing_price"),
        (price.isNull(), "price_not_numeric"),
        (is_cancel & (qty > 0), "positive_quantity_on_cancellation"),
        (~is_cancel & (qty < 0) & (price == 0), "stock_adjustment"),
        (price <= 0, "non_positive_price"),
    ]
    expr = F.when(rules[0][0], rules[0][1])
    for condition, reason in rules[1:]:
        expr = expr.when(condition, reason)
    return expr


def line_type(is_cancel: Column, qty: Column) -> Column:
    return (F.when(is_cancel, C.LINE_CANCELLATION)
            .when(qty < 0, C.LINE_RETURN)
            .otherwise(C.LINE_SALE))


# --------------------------------------------------------------------------------------------
# Reading

def list_input_files(spark: SparkSession, path: str) -> list[tuple[str, int]]:
    """(file, size) of every data file a path or glob names, directories listed recursively
    (hidden ``_``/``.`` files skipped). Raises IngestError when nothing matches."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    statuses = fs.globStatus(hpath)
    if not statuses:
        raise IngestError(f"no input files match {path}")
    found: list[tuple[str, int]] = []
    for status in statuses:
        if status.isDirectory():
            it = fs.listFiles(status.getPath(), True)
            while it.hasNext():
                f = it.next()
                name = f.getPath().getName()
                if not name.startswith(("_", ".")):
                    found.append((f.getPath().toString(), int(f.getLen())))
        else:
            found.append((status.getPath().toString(), int(status.getLen())))
    if not found:
        raise IngestError(f"no input files match {path} (the folder holds no data files)")
    return sorted(found)


def read_files(spark: SparkSession, spec: FileSpec, what: str) -> DataFrame:
    """Read one file spec of a source (CSV as text columns, JSON primitives as text) and add
    ``source_file``. Checks first that the files exist and none is empty."""
    path = resolve_path(spec.path)
    files = list_input_files(spark, path)
    empty = [f for f, size in files if size == 0]
    if empty:
        raise IngestError(f"{what}: input file {empty[0]} is empty (no header, no rows)")
    fmt = spec.format
    options = {"header": "true", "inferSchema": "false"} if fmt == "csv" else {}
    if fmt == "json":
        options["primitivesAsString"] = "true"
    options.update({k: str(v) for k, v in spec.options.items()})
    df = spark.read.format(fmt).options(**options).load(path)
    return df.withColumn(C.SOURCE_FILE, F.col("_metadata.file_path"))


def column_mapping(df: DataFrame, spec: FileSpec, required: tuple[str, ...],
                   optional: tuple[str, ...], what: str) -> dict[str, str | None]:
    """Canonical name → source column (None for an absent optional one). Raises IngestError
    naming every required column the files lack and the columns they have."""
    mapping = spec.columns
    present = [c for c in df.columns if c != C.SOURCE_FILE]
    resolved: dict[str, str | None] = {}
    missing = []
    for canon in required + optional:
        source_col = mapping.get(canon, canon)
        if source_col in present:
            resolved[canon] = source_col
        elif canon in required:
            missing.append(source_col if source_col == canon else f"{source_col} (for {canon})")
        else:
            resolved[canon] = None
    if missing:
        raise IngestError(f"{what}: required column{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(missing)} not found in {spec.path}; "
                          f"columns present: {', '.join(present)}")
    return resolved


def pseudonym_key(conf: Conf, run: JobRun | None = None) -> bytes:
    """The pseudonymisation key from the environment variable conf names. Outside local mode
    an unset variable is an error; in local mode the fixed development key is used and noted."""
    env_name = conf.ingest.pseudonym_key_env
    value = os.environ.get(env_name)
    if value:
        return value.encode("utf-8")
    if not conf.is_local:
        raise IngestError(f"environment variable {env_name} is not set: it holds the key that "
                          f"pseudonymises customer ids (required outside local mode)")
    if run is not None:
        run.note(f"{env_name} is not set: customer ids were pseudonymised with the fixed "
                 f"development key (local mode only; set it for real data)")
        run.metric("dev_pseudonym_key", 1)
    return DEV_PSEUDONYM_KEY.encode("utf-8")


# --------------------------------------------------------------------------------------------
# Transforms

def with_row_hash(raw: DataFrame) -> DataFrame:
    """Add ``row_hash``: SHA-256 of the row's source columns as read (not its file), the key
    that makes exact duplicates and re-ingested rows recognisable."""
    data_cols = [c for c in raw.columns if c not in (C.SOURCE_FILE,)]
    return raw.withColumn(ROW_HASH, F.sha2(F.to_json(F.struct(*[F.col(f"`{c}`") for c in data_cols])), 256))


def dedupe_exact(raw: DataFrame) -> DataFrame:
    """One row per row_hash with ``copies`` (how many times it was read); the kept copy is the
    one from the first file by name."""
    data_cols = [c for c in raw.columns if c not in (ROW_HASH, C.SOURCE_FILE)]
    packed = F.struct(F.col(C.SOURCE_FILE), *[F.col(f"`{c}`") for c in data_cols])
    return (raw.groupBy(ROW_HASH)
            .agg(F.count(F.lit(1)).alias(COPIES), F.min(packed).alias("_row"))
            .select(ROW_HASH, COPIES, "_row.*"))


def with_canonical(df: DataFrame, mapping: dict[str, str | None], spec: FileSpec,
                   key: bytes, non_products: list[str]) -> DataFrame:
    """Parse, type and validate the mapped columns; add ``reason`` (null when the row is valid)
    and the silver columns. Keeps the raw text of each canonical field for the quarantine."""
    def src(canon: str) -> Column:
        name = mapping.get(canon)
        return F.col(f"`{name}`") if name else F.lit(None).cast("string")

    ts_type = df.schema[mapping[C.ORDERED_AT]].dataType
    cancel_prefix = spec.cancel_prefix
    order_id = text(src(C.ORDER_ID))
    is_cancel = (order_id.startswith(cancel_prefix) if cancel_prefix else F.lit(False))
    qty, price = to_number(src(C.QUANTITY)), to_number(src(C.UNIT_PRICE))
    ts = to_timestamp(src(C.ORDERED_AT), ts_type, spec.timestamp_format)
    customer = normalise_customer_id(src(C.CUSTOMER_ID))
    raw_values = F.to_json(F.struct(*[
        (pseudonymise(customer, key) if canon == C.CUSTOMER_ID else src(canon).cast("string")).alias(canon)
        for canon in C.ORDER_COLUMNS
    ]))
    out = (df
           .withColumn("_order_id", order_id)
           .withColumn("_is_cancel", F.coalesce(is_cancel, F.lit(False)))
           .withColumn("_qty", qty)
           .withColumn("_price", price)
           .withColumn("_ts", ts)
           .withColumn(C.REASON, rejection_reason(
               F.col("_order_id"), text(src(C.SKU)), text(src(C.ORDERED_AT)), F.col("_ts"),
               text(src(C.QUANTITY)), F.col("_qty"), text(src(C.UNIT_PRICE)), F.col("_price"),
               F.col("_is_cancel")))
           .withColumn("raw_values", raw_values))
    return out.select(
        F.col(ROW_HASH).alias(C.LINE_ID),
        F.col(ROW_HASH), F.col(COPIES), F.col(C.SOURCE_FILE), F.col(C.REASON), F.col("raw_values"),
        F.col("_order_id").alias(C.ORDER_ID),
        pseudonymise(customer, key).alias(C.CUSTOMER_ID),
        customer.isNull().alias(C.IS_GUEST),
        text(src(C.SKU)).alias(C.SKU),
        text(src(C.PRODUCT_NAME)).alias(C.PRODUCT_NAME),
        text(src(C.CATEGORY)).alias(C.CATEGORY),
        text(src(C.COUNTRY)).alias(C.COUNTRY),
        F.col("_qty").alias(C.QUANTITY),
        F.col("_price").alias(C.UNIT_PRICE),
        (F.col("_qty") * F.col("_price")).alias(C.REVENUE),
        F.col("_ts").alias(C.ORDERED_AT),
        F.to_date(F.col("_ts")).alias(C.ORDER_DATE),
        line_type(F.col("_is_cancel"), F.col("_qty")).alias(C.LINE_TYPE),
        (~text(src(C.SKU)).isin(non_products)).alias(C.IS_PRODUCT),
    )


def read_catalogue(spark: SparkSession, spec: FileSpec) -> DataFrame:
    """The product catalogue, typed; rows without a SKU are dropped by the caller (counted)."""
    df = read_files(spark, spec, "catalogue")
    mapping = column_mapping(df, spec, (C.SKU,), C.CATALOGUE_COLUMNS[1:], "catalogue")
    cols = []
    for canon in C.CATALOGUE_COLUMNS:
        name = mapping.get(canon)
        value = F.col(f"`{name}`") if name else F.lit(None)
        cols.append((text(value) if canon in (C.SKU, C.PRODUCT_NAME, C.CATEGORY)
                     else to_number(value)).alias(canon))
    return df.select(*cols)


def read_inventory(spark: SparkSession, spec: FileSpec) -> DataFrame:
    df = read_files(spark, spec, "inventory")
    mapping = column_mapping(df, spec, (C.SKU, C.ON_HAND), (C.ON_ORDER, C.AS_OF), "inventory")
    as_of = F.col(f"`{mapping[C.AS_OF]}`") if mapping[C.AS_OF] else F.current_date()
    on_order = to_number(F.col(f"`{mapping[C.ON_ORDER]}`")) if mapping[C.ON_ORDER] else F.lit(0.0)
    return df.select(
        text(F.col(f"`{mapping[C.SKU]}`")).alias(C.SKU),
        to_number(F.col(f"`{mapping[C.ON_HAND]}`")).alias(C.ON_HAND),
        F.coalesce(on_order, F.lit(0.0)).alias(C.ON_ORDER),
        F.to_date(as_of).alias(C.AS_OF))


# --------------------------------------------------------------------------------------------
# The job

def _delete_path(spark: SparkSession, path: str) -> None:
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(hpath, True)


def run(spark: SparkSession, conf: Conf) -> dict:
    """Ingest the source ``conf.ingest.source`` names. Returns the run summary (counts in
    ``metrics``: rows_read, rows_accepted, rows_quarantined, rows_duplicate)."""
    name = conf.ingest.source
    source = conf.sources[name]
    params = {"source": name, "orders": source.orders.path,
              "catalogue": source.catalogue.path if source.catalogue else None,
              "inventory": source.inventory.path if source.inventory else None}
    with JobRun(spark, conf, "ingest", params) as run:
        key = pseudonym_key(conf, run)
        raw = read_files(spark, source.orders, f"source {name!r} orders")
        mapping = column_mapping(raw, source.orders, C.REQUIRED_ORDER_COLUMNS,
                                 C.OPTIONAL_ORDER_COLUMNS, f"source {name!r} orders")
        staging = f"{resolve_path(conf.warehouse).rstrip('/')}/_staging/{run.run_id}"
        try:
            staged = stage(spark, raw, mapping, source, key, conf.ingest.non_product_skus, staging)
            counts = reconcile(staged.classified)
            write_tables(run, staged, name, conf.ingest.non_product_skus)
        finally:
            _delete_path(spark, staging)
        run.rows_in, run.rows_out = counts["read"], counts["accepted"]
        for metric in ("read", "accepted", "quarantined", "duplicate"):
            run.metric(f"rows_{metric}", counts[metric])
        run.metric("files", len(staged.files))
        run.metric("accepted_share", counts["accepted"] / counts["read"] if counts["read"] else None,
                   key=True)
    return run.summary()


@dataclass
class Staged:
    """One batch read whole into the staging folder before any table is written: the raw rows
    (with their hash), the classified distinct rows, the files read, and the optional inputs."""

    raw: DataFrame
    classified: DataFrame
    files: list[str]
    catalogue: DataFrame | None
    inventory: DataFrame | None


def stage(spark: SparkSession, raw: DataFrame, mapping: dict, source: SourceSpec, key: bytes,
          non_products: list[str], staging: str) -> Staged:
    """Read every file once into ``staging`` (a corrupt or unreadable file fails here, before any
    write) and classify the distinct rows; the catalogue and inventory snapshot likewise."""
    def parked(df: DataFrame, part: str) -> DataFrame:
        df.write.mode("overwrite").parquet(f"{staging}/{part}")
        return spark.read.parquet(f"{staging}/{part}")

    staged_raw = parked(with_row_hash(raw), "raw")
    classified = parked(with_canonical(dedupe_exact(staged_raw), mapping, source.orders, key,
                                       non_products), "classified")
    files = [r[0] for r in staged_raw.select(C.SOURCE_FILE).distinct().collect()]
    catalogue = parked(read_catalogue(spark, source.catalogue), "catalogue") if source.catalogue else None
    inventory = parked(read_inventory(spark, source.inventory), "inventory") if source.inventory else None
    return Staged(staged_raw, classified, files, catalogue, inventory)


def reconcile(classified: DataFrame) -> dict[str, int]:
    """Rows read, accepted, quarantined and exact duplicates of a classified batch; raises
    AssertionError when they do not add up (a bug, never bad input)."""
    row = classified.agg(
        F.sum(COPIES).alias("read"),
        F.sum(F.col(COPIES) - 1).alias("duplicate"),
        F.count_if(F.col(C.REASON).isNull()).alias("accepted"),
        F.count_if(F.col(C.REASON).isNotNull()).alias("quarantined")).first()
    counts = {k: int(row[k] or 0) for k in ("read", "accepted", "quarantined", "duplicate")}
    if counts["read"] != counts["accepted"] + counts["quarantined"] + counts["duplicate"]:
        raise AssertionError(f"rows do not reconcile: {counts}")
    return counts


def write_tables(run: JobRun, staged: Staged, source_name: str, non_products: list[str]) -> None:
    """Bronze replaced per file read, silver and quarantine insert-if-absent, products and the
    inventory snapshot replaced whole."""
    bronze = run.stamp(staged.raw.withColumn("source_name", F.lit(source_name)), "bronze.order_lines_raw")
    if staged.files:
        condition = f"{C.SOURCE_FILE} IN ({', '.join(tables.sql_string(f) for f in staged.files)})"
        tables.replace_where(bronze, run.conf, "bronze.order_lines_raw", condition)
    run.insert_new(staged.classified.filter(F.col(C.REASON).isNull()), "silver.order_lines", C.LINE_ID)
    run.insert_new(staged.classified.filter(F.col(C.REASON).isNotNull()), "silver.quarantine", C.LINE_ID)
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


def quarantine_summary(spark: SparkSession, conf: Conf) -> DataFrame:
    """Rows per reason code in silver.quarantine (small: one row per reason)."""
    return (tables.read_table(spark, conf, "silver.quarantine")
            .groupBy(C.REASON).count().orderBy(F.desc("count")))


