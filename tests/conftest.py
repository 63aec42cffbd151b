"""The suite's fixtures: one session-scoped SparkSession, a warehouse per test, the Online
Retail export ingested once, the quick pipeline run once. What they are built from (paths,
configurations) is in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

# Executors run BLAS single-threaded (the session sets spark.executorEnv); the test process does
# the same before numpy loads, so model fits called directly are not slowed by oversubscription.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest

from tests.helpers import ONLINE_RETAIL, make_conf, online_retail_overrides, quick_conf

# --- Two test processes (scripts/test.sh: pytest-xdist, -n 2) ----------------------------------
# Each process has its own Spark session. The expensive shared data (the quick pipeline, the
# Online Retail ingest) is built once for both: by the first process that needs it, under a
# file lock, in the run's common temporary folder; the other process waits for it and reads the
# same warehouse. Test files are scheduling units (--dist loadfile: a module's fixtures are
# built once), the longest first, so that the two queues end together.

#: The longest files, longest first (minutes on this 2-core machine, two processes at once).
FIRST = ("tests/integration/test_pipeline.py", "tests/integration/test_as_of.py",
         "tests/cluster/test_cluster.py", "tests/integration/ingest/test_ingest_trust.py",
         "tests/integration/test_notebooks.py")


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(items):
    rank = {path: i for i, path in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(_file_of(item.nodeid), len(FIRST)))   # stable


def build_once(tmp_path_factory, name: str, build) -> tuple[Path, object]:
    """``build(folder)`` run once for every test process of this pytest run, in ``folder`` (a
    folder of the run's common temporary folder); returns (folder, what it returned, pickled) in
    every process. A build that raised fails, with its message, in the processes that wait for
    it, instead of running again."""
    import fcntl
    import pickle

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent   # popen-gw0 and popen-gw1 share their parent
    folder, result = base / name, base / f"{name}.pickle"
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file closes
        if not result.exists():
            folder.mkdir(exist_ok=True)
            try:
                value = build(folder)
            except BaseException as exc:
                result.write_bytes(pickle.dumps(("failed", f"{type(exc).__name__}: {exc}")))
                raise
            result.write_bytes(pickle.dumps(("built", value)))
    state, value = pickle.loads(result.read_bytes())
    if state == "failed":
        pytest.fail(f"{name} failed in another test process: {value}"[:3000])
    return folder, value


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from shopsense.core.session import build_session

    conf = make_conf(tmp_path_factory.mktemp("session-warehouse"))
    session = build_session(conf)
    yield session
    session.stop()


@pytest.fixture
def conf_factory(tmp_path):
    """Build a Conf whose warehouse is inside this test's tmp_path."""
    def factory(*overrides: str, files: tuple = ()):
        return make_conf(tmp_path / "warehouse", *overrides, files=files)
    return factory


@pytest.fixture
def conf(conf_factory):
    return conf_factory()


@pytest.fixture(scope="session")
def online_retail_ingested(spark, tmp_path_factory):
    """The Online Retail export ingested once per test run (see build_once): (conf, ingest
    summary). Tests read its tables; they must not write to its warehouse."""
    from shopsense.ingest import batch as ingest

    if not ONLINE_RETAIL.exists():
        pytest.skip(f"the Online Retail export is not at {ONLINE_RETAIL}")
    conf_in = lambda folder: make_conf(folder / "warehouse", *online_retail_overrides())  # noqa: E731
    folder, summary = build_once(tmp_path_factory, "online-retail-ingest",
                                 lambda folder: ingest.run(spark, conf_in(folder)))
    return conf_in(folder), summary


@pytest.fixture(scope="session")
def retail_conf_factory(online_retail_ingested, tmp_path_factory):
    """A conf whose own warehouse starts with a copy of the ingested Online Retail silver tables
    (Delta tables are relocatable), so downstream jobs' tests skip a 1-2 minute ingest each."""
    import shutil

    from shopsense.core import tables

    source_conf, _ = online_retail_ingested
    silver = Path(tables.table_path(source_conf, "silver.order_lines")).parent

    def factory(*overrides: str):
        warehouse = tmp_path_factory.mktemp("online-retail") / "warehouse"
        shutil.copytree(silver, warehouse / "silver")
        return make_conf(warehouse, *online_retail_overrides(), *overrides)
    return factory


@pytest.fixture(scope="session")
def quick_pipeline(spark, tmp_path_factory):
    """Quick sample raw files generated and the whole pipeline run on them once per test run
    (see build_once): (conf, {job: summary}). Tests read its tables; they must not write to its
    warehouse."""
    from shopsense.notebook import run

    conf_in = lambda folder: quick_conf(folder / "warehouse", folder / "raw")  # noqa: E731
    folder, results = build_once(tmp_path_factory, "quick-pipeline",
                                 lambda folder: run(spark, conf_in(folder), "sample", "all"))
    return conf_in(folder), results

