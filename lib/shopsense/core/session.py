"""The one place that builds the SparkSession: Delta configured, quiet logs, workers on the
driver's interpreter in local mode. Library code receives the session as an argument."""

from __future__ import annotations

import glob
import os
import sys
from importlib import resources

from shopsense.core.config import Conf, resolve_path

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"

# Model fits inside pandas UDFs run one per task: native libraries must not start their own
# thread pools on top of Spark's (one thread per worker).
SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _log4j_file() -> str:
    return str(resources.files("shopsense.core").joinpath("log4j2.properties"))


def _jar_list(jars: str) -> str:
    """A folder of jars or a comma-separated list, as the comma-separated list spark.jars takes."""
    paths: list[str] = []
    for item in (p.strip() for p in jars.split(",") if p.strip()):
        local = resolve_path(item)
        if os.path.isdir(local):
            paths.extend(sorted(glob.glob(os.path.join(local, "*.jar"))))
        else:
            paths.append(local)
    return ",".join(paths)


def builder(conf: Conf):
    """Return a ``SparkSession.Builder`` with Delta Lake configured (extensions, catalog, jars).

    The master is set only when conf names one (the local overlay does; under spark-submit
    nothing does). With ``spark.python: driver`` it sets PYSPARK_PYTHON to this interpreter, the
    one environment change shopsense makes, at session build time only. The Delta jars come from ``spark.jars`` when conf names a folder of jars,
    otherwise the standard delta-spark way (``spark.jars.packages`` via
    ``configure_spark_with_delta_pip``).
    """
    from pyspark.sql import SparkSession

    spark_conf = conf.spark
    b = SparkSession.builder.appName(conf.app_name)
    if spark_conf.master:
        b = b.master(spark_conf.master)
    settings = {
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(spark_conf.shuffle_partitions),
        "spark.ui.showConsoleProgress": str(spark_conf.progress_bar).lower(),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{_log4j_file()}",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Databases of the catalog (bronze, silver, gold) get their default folders inside the
        # warehouse rather than a spark-warehouse folder in the working directory.
        "spark.sql.warehouse.dir": f"{resolve_path(conf.warehouse).rstrip('/')}/_catalog",
    }
    for var in SINGLE_THREAD_ENV:
        settings[f"spark.executorEnv.{var}"] = "1"
    if spark_conf.python == "driver":
        # PySpark reads the worker interpreter from PYSPARK_PYTHON when the context starts (the
        # spark.pyspark.python setting only reaches spark-submit launches): pin both to the driver's
        # interpreter so workers find the same virtual environment, whatever is first on PATH.
        os.environ["PYSPARK_PYTHON"] = sys.executable
        settings["spark.pyspark.python"] = sys.executable
        settings["spark.pyspark.driver.python"] = sys.executable
    settings.update({k: str(v) for k, v in spark_conf.conf.items()})
    for key, value in settings.items():
        b = b.config(key, value)
    if spark_conf.jars:
        return b.config("spark.jars", _jar_list(spark_conf.jars))
    from delta import configure_spark_with_delta_pip

    return configure_spark_with_delta_pip(b)


def build_session(conf: Conf):
    """Build (or reuse) the session for conf, apply the log level, and register the
    warehouse's existing tables by name in the catalog (``spark.sql("SELECT * FROM
    silver.order_lines")``). The warehouse is checked first, before Spark starts: a path that
    is a file or a folder this user cannot write raises WarehouseError naming both."""
    from shopsense.core.tables import check_warehouse, register_all

    check_warehouse(conf)
    spark = builder(conf).getOrCreate()
    spark.sparkContext.setLogLevel(conf.log_level)
    checkpoint_dir = conf.spark.checkpoint_dir or f"{resolve_path(conf.warehouse)}/_checkpoints"
    spark.sparkContext.setCheckpointDir(checkpoint_dir)
    register_all(spark, conf)
    return spark
