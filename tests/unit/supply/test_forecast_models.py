"""Unit tests for shopsense.supply.forecast_models and the forecast_methods and forecast_metrics
it builds on (pandas only, no Spark)."""

import dataclasses
import datetime as dt
import math
import time

import numpy as np
import pandas as pd
import pytest

from shopsense.supply import forecast_methods
from shopsense.supply import forecast_models as fm
from shopsense.supply.forecast_methods import classify_demand
from shopsense.supply.forecast_metrics import (
    bias,
    mae,
    mase,
    mase_scale,
    overall_accuracy,
    rmse,
    smape,
    wape,
)
from shopsense.supply.forecast_models import (
    ACCURACY_SCHEMA,
    FORECAST_SCHEMA,
    ForecastParams,
    backtest_one_sku,
    forecast_one_sku,
)

PANDAS_DTYPE = {"string": "object", "date": "object", "double": "float64", "int": "int32",
                "bigint": "int64", "boolean": "bool"}


def history(units, start="2024-01-01", sku="SKU-1"):
    units = np.asarray(units, dtype=float)
    return pd.DataFrame({"sku": sku, "date": pd.date_range(start, periods=len(units), freq="D"),
                         "units": units})


def smooth_series(n, seed=0):
    """Trend + weekly seasonality + noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    weekly = np.array([0.0, 2.0, 4.0, 6.0, 8.0, 14.0, 10.0])[t % 7]
    return np.clip(30 + 0.03 * t + weekly + rng.normal(0, 2.0, n), 0, None)


def assert_matches_schema(df, ddl):
    fields = fm.schema_fields(ddl)
    assert list(df.columns) == [name for name, _ in fields]
    for name, typ in fields:
        assert str(df[name].dtype) == PANDAS_DTYPE[typ], name
        if typ == "date":
            assert all(isinstance(v, dt.date) for v in df[name])


def assert_valid_forecast(out, start, horizon=28):
    assert_matches_schema(out, FORECAST_SCHEMA)
    assert len(out) == horizon
    assert out["date"].tolist() == [d.date() for d in pd.date_range(start, periods=horizon)]
    values = out[["forecast", "lo80", "hi80", "lo95", "hi95"]].to_numpy()
    assert np.isfinite(values).all()
    assert (values >= 0).all()
    assert (out["lo95"] <= out["lo80"]).all() and (out["lo80"] <= out["forecast"]).all()
    assert (out["forecast"] <= out["hi80"]).all() and (out["hi80"] <= out["hi95"]).all()
    assert out["model"].nunique() == 1 and out["status"].nunique() == 1


# ---------------------------------------------------------------- metrics

Y = np.array([2.0, 0.0, 4.0, 6.0])
YHAT = np.array([3.0, 0.0, 2.0, 6.0])   # errors (yhat - y): +1, 0, -2, 0


def test_metrics_against_hand_computed_values():
    assert mae(Y, YHAT) == pytest.approx(0.75)
    assert rmse(Y, YHAT) == pytest.approx(math.sqrt(5 / 4))
    assert wape(Y, YHAT) == pytest.approx(3 / 12)
    # terms: 2*1/5, 0 (0/0 counts as perfect), 2*2/6, 0
    assert smape(Y, YHAT) == pytest.approx((0.4 + 0 + 2 / 3 + 0) / 4)
    assert bias(Y, YHAT) == pytest.approx(-0.25)
    assert mase(Y, YHAT, scale=1.5) == pytest.approx(0.5)


def test_mase_scale_is_in_sample_seasonal_naive_mae():
    train = np.array([1, 2, 3, 4, 5, 6, 7, 2, 2, 3, 4, 5, 6, 9], dtype=float)
    # lag-7 differences: 1, 0, 0, 0, 0, 0, 2
    assert mase_scale(train, 7) == pytest.approx(3 / 7)
    assert math.isnan(mase_scale(train[:7], 7))


def test_undefined_metrics_are_nan_not_errors():
    assert math.isnan(wape([0.0, 0.0], [1.0, 0.0]))
    assert math.isnan(mase(Y, YHAT, scale=0.0))
    assert math.isnan(mae([], []))
    with pytest.raises(ValueError, match="lengths differ: 2 vs 1"):
        mae([1.0, 2.0], [1.0])


# ---------------------------------------------------------------- classification

@pytest.mark.parametrize("units, pattern, adi, cv2", [
    ([5, 5, 6, 4, 5, 5, 6, 4], "smooth", 1.0, 0.02),
    ([1, 9, 1, 9, 1, 9, 1, 9], "erratic", 1.0, 0.64),
    ([0, 0, 3, 0, 0, 3, 0, 4], "intermittent", 8 / 3, 1 / 50),
    ([0, 0, 1, 0, 0, 9, 0, 0], "lumpy", 4.0, 0.64),
    ([0, 0, 0, 0], "no_demand", math.nan, math.nan),
])
def test_classify_demand(units, pattern, adi, cv2):
    got_pattern, got_adi, got_cv2 = classify_demand(np.array(units, dtype=float))
    assert got_pattern == pattern
    assert got_adi == pytest.approx(adi, nan_ok=True)
    assert got_cv2 == pytest.approx(cv2, nan_ok=True)


def test_classify_demand_counts_nan_as_no_demand():
    assert classify_demand(np.array([4.0, np.nan, 4.0, np.nan]))[:2] == ("intermittent", 2.0)


# ---------------------------------------------------------------- forecast: edge cases

def test_empty_history_gives_empty_frame_with_schema():
    out = forecast_one_sku(history([]), ForecastParams())
    assert out.empty
    assert_matches_schema(out, FORECAST_SCHEMA)


def test_all_zero_series_forecasts_zero():
    out = forecast_one_sku(history(np.zeros(60)), ForecastParams())
    assert_valid_forecast(out, "2024-03-01")
    assert out["forecast"].eq(0).all() and out["hi95"].eq(0).all()
    assert out.loc[0, ["model", "status", "reason", "pattern"]].tolist() == \
        ["zero", "ok", "all_zero", "no_demand"]


def test_constant_series_forecasts_the_constant():
    out = forecast_one_sku(history(np.full(90, 4.0)), ForecastParams())
    assert_valid_forecast(out, "2024-03-31")
    assert out["forecast"].eq(4.0).all()
    assert out.loc[0, ["model", "status", "reason"]].tolist() == ["constant", "ok", "constant_series"]


def test_single_day_falls_back_to_mean():
    out = forecast_one_sku(history([9.0], start="2024-05-05"), ForecastParams())
    assert_valid_forecast(out, "2024-05-06")
    assert out["forecast"].eq(9.0).all()
    # Poisson-level dispersion: sd = sqrt(9) = 3, so hi95 = 9 + 1.96 * 3
    assert out.loc[0, "hi95"] == pytest.approx(9 + 1.959964 * 3, rel=1e-5)
    assert out.loc[0, ["model", "status", "reason"]].tolist() == ["mean", "fallback", "too_short"]


def test_short_smooth_series_uses_seasonal_naive():
    units = smooth_series(30)
    out = forecast_one_sku(history(units), ForecastParams())
    assert_valid_forecast(out, "2024-01-31")
    assert out.loc[0, ["model", "status", "reason"]].tolist() == \
        ["seasonal_naive", "fallback", "too_short"]
    np.testing.assert_allclose(out["forecast"].to_numpy()[:14], np.tile(units[-7:], 2))
    # interval width grows with sqrt(seasons ahead): week 4 is twice as wide as week 1
    width = (out["hi95"] - out["forecast"]).to_numpy()
    assert width[21] == pytest.approx(2 * width[0])


def test_nan_values_are_treated_as_zero_and_recorded():
    units = smooth_series(40)
    with_nan = units.copy()
    with_nan[[5, 17, 33]] = np.nan
    out = forecast_one_sku(history(with_nan), ForecastParams())
    assert_valid_forecast(out, "2024-02-10")
    assert out.loc[0, "reason"] == "too_short; nan_values_filled"
    zeroed = units.copy()
    zeroed[[5, 17, 33]] = 0.0
    same = forecast_one_sku(history(zeroed), ForecastParams())
    np.testing.assert_allclose(out["forecast"], same["forecast"])


def test_negative_units_and_missing_dates_are_cleaned_and_recorded():
    frame = history(smooth_series(40))
    frame.loc[3, "units"] = -5.0
    frame = frame.drop(index=[10, 11])
    out = forecast_one_sku(frame, ForecastParams())
    assert_valid_forecast(out, "2024-02-10")
    assert out.loc[0, "reason"] == "too_short; missing_dates_filled; negative_values_clipped"


def test_unreadable_history_does_not_raise():
    out = forecast_one_sku(pd.DataFrame({"sku": ["A"], "when": ["x"]}), ForecastParams())
    assert out.empty
    assert_matches_schema(out, FORECAST_SCHEMA)


# ---------------------------------------------------------------- forecast: models

def test_intermittent_series_gets_tsb_and_croston_on_request():
    units = np.zeros(120)
    units[::5] = [3, 4, 3, 5, 3, 4, 4, 3, 5, 3, 4, 3, 4, 5, 3, 4, 3, 4, 3, 5, 4, 3, 4, 3]
    out = forecast_one_sku(history(units), ForecastParams())
    assert_valid_forecast(out, "2024-04-30")
    assert out.loc[0, ["model", "status", "pattern"]].tolist() == ["tsb", "ok", "intermittent"]
    assert out["reason"].isna().all()
    # a flat daily rate near the long-run mean of 0.74 units/day
    assert out["forecast"].nunique() == 1
    assert 0.5 < out.loc[0, "forecast"] < 1.0
    assert out.loc[0, "lo95"] == 0.0 and out.loc[0, "hi95"] > 3.0

    croston = forecast_one_sku(history(units), ForecastParams(intermittent_method="croston"))
    assert croston.loc[0, "model"] == "croston"
    assert 0.5 < croston.loc[0, "forecast"] < 1.0


def test_smooth_seasonal_series_gets_arima_that_beats_seasonal_naive():
    frame = history(smooth_series(364))
    params = ForecastParams()
    out = forecast_one_sku(frame, params)
    assert_valid_forecast(out, "2024-12-30")
    assert out.loc[0, "model"].startswith("arima(")
    assert out.loc[0, ["status", "pattern"]].tolist() == ["ok", "smooth"]
    # the weekly shape carries into the forecast: Saturdays (weekly peak) above Mondays
    assert out["forecast"].iloc[5] > out["forecast"].iloc[0] + 8

    acc = backtest_one_sku(frame, params)
    assert_matches_schema(acc, ACCURACY_SCHEMA)
    row = acc.iloc[0]
    assert row["model_family"] == "arima" and row["status"] == "ok"
    assert row["n_windows"] == 3 and row["n_points"] == 84
    assert row["mase"] < row["baseline_mase"]
    assert row["mase"] < 0.9
    assert bool(row["beats_baseline"]) is True
    assert row["mae"] == pytest.approx(row["sum_abs_error"] / 84)
    assert row["mase"] == pytest.approx(row["mae"] / row["mase_scale"])


def test_forced_fit_failure_falls_back_with_reason(monkeypatch):
    class Broken:
        def __init__(self, *args, **kwargs):
            raise np.linalg.LinAlgError("boom")

    monkeypatch.setattr(forecast_methods, "SARIMAX", Broken)
    out = forecast_one_sku(history(smooth_series(120)), ForecastParams())
    assert_valid_forecast(out, "2024-04-30")
    assert out.loc[0, ["model", "status", "reason"]].tolist() == \
        ["seasonal_naive", "fallback", "fit_failed: LinAlgError"]


def test_convergence_warning_counts_as_failure(monkeypatch):
    import warnings

    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    real = forecast_methods.SARIMAX

    class NoisySarimax(real):
        def fit(self, *args, **kwargs):
            res = super().fit(*args, **kwargs)
            warnings.warn("did not converge", ConvergenceWarning)
            return res

    monkeypatch.setattr(forecast_methods, "SARIMAX", NoisySarimax)
    params = ForecastParams(arima_max_models=2)
    out = forecast_one_sku(history(smooth_series(120)), params)
    assert out.loc[0, ["model", "status", "reason"]].tolist() == \
        ["seasonal_naive", "fallback", "not_converged"]


def test_zero_time_budget_falls_back():
    out = forecast_one_sku(history(smooth_series(120)), ForecastParams(time_budget_seconds=0))
    assert_valid_forecast(out, "2024-04-30")
    assert out.loc[0, ["model", "status", "reason"]].tolist() == \
        ["seasonal_naive", "fallback", "time_budget"]


def test_very_long_series_uses_only_the_tail():
    units = smooth_series(5 * 365, seed=3)
    params = ForecastParams(max_history_days=120, arima_max_models=3)
    started = time.perf_counter()
    long_out = forecast_one_sku(history(units), params)
    elapsed = time.perf_counter() - started
    tail_out = forecast_one_sku(history(units[-120:], start="2028-09-01"), params)
    assert_valid_forecast(long_out, "2028-12-30")
    assert long_out.loc[0, "model"].startswith("arima(")
    assert long_out.loc[0, "model"] == tail_out.loc[0, "model"]
    np.testing.assert_allclose(long_out["forecast"], tail_out["forecast"], rtol=1e-6)
    assert elapsed < 10


def test_params_are_validated_with_the_facts():
    with pytest.raises(ValueError, match="information_criterion must be 'aic' or 'bic', got 'hqic'"):
        ForecastParams(information_criterion="hqic")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ForecastParams().horizon = 7  # type: ignore[misc]


# ---------------------------------------------------------------- backtest + overall

def test_backtest_of_too_short_history_is_skipped_not_raised():
    acc = backtest_one_sku(history(smooth_series(30)), ForecastParams())
    assert_matches_schema(acc, ACCURACY_SCHEMA)
    row = acc.iloc[0]
    assert (row["status"], row["reason"], row["n_windows"], row["n_points"]) == \
        ("skipped", "too_short_for_backtest", 0, 0)
    assert backtest_one_sku(history([]), ForecastParams()).empty


def test_backtest_windows_and_intermittent_family():
    units = np.zeros(100)
    units[::4] = 2.0
    units[::12] = 3.0
    acc = backtest_one_sku(history(units), ForecastParams(horizon=14, backtest_windows=2))
    row = acc.iloc[0]
    assert row["n_windows"] == 2 and row["n_points"] == 28
    assert row["model_family"] == "tsb" and row["pattern"] == "intermittent"
    assert row["sum_actual"] == pytest.approx(units[-28:].sum())


def test_overall_accuracy_aggregates_sums_not_averages():
    per_sku = pd.DataFrame({
        "n_points": [2, 4, 0],
        "sum_abs_actual": [10.0, 30.0, 0.0],
        "sum_abs_error": [2.0, 6.0, 0.0],
        "sum_sq_error": [4.0, 12.0, 0.0],
        "sum_error": [2.0, -4.0, 0.0],
        "sum_smape_terms": [0.2, 0.4, 0.0],
        "mase": [0.5, np.nan, np.nan],
        "baseline_sum_abs_error": [4.0, 8.0, 0.0],
        "baseline_sum_sq_error": [8.0, 16.0, 0.0],
        "baseline_sum_error": [0.0, 6.0, 0.0],
        "baseline_sum_smape_terms": [0.6, 0.6, 0.0],
        "baseline_mase": [1.0, 3.0, np.nan],
        "beats_baseline": [True, False, False],
    })
    got = overall_accuracy(per_sku)
    assert got["n_skus"] == 2 and got["n_points"] == 6 and got["n_skus_mase"] == 1
    assert got["mae"] == pytest.approx(8 / 6)
    assert got["rmse"] == pytest.approx(math.sqrt(16 / 6))
    assert got["wape"] == pytest.approx(8 / 40)
    assert got["smape"] == pytest.approx(0.6 / 6)
    assert got["bias"] == pytest.approx(-2 / 6)
    assert got["mase"] == pytest.approx(0.5)
    assert got["baseline_mae"] == pytest.approx(12 / 6)
    assert got["baseline_wape"] == pytest.approx(12 / 40)
    assert got["baseline_mase"] == pytest.approx(2.0)
    assert got["share_beats_baseline"] == pytest.approx(0.5)


# ---------------------------------------------------------------- weekly profile, combined output

def test_seasonal_index_multiplicative_additive_or_none():
    rng = np.random.default_rng(5)
    t = np.arange(364)
    week = np.array([1.0, 1.0, 1.0, 1.0, 1.2, 1.6, 0.2])
    mul = forecast_methods.seasonal_index(rng.poisson(40 * week[t % 7]).astype(float), 7)
    assert mul.kind == "mul" and mul.pvalue < 1e-6
    np.testing.assert_allclose(mul.index, week / week.mean(), atol=0.05)
    closed = rng.poisson(20 * np.where(t % 7 == 5, 0.0, 1.0)).astype(float)  # never sells on phase 5
    add = forecast_methods.seasonal_index(closed, 7)
    assert add.kind == "add" and add.index[5] == pytest.approx(-20 * 6 / 7, rel=0.1)
    flat = forecast_methods.seasonal_index(rng.poisson(20, 364).astype(float), 7, alpha=0.001)
    assert flat.kind == "none" and flat.pvalue >= 0.001
    assert forecast_methods.seasonal_index(np.ones(10), 7).kind == "none"        # too short


def test_combined_output_is_the_forecast_and_the_backtest():
    frame = history(smooth_series(200))
    params = ForecastParams(horizon=14, backtest_windows=2)
    got = fm.forecast_and_backtest_one_sku(frame, params)
    assert list(got.columns) == [n for n, _ in fm.schema_fields(fm.COMBINED_SCHEMA)]
    assert got["kind"].tolist() == ["forecast"] * 14 + ["accuracy"]
    fc, acc = forecast_one_sku(frame, params), backtest_one_sku(frame, params)
    pd.testing.assert_frame_equal(
        got[got["kind"] == "forecast"][list(fc.columns)].reset_index(drop=True), fc,
        check_dtype=False)
    acc_got = got[got["kind"] == "accuracy"][list(acc.columns)].reset_index(drop=True)
    pd.testing.assert_frame_equal(acc_got, acc, check_dtype=False)
    assert fm.forecast_and_backtest_one_sku(history([]), params).empty
