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
# Each process has its own Spark session and its own session fixtures. The files that read the
# quick pipeline's warehouse go to one process together, so the pipeline runs once; the longest
# units start first (longest first is what keeps two queues even), the rest in collection order.

#: Test files that use the ``quick_pipeline`` fixture: one scheduling unit.
QUICK_PIPELINE_FILES = ("tests/integration/test_pipeline.py", "tests/integration/test_notebooks.py",
                        "tests/integration/report/test_report.py",
                        "tests/integration/ingest/test_ingest_trust.py")
#: The longest units, longest first (minutes on this 2-core machine, two processes: the cluster
#: test about 12, the quick-pipeline files about 15 together, the as-of test about 7).
FIRST = ("tests/cluster/test_cluster.py", *QUICK_PIPELINE_FILES, "tests/integration/test_as_of.py")


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(items):
    rank = {path: i for i, path in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(_file_of(item.nodeid), len(FIRST)))   # stable


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Files as units (``--dist loadfile``: a module's fixtures are built once), the
    quick-pipeline files as one unit, in collection order (scripts/test.sh passes
    ``--no-loadscope-reorder``: xdist would otherwise start the units with the most tests)."""
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = _file_of(nodeid)
            return "quick-pipeline" if path in QUICK_PIPELINE_FILES else path

    return Scheduling(config, log)



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
    """The Online Retail export ingested once per test session: (conf, ingest summary)."""
    from shopsense.ingest import batch as ingest

    if not ONLINE_RETAIL.exists():
        pytest.skip(f"the Online Retail export is not at {ONLINE_RETAIL}")
    conf = make_conf(tmp_path_factory.mktemp("online-retail-ingest") / "warehouse",
                     *online_retail_overrides())
    return conf, ingest.run(spark, conf)


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
    """Quick sample raw files generated once and the whole pipeline run on them in this session:
    (conf, {job: summary}). Tests read its tables; they must not write to its warehouse."""
    from shopsense.notebook import run

    root = tmp_path_factory.mktemp("quick-pipeline")
    conf = quick_conf(root / "warehouse", root / "raw")
    results = run(spark, conf, "sample", "all")
    return conf, results

