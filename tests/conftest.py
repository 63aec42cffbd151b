"""One session-scoped SparkSession for the whole suite; each test gets its own warehouse."""

from __future__ import annotations

import os
from pathlib import Path

# Executors run BLAS single-threaded (the session sets spark.executorEnv); the test process does
# the same before numpy loads, so model fits called directly are not slowed by oversubscription.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest

from shopsense.config import conf_dir, load_conf

TEST_OVERLAY = Path(__file__).parent / "conf" / "test.yaml"
REPO = Path(__file__).resolve().parents[1]
ONLINE_RETAIL = REPO.parent / "shared" / "data" / "online_retail" / "online_retail.csv.gz"


def make_conf(warehouse: Path | str, *overrides: str, files: tuple = ()):
    """The test configuration: local overlay + test overlay + a warehouse of the test's own."""
    return load_conf([conf_dir() / "local.yaml", TEST_OVERLAY, *files],
                     [f"warehouse={warehouse}", *overrides])


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from shopsense.session import build_session

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
    from shopsense import ingest

    if not ONLINE_RETAIL.exists():
        pytest.skip(f"the Online Retail export is not at {ONLINE_RETAIL}")
    conf = make_conf(tmp_path_factory.mktemp("online-retail-ingest") / "warehouse",
                     "ingest.source=online_retail", f"sources.online_retail.orders.path={ONLINE_RETAIL}")
    return conf, ingest.run(spark, conf)


@pytest.fixture(scope="session")
def retail_conf_factory(online_retail_ingested, tmp_path_factory):
    """A conf whose own warehouse starts with a copy of the ingested Online Retail silver tables
    (Delta tables are relocatable), so downstream jobs' tests skip a 1-2 minute ingest each."""
    import shutil

    from shopsense import tables

    source_conf, _ = online_retail_ingested
    silver = Path(tables.table_path(source_conf, "silver.order_lines")).parent

    def factory(*overrides: str):
        warehouse = tmp_path_factory.mktemp("online-retail") / "warehouse"
        shutil.copytree(silver, warehouse / "silver")
        return make_conf(warehouse, "ingest.source=online_retail",
                         f"sources.online_retail.orders.path={ONLINE_RETAIL}", *overrides)
    return factory
