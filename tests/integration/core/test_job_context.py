"""The job context every job uses: the one as-of resolver, writes against the table registry
(stamped, conformed, rows from the Delta commit), and tables by name in the Spark catalog."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pyspark
import pytest

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.core.runs import JobRun, read_runs

D = dt.date


def order_lines(spark, dates):
    rows = [{C.LINE_ID: f"l{i}", C.ORDER_ID: f"o{i}", C.CUSTOMER_ID: "c", C.IS_GUEST: False,
             C.SKU: "A", C.PRODUCT_NAME: "a", C.CATEGORY: None, C.COUNTRY: None, C.QUANTITY: 1.0,
             C.UNIT_PRICE: 2.0, C.REVENUE: 2.0, C.ORDERED_AT: dt.datetime(d.year, d.month, d.day, 10),
             C.ORDER_DATE: d, C.LINE_TYPE: "sale", C.IS_PRODUCT: True, C.SOURCE_FILE: "f",
             C.RUN_ID: "r", C.INGESTED_AT: dt.datetime(2024, 1, 1)} for i, d in enumerate(dates)]
    return spark.createDataFrame(rows, schema=tables.ORDER_LINES)


def test_as_of_is_the_last_order_date_unless_conf_sets_it_and_is_recorded(spark, conf_factory):
    conf = conf_factory()
    tables.overwrite(order_lines(spark, [D(2024, 3, 1), D(2024, 3, 9)]), conf, "silver.order_lines")
    with JobRun(spark, conf, "probe") as run:
        assert run.as_of() == D(2024, 3, 9)
    assert run.parameters["as_of"] == "2024-03-09"
    assert any("using 2024-03-09, the last order date in silver.order_lines" in n for n in run.notes)
    set_conf = conf_factory("as_of=2024-03-05")
    with JobRun(spark, set_conf, "probe") as run:
        assert run.as_of() == D(2024, 3, 5)
    assert run.notes == []
    recorded = (read_runs(spark, set_conf).filter("job = 'probe'")
                .orderBy("started_at").collect())
    assert [json.loads(r["parameters"])["as_of"] for r in recorded] == ["2024-03-09", "2024-03-05"]


def test_as_of_without_order_lines_is_an_error(spark, conf_factory):
    conf = conf_factory()
    tables.overwrite(order_lines(spark, []), conf, "silver.order_lines")
    with pytest.raises(ValueError, match="silver.order_lines has no order lines"):
        with JobRun(spark, conf, "probe") as run:
            run.as_of()


def test_write_stamps_conforms_and_counts_rows_from_the_commit(spark, conf_factory):
    conf = conf_factory()
    demand = spark.createDataFrame(
        [("A", D(2024, 1, d), float(d), float(d), 0.0, 1, 2.0, 2.0, False, "extra") for d in (1, 2, 3)],
        "sku string, date date, units double, sale_units double, return_units double, "
        "n_orders long, avg_price double, usual_price double, promo boolean, stray string")
    with JobRun(spark, conf, "probe") as run:
        assert run.write(demand, "gold.sku_daily_demand") == 3
        assert run.write(demand.limit(2), "gold.sku_daily_demand") == 2   # replaced, not appended
    got = tables.read_table(spark, conf, "gold.sku_daily_demand")
    assert got.count() == 2 and "stray" not in got.columns
    assert {r[C.RUN_ID] for r in got.collect()} == {run.run_id}
    with pytest.raises(ValueError, match=r"frame lacks columns \['units'"):
        with JobRun(spark, conf, "probe") as run:
            run.write(demand.drop("units"), "gold.sku_daily_demand")


def test_tables_are_registered_by_name_and_follow_the_warehouse(spark, tmp_path, conf_factory):
    first = conf_factory()
    tables.overwrite(order_lines(spark, [D(2024, 3, 1)] * 3), first, "silver.order_lines")
    assert spark.sql("SELECT count(*) FROM silver.order_lines").first()[0] == 3
    second = conf_factory(f"warehouse={tmp_path / 'other-warehouse'}")
    tables.overwrite(order_lines(spark, [D(2024, 3, 1)] * 5), second, "silver.order_lines")
    assert spark.sql("SELECT count(*) FROM silver.order_lines").first()[0] == 5
    # registering again changes nothing; the first warehouse's files are untouched
    tables.register(spark, second, "silver.order_lines")
    assert spark.sql("SELECT count(*) FROM silver.order_lines").first()[0] == 5
    assert tables.read_table(spark, first, "silver.order_lines").count() == 3


SQL_JOB = """
import sys
from shopsense.core.config import load_conf, conf_dir
from shopsense.core.session import build_session
conf = load_conf([conf_dir() / "local.yaml"], [f"warehouse={sys.argv[1]}", "spark.master=local[1]",
                                               "spark.conf.spark.ui.enabled=false"])
spark = build_session(conf)
print("COUNT", spark.sql("SELECT count(*) FROM silver.order_lines").first()[0])
"""


@pytest.mark.slow
def test_a_spark_submit_job_reads_tables_by_name(spark, tmp_path, conf_factory):
    conf = conf_factory()
    tables.overwrite(order_lines(spark, [D(2024, 3, 1)] * 4), conf, "silver.order_lines")
    script = tmp_path / "count_by_name.py"
    script.write_text(SQL_JOB)
    spark_submit = f"{pyspark.__path__[0]}/bin/spark-submit"
    # as the README's spark-submit line: the Delta jars by --packages (the JVM starts before
    # the session builder could add them)
    done = subprocess.run([spark_submit, "--packages", "io.delta:delta-spark_2.13:4.0.0",
                           str(script), conf["warehouse"]], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYSPARK_PYTHON": sys.executable,
                                            "PYSPARK_DRIVER_PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "COUNT 4" in done.stdout
