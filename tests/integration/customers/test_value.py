"""The value job on the CDNOW sample (tests/data/cdnow): the summaries Spark computes from the
raw purchases equal the published ones, the fitted parameters the published ones, and the
hold-out of weeks 40-78 compares the model with a naive constant rate."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from shopsense.core import columns as C
from shopsense.core import tables
from shopsense.customers import value
from shopsense.customers import value_models as M
from tests.helpers import cdnow_purchases, cdnow_summary

CALIBRATION_END = dt.date(1997, 9, 30)
DATA_END = dt.date(1998, 6, 30)
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "v": 15.45}


def cdnow_order_lines(spark):
    """The CDNOW purchases as silver.order_lines rows: one order per purchase line, one SKU."""
    raw = cdnow_purchases().reset_index(names="row")
    frame = pd.DataFrame({
        C.LINE_ID: "cdnow-" + raw["row"].astype(str), C.ORDER_ID: "o" + raw["row"].astype(str),
        C.CUSTOMER_ID: raw["customer"].astype(str), C.IS_GUEST: False, C.SKU: "CD",
        C.PRODUCT_NAME: "CD", C.CATEGORY: None, C.COUNTRY: "US",
        C.QUANTITY: raw["cds"].astype(float), C.UNIT_PRICE: raw["value"] / raw["cds"],
        C.REVENUE: raw["value"].astype(float), C.ORDERED_AT: pd.to_datetime(raw["date"]),
        C.ORDER_DATE: raw["date"], C.LINE_TYPE: C.LINE_SALE, C.IS_PRODUCT: True,
        C.SOURCE_FILE: "CDNOW_sample.txt", C.RUN_ID: "cdnow", C.INGESTED_AT: dt.datetime(2026, 1, 1)})
    return spark.createDataFrame(frame, tables.ORDER_LINES)


@pytest.fixture(scope="module")
def cdnow_conf(spark, tmp_path_factory):
    """A warehouse holding the CDNOW purchases in silver.order_lines."""
    from tests.helpers import make_conf

    conf = make_conf(tmp_path_factory.mktemp("cdnow") / "warehouse")
    tables.overwrite(cdnow_order_lines(spark), conf, "silver.order_lines")
    return conf


def test_summaries_from_the_raw_purchases_are_the_published_ones(spark, cdnow_conf):
    lines = tables.read_table(spark, cdnow_conf, "silver.order_lines")
    mine = (value.summaries(value.purchase_days(lines, CALIBRATION_END), CALIBRATION_END, 7.0)
            .toPandas().assign(ID=lambda f: f[C.CUSTOMER_ID].astype(int)).set_index("ID").sort_index())
    published = cdnow_summary().set_index("ID").sort_index()
    assert list(mine.index) == list(published.index)   # 2,357 customers, all bought by then
    assert (mine["x"] == published["x"]).all()
    assert np.allclose(mine["t_x"], published["t_x"], atol=0.006)   # published: 2 decimals
    assert np.allclose(mine["T"], published["T"], atol=0.006)
    repeat = published["x"] > 0
    assert np.allclose(mine.loc[repeat, "m_x"], published.loc[repeat, "zbar"], atol=0.006)
    assert mine.loc[~repeat, "m_x"].isna().all()


@pytest.fixture(scope="module")
def calibration_run(spark, cdnow_conf):
    """The value job as of the end of the calibration period."""
    from tests.helpers import make_conf

    conf = make_conf(cdnow_conf["warehouse"], f"as_of={CALIBRATION_END}")
    summary = value.run(spark, conf)
    return conf, summary


def _metrics(spark, conf, scope):
    rows = tables.read_table(spark, conf, "gold.customer_value_metrics").filter(
        F.col("scope") == scope).collect()
    return {(r["model"], r["metric"]): r["value"] for r in rows}


def test_the_job_fits_the_published_parameters(spark, calibration_run):
    conf, summary = calibration_run
    assert summary["status"] == "succeeded" and summary["rows_out"] == 2357
    fit = _metrics(spark, conf, "fit")
    for name, published in PUBLISHED_BGNBD.items():
        assert fit[("bgnbd", name)] == pytest.approx(published, abs=0.005), name
        assert summary["metrics"][f"bgnbd_{name}"] == fit[("bgnbd", name)]
    for name, published in PUBLISHED_GAMMA_GAMMA.items():
        assert fit[("gamma_gamma", name)] == pytest.approx(published, abs=0.05), name
    # the driver held groups, not customers
    assert fit[("bgnbd", "groups")] < 2357 and fit[("bgnbd", "grid_days")] == 1


def test_every_customer_is_scored_with_the_fitted_parameters(spark, calibration_run):
    conf, _ = calibration_run
    fit = _metrics(spark, conf, "fit")
    params = {k: fit[("bgnbd", k)] for k in PUBLISHED_BGNBD}
    gg = {k: fit[("gamma_gamma", k)] for k in PUBLISHED_GAMMA_GAMMA}
    out = tables.read_table(spark, conf, "gold.customer_value").toPandas().set_index(C.CUSTOMER_ID)
    published = cdnow_summary().assign(ID=lambda f: f["ID"].astype(str)).set_index("ID")
    assert set(out.index) == set(published.index)
    one = out.loc["1"]   # x = 2, t_x = 30.43, T = 38.86: the paper's example customer
    assert one["frequency"] == 2 and one["source"] == value.SOURCE_MODEL
    assert one["expected_purchases_365d"] == pytest.approx(
        float(M.bgnbd_expected(params, 365 / 7, 2, 30.43, 38.86)), rel=2e-3)
    # probabilities, ordered horizons, CLV: what every row must satisfy
    assert out["p_alive"].between(0, 1).all() and out["p_purchase_30d"].between(0, 1).all()
    assert (out["expected_purchases_30d"] <= out["expected_purchases_90d"]).all()
    assert (out["expected_purchases_90d"] <= out["expected_purchases_365d"]).all()
    assert (out["p_purchase_30d"] <= out["p_alive"] + 1e-12).all()
    assert (out["clv_12m"] > 0).all()
    # no repeat purchase: alive for sure under BG/NBD, the population's order value, said so
    none = out[out["frequency"] == 0]
    assert len(none) == (published["x"] == 0).sum() == 1411
    assert (none["p_alive"] == 1.0).all() and (none["source"] == value.SOURCE_POPULATION).all()
    assert np.allclose(none["expected_order_value"], gg["p"] * gg["v"] / (gg["q"] - 1))
    assert none["mean_repeat_value"].isna().all()


def test_holdout_of_weeks_40_to_78_against_a_naive_rate(spark, cdnow_conf):
    """As of the end of the data with a 39-week hold-out: the calibration is the published one,
    and the model's customer-level error is below the naive constant rate's."""
    from tests.helpers import make_conf

    conf = make_conf(cdnow_conf["warehouse"], f"as_of={DATA_END}", "value.holdout_days=273")
    value.run(spark, conf)
    holdout = _metrics(spark, conf, "holdout")
    for name, published in PUBLISHED_BGNBD.items():
        assert holdout[("bgnbd", f"calibration_{name}")] == pytest.approx(published, abs=0.005)
    # actual repeat purchase days in weeks 40-78, counted here from the raw file
    raw = cdnow_purchases()
    later = raw[(raw["date"] > CALIBRATION_END)].drop_duplicates(["customer", "date"])
    assert holdout[("actual", "actual_total")] == len(later)
    assert holdout[("actual", "customers")] == 2357
    print(f"CDNOW hold-out: MAE BG/NBD {holdout[('bgnbd', 'mae')]:.4f}, naive "
          f"{holdout[('naive', 'mae')]:.4f}; total predicted {holdout[('bgnbd', 'predicted_total')]:.1f} "
          f"(naive {holdout[('naive', 'predicted_total')]:.1f}), actual {len(later)}")
    assert holdout[("bgnbd", "mae")] < holdout[("naive", "mae")]


def test_a_coarser_grid_keeps_the_fit_input_small(spark, cdnow_conf):
    """With at most 300 groups the job groups t_x and T to coarser steps of days: the fit's
    input has at most 300 rows and the parameters stay within 5% of the full fit's."""
    from tests.helpers import make_conf

    conf = make_conf(cdnow_conf["warehouse"], f"as_of={CALIBRATION_END}", "value.max_fit_groups=300")
    summary = tables.read_table(spark, conf, "silver.order_lines")
    summaries = value.summaries(value.purchase_days(summary, CALIBRATION_END), CALIBRATION_END, 7.0)
    groups, grid = value.bgnbd_groups(summaries, 7.0, 300)
    assert len(groups) <= 300 and grid > 1 and groups["weight"].sum() == 2357
    fit = M.fit_bgnbd(groups["x"], groups["t_x"], groups["T"], groups["weight"])
    for name, published in PUBLISHED_BGNBD.items():
        assert fit.params[name] == pytest.approx(published, rel=0.05), name


def test_a_million_customers_reach_the_driver_as_fewer_than_50000_groups(spark, conf):
    """1,000,000 customers drawn from the published parameters over two years (in Spark): the
    fit's input, with the default value.max_fit_groups, is under 50,000 rows and holds every
    customer; the fit on it recovers the parameters within 5% (bench/bench_value.py times it)."""
    settings = conf.value
    summary = value.simulated_summaries(spark, PUBLISHED_BGNBD, 1_000_000, 730, seed=5,
                                        partitions=4).cache()
    try:
        groups, grid = value.bgnbd_groups(summary, settings.time_unit_days, settings.max_fit_groups)
    finally:
        summary.unpersist()
    assert len(groups) <= settings.max_fit_groups < 50_000
    assert groups["weight"].sum() == 1_000_000
    fit = M.fit_bgnbd(groups["x"], groups["t_x"], groups["T"], groups["weight"])
    for name, planted in PUBLISHED_BGNBD.items():
        assert fit.params[name] == pytest.approx(planted, rel=0.05), (name, grid)
