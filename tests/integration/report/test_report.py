"""`shopsense report` on the quick pipeline's tables, rendered by headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shopsense.core import tables
from shopsense.report.html import SECTIONS, write_report
from tests.helpers import REPO, make_conf, quick_cli_args

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def render(path: Path) -> str:
    """The DOM of ``path`` after Chromium laid it out and ran its load handlers."""
    if CHROMIUM is None:
        pytest.fail("Chromium is not installed: install Debian's chromium package "
                    "(scripts/test.sh does when run as root)")
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow
def test_report_command_writes_a_page_chromium_renders_with_its_charts(spark, quick_pipeline, tmp_path):
    conf, _ = quick_pipeline
    target = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "shopsense.cli", "report", "--output", str(target),
                           *quick_cli_args(conf["warehouse"], conf["sample"]["out_dir"])],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Report: {target}" in proc.stdout
    assert "sections without data" not in proc.stderr
    html = target.read_text()
    assert "<script src" not in html and "<link" not in html  # self-contained

    dom = render(target)
    body = re.search(r"<body ([^>]*)>", dom).group(1)
    figures = dict(re.findall(r'data-([a-z-]+)="(\d+)"', body))
    n_top = conf["report"]["top_skus"]
    # segments, value per segment, propensity calibration and decile lift, migration, rules,
    # recommendation metrics, one per top SKU, accuracy, ABC/XYZ
    assert int(figures["charts"]) == 9 + n_top
    assert figures["charts-rendered"] == figures["charts"], figures
    assert int(figures["marks-rendered"]) > 30
    for key, title, _, _ in SECTIONS:
        assert f'<section id="{key}"><h2>{title}</h2>' in dom.replace("&amp;", "&")
    segment_names = {r["segment_name"] for r in tables.read_table(spark, conf, "gold.segment_profiles").collect()}
    assert all(name in dom for name in segment_names)
    assert "ALS precision@10 is" in dom
    assert "Calibration on held-out customers" in dom and "(default)" in dom
    assert "Monthly transitions, pooled" in dom
    assert "SKUs to reorder now" in dom or "Nothing to reorder now" in dom


def test_report_names_the_job_to_run_for_each_missing_table(spark, tmp_path):
    from shopsense.core.runs import JobRun

    conf = make_conf(tmp_path / "warehouse")
    with pytest.raises(FileNotFoundError, match="run `shopsense demo` or `shopsense run all` first"):
        write_report(spark, conf, tmp_path / "none.html")
    with JobRun(spark, conf, "features"):
        pass
    path, state = write_report(spark, conf, tmp_path / "partial.html")
    assert state["runs"] == "ok"
    assert {k for k, v in state.items() if v == "missing"} == {k for k, *_ in SECTIONS} - {"runs"}
    html = path.read_text()
    assert "No gold.segment_profiles yet: run the segment job." in html
    assert "No gold.inventory_policy yet: run the inventory job." in html
