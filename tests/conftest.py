"""One session-scoped SparkSession for the whole suite; each test gets its own warehouse."""

from __future__ import annotations

import os
from pathlib import Path

# Executors run BLAS single-threaded (the session sets spark.executorEnv); the test process does
# the same before numpy loads, so model fits called directly are not slowed by oversubscription.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest

from shopsense.core.config import conf_dir, load_conf

TEST_OVERLAY = Path(__file__).parent / "conf" / "test.yaml"
REPO = Path(__file__).resolve().parents[1]
ONLINE_RETAIL = REPO.parent / "shared" / "data" / "online_retail" / "online_retail.csv.gz"


def make_conf(warehouse: Path | str, *overrides: str, files: tuple = ()):
    """The test configuration: local overlay + test overlay + a warehouse of the test's own."""
    return load_conf([conf_dir() / "local.yaml", TEST_OVERLAY, *files],
                     [f"warehouse={warehouse}", *overrides])


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
                     "ingest.source=online_retail", f"sources.online_retail.orders.path={ONLINE_RETAIL}")
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
        return make_conf(warehouse, "ingest.source=online_retail",
                         f"sources.online_retail.orders.path={ONLINE_RETAIL}", *overrides)
    return factory


QUICK_OVERLAY = REPO / "conf" / "quick.yaml"


def quick_conf(warehouse: Path | str, raw_dir: Path | str, *overrides: str):
    """The test conf + conf/quick.yaml (a small sample, light model searches), with the sample
    job and source pointed at ``raw_dir``."""
    from shopsense.notebook import sample_overrides

    return make_conf(warehouse, *sample_overrides(raw_dir), "ingest.source=sample", *overrides,
                     files=(QUICK_OVERLAY,))


@pytest.fixture(scope="session")
def quick_pipeline(spark, tmp_path_factory):
    """Quick sample raw files generated once and the whole pipeline run on them in this session:
    (conf, {job: summary}). Tests read its tables; they must not write to its warehouse."""
    from shopsense.notebook import run

    root = tmp_path_factory.mktemp("quick-pipeline")
    conf = quick_conf(root / "warehouse", root / "raw")
    results = run(spark, conf, "sample", "all")
    return conf, results


def quick_cli_args(warehouse: Path | str, raw_dir: Path | str, *overrides: str) -> list[str]:
    """The command-line arguments giving a job entry point the conf of :func:`quick_conf`."""
    from shopsense.notebook import sample_overrides

    sets = [f"warehouse={warehouse}", *sample_overrides(raw_dir), "ingest.source=sample", *overrides]
    return ["--conf", str(conf_dir() / "local.yaml"), "--conf", str(TEST_OVERLAY),
            "--conf", str(QUICK_OVERLAY), *[a for s in sets for a in ("--set", s)]]
