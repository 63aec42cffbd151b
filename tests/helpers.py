"""What the tests share besides fixtures: paths, the test configurations, sample data in the
silver shape. Tests import these with ``from tests.helpers import ...``; conftest.py holds
only the fixtures built on them."""

from __future__ import annotations

from pathlib import Path

from shopsense.core.config import conf_dir, load_conf

REPO = Path(__file__).resolve().parents[1]
TEST_OVERLAY = REPO / "tests" / "conf" / "test.yaml"
QUICK_OVERLAY = REPO / "conf" / "quick.yaml"
NOTEBOOKS = REPO / "notebooks"
ONLINE_RETAIL = REPO.parent / "shared" / "data" / "online_retail" / "online_retail.csv.gz"


def make_conf(warehouse: Path | str, *overrides: str, files: tuple = ()):
    """The test configuration: local overlay + test overlay + a warehouse of the test's own."""
    return load_conf([conf_dir() / "local.yaml", TEST_OVERLAY, *files],
                     [f"warehouse={warehouse}", *overrides])


def online_retail_overrides() -> list[str]:
    """Overrides that make the ingest read the Online Retail export in ../shared/data."""
    return ["ingest.source=online_retail", f"sources.online_retail.orders.path={ONLINE_RETAIL}"]


def quick_conf(warehouse: Path | str, raw_dir: Path | str, *overrides: str):
    """The test conf + conf/quick.yaml (a small sample, light model searches), with the sample
    job and source pointed at ``raw_dir``."""
    from shopsense.notebook import sample_overrides

    return make_conf(warehouse, *sample_overrides(raw_dir), "ingest.source=sample", *overrides,
                     files=(QUICK_OVERLAY,))


def quick_cli_args(warehouse: Path | str, raw_dir: Path | str, *overrides: str) -> list[str]:
    """The command-line arguments giving a job entry point the conf of :func:`quick_conf`."""
    from shopsense.notebook import sample_overrides

    sets = [f"warehouse={warehouse}", *sample_overrides(raw_dir), "ingest.source=sample", *overrides]
    return ["--conf", str(conf_dir() / "local.yaml"), "--conf", str(TEST_OVERLAY),
            "--conf", str(QUICK_OVERLAY), *[a for s in sets for a in ("--set", s)]]

