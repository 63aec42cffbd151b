"""Table names, their explicit schemas, where they live, and the writes every job uses.

Tables are Delta tables at ``<warehouse>/<layer>/<name>`` (``silver.order_lines`` lives at
``<warehouse>/silver/order_lines``), so notebooks and other tools open them by path without a
metastore. Every write is atomic (one Delta commit per table).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import columns as C
from shopsense.core.config import Conf, resolve_path

RUN_COLUMNS = [T.StructField(C.RUN_ID, T.StringType(), False),
               T.StructField(C.COMPUTED_AT, T.TimestampType(), False)]

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
    *RUN_COLUMNS,
])

INVENTORY = T.StructType([
    T.StructField(C.SKU, T.StringType(), False),
    T.StructField(C.ON_HAND, T.DoubleType(), False),
    T.StructField(C.ON_ORDER, T.DoubleType(), False),
    T.StructField(C.AS_OF, T.DateType(), False),
    *RUN_COLUMNS,
])

JOB_RUNS = T.StructType([
    T.StructField(C.RUN_ID, T.StringType(), False),
    T.StructField("job", T.StringType(), False),
    T.StructField("status", T.StringType(), False),
    T.StructField("started_at", T.TimestampType(), False),
    T.StructField("ended_at", T.TimestampType(), False),
    T.StructField("duration_s", T.DoubleType(), False),
    T.StructField("parameters", T.StringType(), False),
    T.StructField("input_versions", T.MapType(T.StringType(), T.LongType()), True),
    T.StructField("rows_in", T.LongType(), True),
    T.StructField("rows_out", T.LongType(), True),
    T.StructField("metrics", T.MapType(T.StringType(), T.DoubleType()), True),
    T.StructField("notes", T.ArrayType(T.StringType()), True),
    T.StructField("error", T.StringType(), True),
])

# Schemas of the tables whose columns are fixed. bronze.order_lines_raw keeps the columns as read.
SCHEMAS: dict[str, T.StructType] = {
    "silver.order_lines": ORDER_LINES,
    "silver.quarantine": QUARANTINE,
    "silver.products": PRODUCTS,
    "silver.inventory": INVENTORY,
    "gold.job_runs": JOB_RUNS,
}


class TableNotFoundError(RuntimeError):
    """A job needs a table an upstream job has not written yet."""


def table_path(conf: Conf, name: str) -> str:
    """Location of table ``layer.name`` under the warehouse."""
    layer, _, table = name.partition(".")
    if not table:
        raise ValueError(f"table name must be layer.name, got {name!r}")
    return f"{resolve_path(conf['warehouse']).rstrip('/')}/{layer}/{table}"


def table_exists(spark: SparkSession, conf: Conf, name: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, table_path(conf, name))


def read_table(spark: SparkSession, conf: Conf, name: str) -> DataFrame:
    """Read a Delta table by name; raises :class:`TableNotFoundError` naming the job to run."""
    if not table_exists(spark, conf, name):
        raise TableNotFoundError(f"table {name} does not exist at {table_path(conf, name)}: "
                                 f"run the job that writes it first")
    return spark.read.format("delta").load(table_path(conf, name))


def table_version(spark: SparkSession, conf: Conf, name: str) -> int | None:
    """Current Delta version of a table, or None when it does not exist."""
    from delta.tables import DeltaTable

    if not table_exists(spark, conf, name):
        return None
    last = DeltaTable.forPath(spark, table_path(conf, name)).history(1).select("version").first()
    return int(last["version"]) if last else None


def conform(df: DataFrame, schema: T.StructType) -> DataFrame:
    """Select exactly the schema's columns, cast to its types: the table's column contract.
    Raises ValueError naming any schema column the frame lacks."""
    missing = [f.name for f in schema.fields if f.name not in df.columns]
    if missing:
        raise ValueError(f"frame lacks columns {missing} of the table schema; it has {df.columns}")
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def overwrite(df: DataFrame, conf: Conf, name: str, schema: T.StructType | None = None,
              partition_by: list[str] | None = None) -> None:
    """Replace a table's whole content in one Delta commit (model outputs, derived tables)."""
    schema = schema or SCHEMAS.get(name)
    out = conform(df, schema) if schema is not None else df
    writer = (out.write.format("delta").mode("overwrite").option("overwriteSchema", "true"))
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(table_path(conf, name))


def append(df: DataFrame, conf: Conf, name: str, schema: T.StructType | None = None) -> None:
    """Append rows (only for logs such as gold.job_runs)."""
    schema = schema or SCHEMAS.get(name)
    out = conform(df, schema) if schema is not None else df
    out.write.format("delta").mode("append").save(table_path(conf, name))


def insert_new(spark: SparkSession, df: DataFrame, conf: Conf, name: str, key: str,
               schema: T.StructType | None = None) -> None:
    """Insert the rows whose ``key`` the table does not hold yet (a Delta MERGE), creating the
    table on first use. Re-running with the same rows changes nothing."""
    from delta.tables import DeltaTable

    schema = schema or SCHEMAS.get(name)
    out = conform(df, schema) if schema is not None else df
    if not table_exists(spark, conf, name):
        out.write.format("delta").mode("overwrite").save(table_path(conf, name))
        return
    (DeltaTable.forPath(spark, table_path(conf, name)).alias("t")
     .merge(out.alias("s"), f"t.`{key}` = s.`{key}`")
     .whenNotMatchedInsertAll()
     .execute())


def replace_where(df: DataFrame, conf: Conf, name: str, condition: str) -> None:
    """Replace the rows matching ``condition`` with ``df`` in one commit (schema may grow)."""
    (df.write.format("delta").mode("overwrite").option("replaceWhere", condition)
     .option("mergeSchema", "true").save(table_path(conf, name)))


def sql_string(value: str) -> str:
    """A string literal for a Spark SQL condition."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
