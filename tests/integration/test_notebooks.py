"""The notebooks, executed on the quick pipeline's tables; the assertions read the notebook's
own variables and the tables it wrote, never its printed text. 01 runs one job (demand) into
a copy of that warehouse, then its reading cells; 02 and 03 only read."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from pyspark.sql import functions as F

from shopsense.core import tables
from shopsense.core.runs import read_runs
from shopsense.report.summary import list_tables
from tests.helpers import NOTEBOOKS, QUICK_FILES, TEST_OVERLAY, make_conf

pytestmark = pytest.mark.slow

#: The marker the export cell prints its JSON after.
EXPORT = "NOTEBOOK-VARIABLES:"


def execute(name: str, params: dict, workdir: Path, export: str) -> tuple[nbformat.NotebookNode, dict]:
    """Execute a notebook with ``params`` assigned after its parameters cell's defaults (as
    papermill does). ``export`` is a Python expression evaluated in the notebook's kernel after
    its last cell, a dict of what the test checks; returns the executed notebook and that dict
    (through JSON: numpy scalars become numbers, dates text)."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n# injected by the test\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.append(nbformat.v4.new_code_cell(
        "import json as _json\n"
        f"print({EXPORT!r} + _json.dumps({export}, "
        "default=lambda o: o.item() if hasattr(o, 'item') else str(o)))"))
    NotebookClient(nb, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("name") == "stdout")
    return nb, json.loads(text.split(EXPORT, 1)[1])


def svg_outputs(nb) -> int:
    """How many SVG images the executed notebook displayed."""
    return sum("image/svg+xml" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def records(df, columns: list[str]) -> list[dict]:
    """A small Spark frame's rows as the export gives them (dates as text)."""
    return [{k: str(v) if isinstance(v, dt.date) else v for k, v in r.asDict().items()}
            for r in df.select(columns).collect()]


def test_quickstart_runs_a_job_then_reads_the_warehouse(spark, quick_pipeline, tmp_path):
    """The quickstart on a copy of the quick pipeline's warehouse, running only `demand` (its
    run cell with a cheap job) and then every reading cell."""
    ref_conf, _ = quick_pipeline
    warehouse = tmp_path / "warehouse"
    shutil.copytree(ref_conf["warehouse"], warehouse)
    conf = make_conf(warehouse)
    runs_before = read_runs(spark, conf).count()
    log_before = tables.read_table(spark, conf, "gold.job_runs").count()
    demand_version = tables.table_version(spark, conf, "gold.sku_daily_demand")
    nb, got = execute("01_quickstart", {
        "warehouse": str(warehouse), "sample_dir": ref_conf["sample"]["out_dir"],
        "overlays": ["local", str(TEST_OVERLAY), *map(str, QUICK_FILES)], "jobs": ["demand"]}, tmp_path,
        export='{"results": {j: {"status": r["status"], "run_id": r["run_id"], "rows_out": r["rows_out"]}'
               '             for j, r in results.items()},'
               ' "tables": tables_now.to_dict("records"), "order_lines": order_lines.count(),'
               ' "lines_by_sql": lines_by_sql}')

    demand = got["results"]["demand"]
    assert list(got["results"]) == ["demand"] and demand["status"] == "succeeded"
    runs = read_runs(spark, conf)
    assert runs.filter(F.col("run_id") == demand["run_id"]).select("job", "status").collect() == [
        ("demand", "succeeded")]
    assert runs.count() == runs_before + 1
    assert runs.filter("status != 'succeeded'").count() == 0
    # the demand job replaced its table with the same rows (same inputs), under its own run id
    new = tables.read_table(spark, conf, "gold.sku_daily_demand")
    old = tables.read_table(spark, ref_conf, "gold.sku_daily_demand")
    assert demand["rows_out"] == new.count() == old.count() > 0
    columns = [c for c in new.columns if c not in ("run_id", "computed_at")]
    assert new.select(columns).exceptAll(old.select(columns)).count() == 0
    # the table listing the notebook shows is the warehouse as it is now: every table, and the
    # two the run changed with their new row count, version and last run
    shown = {r["table"]: (r["rows"], r["version"], r["last_run"]) for r in got["tables"]}
    assert set(shown) == set(list_tables(spark, conf))
    assert shown["gold.sku_daily_demand"] == (new.count(), demand_version + 1, demand["run_id"])
    # gold.job_runs is the log: the demand run appended its running row and its outcome
    assert shown["gold.job_runs"][:2] == (log_before + 2, tables.table_version(spark, conf, "gold.job_runs"))
    assert got["order_lines"] == shown["silver.order_lines"][0] == \
        tables.read_table(spark, conf, "silver.order_lines").count() > 0
    # spark.sql by table name, in the notebook's own session, on the notebook's warehouse
    assert got["lines_by_sql"] == got["order_lines"]


def test_customers_notebook_shows_the_pipeline_tables(spark, quick_pipeline, tmp_path):
    conf, _ = quick_pipeline
    nb, got = execute("02_customers", {"warehouse": conf["warehouse"], "overlays": ["local", str(TEST_OVERLAY)]},
                      tmp_path,
                      export='{"profiles": profiles.to_dict("records"), "customer": customer,'
                             ' "metrics": metrics.to_dict("records"),'
                             ' "top_sku": None if top_sku is None else top_sku["sku"],'
                             ' "contact": contact.to_dict("records"), "top_n": top_n}')
    assert svg_outputs(nb) == 1  # the segment sizes chart
    profiles = tables.read_table(spark, conf, "gold.segment_profiles")
    columns = ["segment_name", "n_customers", "customer_share", "revenue_share"]
    assert [{k: r[k] for k in columns} for r in got["profiles"]] == records(
        profiles.orderBy(F.desc("n_customers")), columns)
    # the customer shown is one of the largest segment's, and has recommendations
    largest = got["profiles"][0]["segment_name"]
    segment_of = (tables.read_table(spark, conf, "gold.customer_segments")
                  .filter(F.col("customer_id") == got["customer"]).first())
    assert segment_of["segment_name"] == largest
    assert tables.read_table(spark, conf, "gold.recommendations").filter(
        F.col("customer_id") == got["customer"]).count() == conf["recommend"]["top_n"]
    # ALS as selected on validation against the popularity baseline, the test window's figures
    test = (tables.read_table(spark, conf, "gold.recommendation_metrics").filter("split = 'test'")
            .filter("model = 'popularity' OR selected"))
    assert sorted((m["model"], m["precision"], m["n_users"]) for m in got["metrics"]) == sorted(
        (r["model"], r["precision"], r["n_users"]) for r in test.collect())
    assert {m["model"] for m in got["metrics"]} == {"als", "popularity"}
    # the product shown with its companions is the one with the highest-lift companion
    fbt = tables.read_table(spark, conf, "gold.frequently_bought_together")
    top = fbt.orderBy(F.desc("lift"), "sku").first()
    assert got["top_sku"] == top["sku"]
    # whom to contact: the top_n highest default-model probabilities, as the table has them
    propensity = tables.read_table(spark, conf, "gold.purchase_propensity")
    best = [r["p_purchase"] for r in propensity.orderBy(F.desc("p_purchase")).limit(got["top_n"]).collect()]
    assert len(got["contact"]) == min(got["top_n"], propensity.count())
    assert [c["p_purchase"] for c in got["contact"]] == best
    assert {c["model"] for c in got["contact"]} <= {"bgnbd", "classifier"}


def test_supply_notebook_shows_the_pipeline_tables(spark, quick_pipeline, tmp_path):
    conf, _ = quick_pipeline
    nb, got = execute("03_supply", {"warehouse": conf["warehouse"], "overlays": ["local", str(TEST_OVERLAY)]},
                      tmp_path,
                      export='{"sku": sku, "as_of": as_of, "fc": fc[["date", "forecast"]].to_dict("records"),'
                             ' "what_if": pd.DataFrame(rows).to_dict("records")}')
    assert svg_outputs(nb) == 1  # the SKU's forecast chart
    # the SKU shown is the best seller of the last 90 days, with its whole forecast
    as_of = dt.date.fromisoformat(got["as_of"])
    demand = tables.read_table(spark, conf, "gold.sku_daily_demand")
    forecast = tables.read_table(spark, conf, "gold.demand_forecast")
    best = (demand.filter(F.col("date") > F.lit(as_of - dt.timedelta(days=90)))
            .groupBy("sku").agg(F.sum("units").alias("units"))
            .join(forecast.select("sku").distinct(), "sku").orderBy(F.desc("units"), "sku").first())
    assert got["sku"] == best["sku"]
    expected = records(forecast.filter(F.col("sku") == best["sku"]).orderBy("date"), ["date", "forecast"])
    assert [(r["date"][:10], r["forecast"]) for r in got["fc"]] == [
        (r["date"], r["forecast"]) for r in expected]
    assert len(got["fc"]) == conf["forecast"]["horizon"]
    # the what-if: the class target, then the notebook's higher one, which needs a higher
    # reorder point and serves at least as much of the same demand
    policy = tables.read_table(spark, conf, "gold.inventory_policy").filter(F.col("sku") == best["sku"]).first()
    at_target, higher = got["what_if"]
    assert (at_target["target"], higher["target"]) == (policy["target_service_level"], 0.99)
    assert higher["reorder_point"] > at_target["reorder_point"]
    assert higher["fill_rate"] >= at_target["fill_rate"]
    assert higher["avg_on_hand"] > at_target["avg_on_hand"]
