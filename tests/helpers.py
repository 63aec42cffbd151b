"""What the tests share besides fixtures: paths, the test configurations, sample data in the
silver shape. Tests import these with ``from tests.helpers import ...``; conftest.py holds
only the fixtures built on them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from shopsense.core.config import conf_dir, load_conf

REPO = Path(__file__).resolve().parents[1]
TEST_OVERLAY = REPO / "tests" / "conf" / "test.yaml"
QUICK_OVERLAY = REPO / "conf" / "quick.yaml"
#: Fixed partitioning, no effective time budget: runs on the same raw files give the same tables.
REPRODUCIBLE_OVERLAY = REPO / "tests" / "conf" / "reproducible.yaml"
#: The quick pipeline's conf files on top of conf/local.yaml and the test overlay.
QUICK_FILES = (QUICK_OVERLAY, REPRODUCIBLE_OVERLAY)
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
    """The test conf + conf/quick.yaml (a small sample, light model searches) + the reproducible
    overlay, with the sample job and source pointed at ``raw_dir``."""
    from shopsense.notebook import sample_overrides

    return make_conf(warehouse, *sample_overrides(raw_dir), "ingest.source=sample", *overrides,
                     files=QUICK_FILES)


def quick_cli_args(warehouse: Path | str, raw_dir: Path | str, *overrides: str) -> list[str]:
    """The command-line arguments giving a job entry point the conf of :func:`quick_conf`."""
    from shopsense.notebook import sample_overrides

    sets = [f"warehouse={warehouse}", *sample_overrides(raw_dir), "ingest.source=sample", *overrides]
    files = [conf_dir() / "local.yaml", TEST_OVERLAY, *QUICK_FILES]
    return [*[a for f in files for a in ("--conf", str(f))], *[a for s in sets for a in ("--set", s)]]



def silver_from_sample(sample_lines):
    """The sample generator's order lines as silver.order_lines rows, without running ingest
    (tested on its own): customer ids stay raw (so they join the truth tables), a negative
    quantity is a return, every SKU is a product."""
    from pyspark.sql import functions as F

    from shopsense.core import columns as C
    from shopsense.core import tables

    return tables.conform(
        sample_lines
        .withColumn(C.LINE_ID, F.concat_ws("|", C.ORDER_ID, C.SKU, C.QUANTITY))
        .withColumn(C.IS_GUEST, F.col(C.CUSTOMER_ID).isNull())
        .withColumn(C.QUANTITY, F.col(C.QUANTITY).cast("double"))
        .withColumn(C.REVENUE, F.col(C.QUANTITY) * F.col(C.UNIT_PRICE))
        .withColumn(C.ORDER_DATE, F.to_date(C.ORDERED_AT))
        .withColumn(C.LINE_TYPE, F.when(F.col(C.QUANTITY) < 0, C.LINE_RETURN).otherwise(C.LINE_SALE))
        .withColumn(C.IS_PRODUCT, F.lit(True))
        .withColumn(C.SOURCE_FILE, F.lit("sample"))
        .withColumn(C.RUN_ID, F.lit("sample"))
        .withColumn(C.INGESTED_AT, F.lit(dt.datetime(2024, 1, 1))),
        tables.ORDER_LINES)


CDNOW = REPO / "tests" / "data" / "cdnow"


def cdnow_purchases():
    """The CDNOW sample's purchases (tests/data/cdnow): pandas (customer, date, cds, value)."""
    import pandas as pd

    frame = pd.read_csv(CDNOW / "CDNOW_sample.txt", sep=r"\s+", header=None,
                        names=["master_id", "customer", "date", "cds", "value"], dtype={"date": str})
    frame["date"] = pd.to_datetime(frame["date"], format="%Y%m%d").dt.date
    return frame.drop(columns="master_id")


def cdnow_summary():
    """The published calibration-period summary of the CDNOW sample (x, t_x, T, zbar by ID)."""
    import pandas as pd

    return pd.read_csv(CDNOW / "cdnow_customers_summary_with_transactions.csv")
