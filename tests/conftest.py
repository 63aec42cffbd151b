"""One session-scoped SparkSession for the whole suite; each test gets its own warehouse."""

from __future__ import annotations

from pathlib import Path

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
