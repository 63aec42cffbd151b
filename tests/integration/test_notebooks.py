"""The notebooks, executed on small sample data: 01 runs the pipeline into a warehouse of its
own, 02 and 03 read the quick pipeline's tables. Stored without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import NOTEBOOKS, QUICK_OVERLAY, TEST_OVERLAY

pytestmark = pytest.mark.slow


def execute(name: str, params: dict, workdir: Path) -> nbformat.NotebookNode:
    """Execute a notebook with ``params`` assigned after its parameters cell's defaults (as
    papermill does)."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n# injected by the test\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    NotebookClient(nb, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def outputs(nb) -> str:
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts.append(out.get("text", ""))
            texts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(texts)


def test_quickstart_runs_the_pipeline_on_sample_data(tmp_path):
    nb = execute("01_quickstart", {
        "warehouse": str(tmp_path / "warehouse"), "sample_dir": str(tmp_path / "raw"),
        "overlays": ["local", str(TEST_OVERLAY), str(QUICK_OVERLAY)],
        "overrides": ["sample.n_customers=200", "sample.n_skus=30"]}, tmp_path)
    text = outputs(nb)
    for table in ("silver.order_lines", "gold.customer_segments", "gold.recommendations",
                  "gold.association_rules", "gold.demand_forecast", "gold.inventory_policy"):
        assert table in text
    runs = outputs(nbformat.from_dict({"cells": [nb.cells[-1]]}))  # the gold.job_runs cell
    assert "succeeded" in runs and "failed" not in runs
    assert (tmp_path / "warehouse" / "gold" / "inventory_policy" / "_delta_log").is_dir()


@pytest.mark.parametrize("name", ["02_customers", "03_supply"])
def test_analysis_notebook_reads_the_pipeline_tables(name, quick_pipeline, tmp_path):
    conf, _ = quick_pipeline
    nb = execute(name, {"warehouse": conf["warehouse"], "overlays": ["local", str(TEST_OVERLAY)]}, tmp_path)
    text = outputs(nb)
    assert "<svg" in text  # its chart
    if name == "02_customers":
        assert "popularity" in text and "als" in text
        assert "source" in text
    else:
        assert "fill_rate" in text and "reorder_point" in text
