"""Failures a user meets before a job computes anything: a warehouse that is a file or not
writable, a bad ``--as-of``. Each is one line naming the path (or key) and the cause, a non-zero
exit, no traceback, and every table as it was. The command-line cases stop before Spark
starts, so they run the real entry points in a subprocess in about a second."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from shopsense.core import tables
from shopsense.core.errors import WarehouseError
from shopsense.core.runs import JobRun
from tests.helpers import REPO, TEST_OVERLAY, make_conf
from tests.integration.core.test_job_context import order_lines

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "lib"), str(REPO)])}


def shopsense(*args: str, warehouse: Path | str, user: list[str] = ()) -> subprocess.CompletedProcess:
    """The ``shopsense`` command (``jobs/<job>.py`` when ``args[0]`` ends in .py) on ``warehouse``."""
    entry = [str(REPO / args[0])] if args[0].endswith(".py") else ["-m", "shopsense.cli", args[0]]
    command = [*user, sys.executable, *entry, *args[1:], "--conf", str(REPO / "conf" / "local.yaml"),
               "--conf", str(TEST_OVERLAY), "--set", f"warehouse={warehouse}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd="/", env=ENV)


def assert_one_line_error(done: subprocess.CompletedProcess, *expected: str) -> str:
    assert done.returncode != 0
    lines = [l for l in done.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("[shopsense] error: ")
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in done.stderr and "Py4J" not in done.stderr
    return lines[0]


@pytest.mark.parametrize("entry", [("run", "features"), ("jobs/ingest.py",), ("jobs/pipeline.py",)])
def test_a_warehouse_that_is_a_file_is_one_line(tmp_path, entry):
    warehouse = tmp_path / "warehouse"
    warehouse.write_text("not a folder")
    done = shopsense(*entry, warehouse=warehouse)
    assert_one_line_error(done, f"warehouse {warehouse} is a file, not a folder")
    assert warehouse.read_text() == "not a folder"


def test_a_warehouse_below_a_file_names_the_file(tmp_path):
    blocker = tmp_path / "data"
    blocker.write_text("a file")
    done = shopsense("run", "all", warehouse=blocker / "warehouse")
    assert_one_line_error(done, f"warehouse {blocker / 'warehouse'} cannot be created: {blocker} is a file")


def test_a_layer_folder_that_is_a_file_is_one_line(tmp_path):
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    (warehouse / "gold").write_text("")
    done = shopsense("run", "demand", warehouse=warehouse)
    assert_one_line_error(done, f"warehouse {warehouse} is not usable: {warehouse / 'gold'} is a file")


def _as_other_user() -> list[str]:
    """A prefix that runs a command as ``nobody`` when the tests run as root (root writes into
    any folder, whatever its mode); nothing otherwise."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a folder unwritable")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def open_folder():
    """A folder every user can reach (pytest's tmp_path is private to its owner, so another
    user would fail on the way to the warehouse, not at it)."""
    folder = Path(tempfile.mkdtemp(prefix="shopsense-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_an_unwritable_warehouse_is_one_line_and_its_tables_stay_as_they_were(spark, open_folder):
    warehouse = open_folder / "warehouse"
    conf = make_conf(warehouse)
    tables.overwrite(order_lines(spark, [dt.date(2024, 3, 1)] * 3), conf, "silver.order_lines")
    before = sorted(str(p.relative_to(warehouse)) for p in warehouse.rglob("*"))
    for path in [warehouse, *warehouse.rglob("*")]:
        if path.is_dir():
            path.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        done = shopsense("run", "features", warehouse=warehouse, user=_as_other_user())
        assert_one_line_error(done, f"warehouse {warehouse} is not writable", "ermission denied")
    finally:
        for path in [warehouse, *warehouse.rglob("*")]:
            if path.is_dir():
                path.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    assert sorted(str(p.relative_to(warehouse)) for p in warehouse.rglob("*")) == before
    assert tables.read_table(spark, conf, "silver.order_lines").count() == 3


def test_the_job_context_checks_the_warehouse_before_it_writes(spark, tmp_path, conf_factory):
    """The library path (a notebook, a test): JobRun refuses before recording anything."""
    warehouse = tmp_path / "file-warehouse"
    warehouse.write_text("")
    conf = conf_factory(f"warehouse={warehouse}")
    with pytest.raises(WarehouseError, match=f"warehouse {warehouse} is a file"):
        with JobRun(spark, conf, "probe"):
            pytest.fail("the job body ran")
    assert warehouse.read_text() == ""


@pytest.mark.parametrize("entry, value", [(("run", "features"), "2024-13-45"), (("run", "all"), "2024-02-30"),
                                          (("jobs/demand.py",), "yesterday")])
def test_a_bad_as_of_is_one_line_naming_the_key_and_the_value(tmp_path, entry, value):
    done = shopsense(*entry, "--as-of", value, warehouse=tmp_path / "warehouse")
    assert_one_line_error(done, "as_of must be a date YYYY-MM-DD", repr(value))
    assert done.returncode == 2
    assert not (tmp_path / "warehouse").exists()      # stopped before Spark, nothing created
