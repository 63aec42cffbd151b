"""The one registry of tables (name -> schema), where they live, and the reads and writes
behind the job context (:class:`shopsense.core.runs.JobRun`).

Tables are Delta tables at ``<warehouse>/<layer>/<name>`` (``silver.order_lines`` lives at
``<warehouse>/silver/order_lines``), so notebooks and other tools open them by path, and they are
registered by name in the Spark catalog (a database per layer, external tables at those
locations), so ``spark.sql("SELECT * FROM gold.recommendations")`` works too. Every write is
atomic (one Delta commit per table).
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from typing import Iterator

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import columns as C
from shopsense.core.config import Conf, resolve_path
from shopsense.core.errors import ConcurrentWriteError, WarehouseError

RUN_COLUMNS = [T.StructField(C.RUN_ID, T.StringType(), False),
               T.StructField(C.COMPUTED_AT, T.TimestampType(), False)]


def without_run_columns(schema: T.StructType) -> T.StructType:
    """A table's schema without the run columns: what a job computes before JobRun.write
    stamps it."""
    return T.StructType([f for f in schema.fields if f.name not in (C.RUN_ID, C.COMPUTED_AT)])

ORDER_LINES = T.StructType([
    T.StructField(C.LINE_ID, T.StringType(), False),
    T.StructField(C.ORDER_ID, T.StringType(), False),
    T.StructField(C.CUSTOMER_ID, T.StringType(), True),
    T.StructField(C.IS_GUEST, T.BooleanType(), False),
    T.StructField(C.SKU, T.StringType(), False),
    T.StructField(C.PRODUCT_NAME, T.StringType(), True),
    T.StructField(C.CATEGORY, T.StringType(), True),
    T.StructField(C.COUNTRY, T.StringType(), True),
    T.StructField(C.QUANTITY, T.DoubleType(), False),
    T.StructField(C.UNIT_PRICE, T.DoubleType(), False),
    T.StructField(C.REVENUE, T.DoubleType(), False),
    T.StructField(C.ORDERED_AT, T.TimestampType(), False),
    T.StructField(C.ORDER_DATE, T.DateType(), False),
    T.StructField(C.LINE_TYPE, T.StringType(), False),
    T.StructField(C.IS_PRODUCT, T.BooleanType(), False),
    T.StructField(C.SOURCE_FILE, T.StringType(), False),
    T.StructField(C.RUN_ID, T.StringType(), False),
    T.StructField(C.INGESTED_AT, T.TimestampType(), False),
])

QUARANTINE = T.StructType([
    T.StructField(C.LINE_ID, T.StringType(), False),
    T.StructField(C.SOURCE_FILE, T.StringType(), False),
    T.StructField(C.REASON, T.StringType(), False),
    # The row's canonical fields as text, JSON-encoded, with the customer id pseudonymised.
    T.StructField("raw_values", T.StringType(), False),
    T.StructField(C.RUN_ID, T.StringType(), False),
    T.StructField(C.INGESTED_AT, T.TimestampType(), False),
])

PRODUCTS = T.StructType([
    T.StructField(C.SKU, T.StringType(), False),
    T.StructField(C.PRODUCT_NAME, T.StringType(), True),
    T.StructField(C.CATEGORY, T.StringType(), True),
    T.StructField(C.UNIT_PRICE, T.DoubleType(), True),
    T.StructField(C.UNIT_COST, T.DoubleType(), True),
    T.StructField(C.LEAD_TIME_DAYS, T.DoubleType(), True),
    T.StructField(C.LEAD_TIME_STD_DAYS, T.DoubleType(), True),
    T.StructField(C.PACK_SIZE, T.DoubleType(), True),
    T.StructField(C.MIN_ORDER_QTY, T.DoubleType(), True),
    T.StructField(C.IS_PRODUCT, T.BooleanType(), False),
    # "catalogue" where the product catalogue lists the SKU, "derived" where only orders do.
    T.StructField("origin", T.StringType(), False),
    # The fields taken from the order lines (product_name, category, unit_price) where the
    # catalogue is silent or absent; re-derived as of a date by ingest.products.products_as_of.
    T.StructField("from_orders", T.ArrayType(T.StringType(), True), False),
    *RUN_COLUMNS,
])

INVENTORY = T.StructType([
    T.StructField(C.SKU, T.StringType(), False),
    T.StructField(C.ON_HAND, T.DoubleType(), False),
    T.StructField(C.ON_ORDER, T.DoubleType(), False),
    T.StructField(C.AS_OF, T.DateType(), False),
    *RUN_COLUMNS,
])

# One row per state of a run, appended (never updated, so concurrent runs never conflict on
# it): ``running`` when the run starts, then its outcome (``succeeded``, ``failed``) with the
# same run_id, or ``abandoned`` when a later run finds the process gone. ``skipped`` runs have
# one row. The run's state is its latest row: read it with shopsense.core.runs.read_runs.
# ``host``, ``pid`` and ``recorded_at`` came with the running rows; older tables gain them on
# the next append (null in the old rows).
JOB_RUNS = T.StructType([
    T.StructField(C.RUN_ID, T.StringType(), False),
    T.StructField("job", T.StringType(), False),
    T.StructField("status", T.StringType(), False),
    T.StructField("started_at", T.TimestampType(), False),
    T.StructField("ended_at", T.TimestampType(), True),      # null while running, or abandoned
    T.StructField("duration_s", T.DoubleType(), True),       # null while running, or abandoned
    T.StructField("parameters", T.StringType(), False),
    T.StructField("input_versions", T.MapType(T.StringType(), T.LongType()), True),
    T.StructField("rows_in", T.LongType(), True),
    T.StructField("rows_out", T.LongType(), True),
    T.StructField("metrics", T.MapType(T.StringType(), T.DoubleType()), True),
    T.StructField("notes", T.ArrayType(T.StringType()), True),
    T.StructField("error", T.StringType(), True),
    T.StructField("host", T.StringType(), True),             # the driver's host name
    T.StructField("pid", T.LongType(), True),                # the driver's process id
    T.StructField("recorded_at", T.TimestampType(), True),   # when this row was appended
])

# Every table shopsense writes, and where its explicit schema is declared ("module:NAME", beside
# the code that computes it; resolved on first use). Bronze tables keep the columns of the export
# as read, so they have none: each source has its own, bronze.<source>_orders (and
# bronze.order_lines_raw is the one table all sources shared before).
REGISTRY: dict[str, str | None] = {
    "bronze.order_lines_raw": None,
    "silver.ingested_files": "shopsense.ingest.files:INGESTED_FILES",
    "silver.order_lines": "shopsense.core.tables:ORDER_LINES",
    "silver.quarantine": "shopsense.core.tables:QUARANTINE",
    "silver.products": "shopsense.core.tables:PRODUCTS",
    "silver.inventory": "shopsense.core.tables:INVENTORY",
    "silver.events": "shopsense.ingest.events:EVENTS",
    "gold.customer_features": "shopsense.customers.features:CUSTOMER_FEATURES",
    "gold.customer_segments": "shopsense.customers.segments:CUSTOMER_SEGMENTS",
    "gold.segment_profiles": "shopsense.customers.segments:SEGMENT_PROFILES",
    "gold.rfm_segments": "shopsense.customers.rfm:RFM_SEGMENTS",
    "gold.segment_transitions": "shopsense.customers.migration:SEGMENT_TRANSITIONS",
    "gold.segment_mix": "shopsense.customers.migration:SEGMENT_MIX",
    "gold.customer_value": "shopsense.customers.value:CUSTOMER_VALUE",
    "gold.customer_value_metrics": "shopsense.customers.value:CUSTOMER_VALUE_METRICS",
    "gold.purchase_propensity": "shopsense.customers.propensity:PURCHASE_PROPENSITY",
    "gold.propensity_metrics": "shopsense.customers.propensity:PROPENSITY_METRICS",
    "gold.propensity_curves": "shopsense.customers.propensity:PROPENSITY_CURVES",
    "gold.journey_funnel": "shopsense.customers.journey:JOURNEY_FUNNEL",
    "gold.journey_transitions": "shopsense.customers.journey:JOURNEY_TRANSITIONS",
    "gold.association_rules": "shopsense.baskets.rules:ASSOCIATION_RULES",
    "gold.frequently_bought_together": "shopsense.baskets.rules:FREQUENTLY_BOUGHT_TOGETHER",
    "gold.sku_daily_demand": "shopsense.supply.demand:SKU_DAILY_DEMAND",
    "gold.demand_forecast": "shopsense.supply.forecast:DEMAND_FORECAST",
    "gold.forecast_accuracy": "shopsense.supply.forecast:FORECAST_ACCURACY",
    "gold.forecast_accuracy_summary": "shopsense.supply.forecast:FORECAST_ACCURACY_SUMMARY",
    "gold.recommendations": "shopsense.recommend.als:RECOMMENDATIONS",
    "gold.recommendation_metrics": "shopsense.recommend.als:RECOMMENDATION_METRICS",
    "gold.inventory_policy": "shopsense.supply.inventory:INVENTORY_POLICY",
    "gold.inventory_simulation": "shopsense.supply.inventory:INVENTORY_SIMULATION",
    "gold.job_runs": "shopsense.core.tables:JOB_RUNS",
}


def schema(name: str) -> T.StructType | None:
    """The registered schema of table ``name`` (None for bronze tables, which keep the
    export's columns). Raises KeyError naming the known tables for an unknown name."""
    import importlib

    if name.startswith("bronze."):
        return None
    if name not in REGISTRY:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(REGISTRY)}")
    ref = REGISTRY[name]
    if ref is None:
        return None
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


class TableNotFoundError(RuntimeError):
    """A job needs a table an upstream job has not written yet."""


def table_path(conf: Conf, name: str) -> str:
    """Location of table ``layer.name`` under the warehouse."""
    layer, _, table = name.partition(".")
    if not table:
        raise ValueError(f"table name must be layer.name, got {name!r}")
    return f"{resolve_path(conf.warehouse).rstrip('/')}/{layer}/{table}"


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file:")


def check_warehouse(conf: Conf) -> str:
    """Make sure the warehouse can take writes before anything is written: create its folder if
    needed and create (and remove) a file in it; the layer folders and tables already there must
    be writable folders too. Returns the warehouse path. Raises :class:`WarehouseError` with one
    line naming the path and the cause. Only local paths are checked (a ``scheme://`` warehouse
    is left to its file system)."""
    root = resolve_path(conf.warehouse)
    if not _is_local(root):
        return root
    local = root.removeprefix("file://").removeprefix("file:").rstrip("/") or "/"
    blocker = next((p for p in [local, *_parents(local)] if os.path.lexists(p) and not os.path.isdir(p)), None)
    if blocker == local:
        raise WarehouseError(f"warehouse {local} is a file, not a folder: set warehouse to a folder "
                             f"(or move the file away)")
    if blocker is not None:
        raise WarehouseError(f"warehouse {local} cannot be created: {blocker} is a file, not a folder")
    try:
        os.makedirs(local, exist_ok=True)
        probe = os.path.join(local, f".shopsense-write-check-{uuid.uuid4().hex}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise WarehouseError(f"warehouse {local} is not writable: {exc.strerror or exc} "
                             f"({exc.filename or local})") from None
    for folder in _warehouse_folders(local):
        if not os.path.isdir(folder):
            raise WarehouseError(f"warehouse {local} is not usable: {folder} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise WarehouseError(f"warehouse {local} is not writable: {folder} is read-only for this user")
    return root


def _parents(path: str) -> list[str]:
    out, current = [], os.path.dirname(path)
    while current and current not in out:
        out.append(current)
        if current == os.path.dirname(current):
            break
        current = os.path.dirname(current)
    return out


def _warehouse_folders(root: str) -> list[str]:
    """The layer folders, table folders and Delta logs already in the warehouse."""
    folders = []
    for layer in sorted({name.partition(".")[0] for name in REGISTRY}):
        layer_dir = os.path.join(root, layer)
        if not os.path.lexists(layer_dir):
            continue
        folders.append(layer_dir)
        if not os.path.isdir(layer_dir):
            continue
        for entry in sorted(os.listdir(layer_dir)):
            log = os.path.join(layer_dir, entry, "_delta_log")
            if os.path.isdir(os.path.join(layer_dir, entry)) and os.path.lexists(log):
                folders += [os.path.join(layer_dir, entry), log]
    return folders


# --- concurrent writers ------------------------------------------------------------------------

# Delta's optimistic-concurrency conflicts: io.delta.exceptions.* (and their
# org.apache.spark.sql.delta twins), all DeltaConcurrentModificationException, with their error
# classes. (Not java.util.ConcurrentModificationException, their Java base: that one is a bug.)
DELTA_CONFLICTS = ("ConcurrentAppendException", "ConcurrentDeleteReadException",
                   "ConcurrentDeleteDeleteException", "ConcurrentTransactionException",
                   "ConcurrentWriteException", "MetadataChangedException", "ProtocolChangedException")
_CONFLICT_BASES = ("io.delta.exceptions.DeltaConcurrentModificationException",
                   "org.apache.spark.sql.delta.DeltaConcurrentModificationException")
_CONFLICT_TEXT = re.compile(
    r"(?:^|[\s.:(\[])(" + "|".join(DELTA_CONFLICTS) + r"|DeltaConcurrentModificationException)\b"
    r"|\[(DELTA_CONCURRENT_[A-Z_]+|DELTA_METADATA_CHANGED|DELTA_PROTOCOL_CHANGED)\]")


def delta_conflict(exc: BaseException | None) -> str | None:
    """The name of the Delta conflict ``exc`` is or was caused by (``ConcurrentAppendException``,
    ``MetadataChangedException``, ...), or None. Recognises the Java exception behind a Py4J
    error by its class, and otherwise the class or error-class name in the message's first lines
    (Spark Connect, wrapped errors)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        java = getattr(exc, "java_exception", None)
        name = _java_conflict(java) if java is not None else None
        if name:
            return name
        head = "\n".join(str(exc).strip().splitlines()[:3])
        match = _CONFLICT_TEXT.search(head)
        if match:
            return match.group(1) or match.group(2)
        exc = exc.__cause__ or exc.__context__
    return None


def _java_conflict(java) -> str | None:
    from py4j.java_gateway import is_instance_of
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    depth = 0
    try:
        while java is not None and depth < 10 and gateway is not None:
            if any(is_instance_of(gateway, java, base) for base in _CONFLICT_BASES):
                return java.getClass().getSimpleName()
            java, depth = java.getCause(), depth + 1
    except Exception:  # a gone JVM: fall back to the message
        return None
    return None


@contextlib.contextmanager
def writing(conf: Conf, name: str) -> Iterator[None]:
    """Around one Delta write of table ``name``: a Delta conflict (another run committed to the
    table meanwhile) becomes a :class:`ConcurrentWriteError` saying so and what to do. The
    failed write committed nothing (Delta commits are atomic), so the table keeps the version
    the other run made."""
    try:
        yield
    except Exception as exc:
        conflict = delta_conflict(exc)
        if conflict is None:
            raise
        raise ConcurrentWriteError(concurrent_write_message(name, conflict)) from exc


def concurrent_write_message(name: str | None, conflict: str) -> str:
    what = f"table {name}" if name else "a table this job writes"
    return (f"another run is writing {what} at the same time (Delta {conflict}): this run's "
            f"write was not committed and the table's previous version is intact; wait for the "
            f"other run to finish, then re-run this job")


def table_exists(spark: SparkSession, conf: Conf, name: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, table_path(conf, name))


def read_table(spark: SparkSession, conf: Conf, name: str, version: int | None = None) -> DataFrame:
    """Read a Delta table by name (at ``version``: an earlier one, Delta time travel); raises
    :class:`TableNotFoundError` naming the job to run."""
    if not table_exists(spark, conf, name):
        raise TableNotFoundError(f"table {name} does not exist at {table_path(conf, name)}: "
                                 f"run the job that writes it first")
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(table_path(conf, name))


def table_version(spark: SparkSession, conf: Conf, name: str) -> int | None:
    """Current Delta version of a table, or None when it does not exist."""
    from delta.tables import DeltaTable

    if not table_exists(spark, conf, name):
        return None
    last = DeltaTable.forPath(spark, table_path(conf, name)).history(1).select("version").first()
    return int(last["version"]) if last else None


def first_value(df: DataFrame, column: str):
    """The smallest value of a column (Delta answers min/max of a table from its file
    statistics, without a scan)."""
    return df.agg(F.min(column)).first()[0]


def last_value(df: DataFrame, column: str):
    """The largest value of a column (see :func:`first_value`)."""
    return df.agg(F.max(column)).first()[0]


def restore(spark: SparkSession, conf: Conf, name: str, version: int) -> None:
    """Put table ``name`` back to ``version`` (a Delta RESTORE: a new commit, history kept)."""
    from delta.tables import DeltaTable

    with writing(conf, name):
        DeltaTable.forPath(spark, table_path(conf, name)).restoreToVersion(version)


def conform(df: DataFrame, schema: T.StructType) -> DataFrame:
    """Select exactly the schema's columns, cast to its types: the table's column contract.
    Raises ValueError naming any schema column the frame lacks."""
    missing = [f.name for f in schema.fields if f.name not in df.columns]
    if missing:
        raise ValueError(f"frame lacks columns {missing} of the table schema; it has {df.columns}")
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def _conformed(df: DataFrame, name: str) -> DataFrame:
    table_schema = schema(name)
    return conform(df, table_schema) if table_schema is not None else df


def last_commit_rows(spark: SparkSession, conf: Conf, name: str) -> int | None:
    """Rows the table's last Delta commit wrote (its ``operationMetrics``: output rows of a
    write, inserted rows of a MERGE), read from the log instead of counting the table."""
    from delta.tables import DeltaTable

    last = DeltaTable.forPath(spark, table_path(conf, name)).history(1).first()
    metrics = (last["operationMetrics"] or {}) if last else {}
    for key in ("numOutputRows", "numTargetRowsInserted"):
        if key in metrics:
            return int(metrics[key])
    return None


def overwrite(df: DataFrame, conf: Conf, name: str) -> int | None:
    """Replace a table's whole content in one Delta commit (model outputs, derived tables);
    returns the rows written."""
    spark = df.sparkSession
    with writing(conf, name):
        (_conformed(df, name).write.format("delta").mode("overwrite").option("overwriteSchema", "true")
         .save(table_path(conf, name)))
    register(spark, conf, name)
    return last_commit_rows(spark, conf, name)


def append(df: DataFrame, conf: Conf, name: str) -> None:
    """Append rows (only for logs such as gold.job_runs). Columns the registered schema gained
    since the table was written are added to it (Delta schema evolution: old rows read null)."""
    spark = df.sparkSession
    with writing(conf, name):
        (_conformed(df, name).write.format("delta").mode("append").option("mergeSchema", "true")
         .save(table_path(conf, name)))
    register(spark, conf, name)


def _merge_or_create(spark: SparkSession, out: DataFrame, conf: Conf, name: str, merge) -> int | None:
    """Create table ``name`` from ``out`` on first use, else run ``merge(delta_table, out)``
    (one Delta MERGE); returns the rows the commit inserted or wrote."""
    from delta.tables import DeltaTable

    with writing(conf, name):
        if not table_exists(spark, conf, name):
            out.write.format("delta").mode("overwrite").save(table_path(conf, name))
        else:
            merge(DeltaTable.forPath(spark, table_path(conf, name)).alias("t"), out.alias("s"))
    register(spark, conf, name)
    return last_commit_rows(spark, conf, name)


def insert_new(spark: SparkSession, df: DataFrame, conf: Conf, name: str, key: str,
               replace: str | None = None) -> int | None:
    """Insert the rows whose ``key`` the table does not hold yet (a Delta MERGE), creating the
    table on first use; returns the rows inserted. Re-running with the same rows changes nothing.
    ``replace``, a condition on the table's rows (``t.``-prefixed columns), deletes in the same
    commit the rows matching it that ``df`` no longer has (a changed file's old rows)."""
    def merge(target, source):
        builder = target.merge(source, f"t.`{key}` = s.`{key}`").whenNotMatchedInsertAll()
        if replace:
            builder = builder.whenNotMatchedBySourceDelete(condition=replace)
        builder.execute()
    return _merge_or_create(spark, _conformed(df, name), conf, name, merge)


def upsert(spark: SparkSession, df: DataFrame, conf: Conf, name: str, keys: list[str],
           keep_when_null: list[str] = ()) -> None:
    """Update the rows matching ``keys`` and insert the others (one Delta MERGE), creating the
    table on first use; columns in ``keep_when_null`` keep their value where the new one is null."""
    out = _conformed(df, name)
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    values = {f"`{c}`": (f"coalesce(s.`{c}`, t.`{c}`)" if c in keep_when_null else f"s.`{c}`")
              for c in out.columns}
    _merge_or_create(spark, out, conf, name, lambda target, source: target.merge(source, on)
                     .whenMatchedUpdate(set=values).whenNotMatchedInsertAll().execute())


def replace_where(df: DataFrame, conf: Conf, name: str, condition: str) -> None:
    """Replace the rows matching ``condition`` with ``df`` in one commit (schema may grow);
    creates the table on first use."""
    spark = df.sparkSession
    writer = df.write.format("delta").mode("overwrite")
    if table_exists(spark, conf, name):
        writer = writer.option("replaceWhere", condition).option("mergeSchema", "true")
    with writing(conf, name):
        writer.save(table_path(conf, name))
    register(spark, conf, name)


# --- the catalog --------------------------------------------------------------------------------

def register(spark: SparkSession, conf: Conf, name: str) -> None:
    """Register table ``name`` in the Spark catalog as an external Delta table at its warehouse
    location (a database per layer). Idempotent; a registration pointing elsewhere (another
    warehouse) is replaced. Dropping an external table never touches its files."""
    layer, _, table = name.partition(".")
    location = table_path(conf, name)
    spark.sql(f"CREATE DATABASE IF NOT EXISTS `{layer}`")
    # The session catalog's own record of the table (Spark's catalog API would open the Delta
    # table at its location, and fail when a deleted warehouse took it away).
    jvm = spark.sparkContext._jvm
    catalog = spark._jsparkSession.sessionState().catalog()
    ident = jvm.org.apache.spark.sql.catalyst.TableIdentifier(table, jvm.scala.Option.apply(layer))
    if catalog.tableExists(ident):
        current = catalog.getTableMetadata(ident).location().toString()
        if current.rstrip("/").removeprefix("file:") == location.rstrip("/").removeprefix("file:"):
            return
        catalog.dropTable(ident, True, False)   # external: the files are not touched
    spark.sql(f"CREATE TABLE `{layer}`.`{table}` USING delta LOCATION {sql_string(location)}")


def bronze_tables(spark: SparkSession, conf: Conf) -> list[str]:
    """The bronze tables in conf's warehouse (one per source, named after it), by listing."""
    jvm = spark.sparkContext._jvm
    root = jvm.org.apache.hadoop.fs.Path(f"{resolve_path(conf.warehouse).rstrip('/')}/bronze")
    fs = root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(root):
        return []
    names = sorted(f"bronze.{s.getPath().getName()}" for s in fs.listStatus(root) if s.isDirectory())
    return [n for n in names if table_exists(spark, conf, n)]


def register_all(spark: SparkSession, conf: Conf) -> list[str]:
    """Register every table of the registry, and every bronze table, that exists in conf's
    warehouse; returns their names."""
    present = bronze_tables(spark, conf) + [name for name in REGISTRY if not name.startswith("bronze.")
                                            and table_exists(spark, conf, name)]
    for name in present:
        register(spark, conf, name)
    return present


def sql_string(value: str) -> str:
    """A string literal for a Spark SQL condition."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
