"""Accuracy metrics of the per-SKU forecasts (numpy / pandas only, no Spark).

The point metrics (:func:`mae`, :func:`rmse`, :func:`wape`, :func:`smape`, :func:`mase` with its
:func:`mase_scale`, :func:`bias`), the additive per-SKU error sums a backtest row carries
(``_error_sums``), and :func:`overall_accuracy`, which aggregates those rows across SKUs from the
sums so that the Spark job can mirror it with built-ins. The backtest that produces the rows is
:func:`shopsense.supply.forecast_models.backtest_one_sku`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------------------------
# Metrics. Errors are e = forecast - actual, so a positive bias means over-forecasting.
# --------------------------------------------------------------------------------------------

def _pair(y, yhat) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float).ravel()
    yhat = np.asarray(yhat, dtype=float).ravel()
    if y.shape != yhat.shape:
        raise ValueError(f"actual and forecast lengths differ: {y.shape[0]} vs {yhat.shape[0]}")
    return y, yhat


def mae(y, yhat) -> float:
    """Mean absolute error, mean(|yhat - y|); NaN for empty input."""
    y, yhat = _pair(y, yhat)
    return float(np.mean(np.abs(yhat - y))) if y.size else math.nan


def rmse(y, yhat) -> float:
    """Root mean squared error, sqrt(mean((yhat - y)^2)); NaN for empty input."""
    y, yhat = _pair(y, yhat)
    return float(np.sqrt(np.mean((yhat - y) ** 2))) if y.size else math.nan


def wape(y, yhat) -> float:
    """Weighted absolute percentage error as a fraction, sum|yhat - y| / sum|y|.

    NaN when sum|y| is 0 (nothing to weigh against)."""
    y, yhat = _pair(y, yhat)
    denom = float(np.sum(np.abs(y)))
    return float(np.sum(np.abs(yhat - y)) / denom) if denom > 0 else math.nan


def _smape_terms(y: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    denom = np.abs(y) + np.abs(yhat)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(denom > 0, 2.0 * np.abs(yhat - y) / denom, 0.0)
    return terms


def smape(y, yhat) -> float:
    """Symmetric MAPE as a fraction in [0, 2]: mean(2|yhat - y| / (|y| + |yhat|)).

    A point where both actual and forecast are 0 contributes 0 (a perfect forecast)."""
    y, yhat = _pair(y, yhat)
    return float(np.mean(_smape_terms(y, yhat))) if y.size else math.nan


def mase(y, yhat, scale: float) -> float:
    """Mean absolute scaled error, mae(y, yhat) / scale.

    ``scale`` is the in-sample MAE of the seasonal naive forecast (see :func:`mase_scale`).
    NaN when the scale is 0 or not finite (a series that repeats exactly every season)."""
    if not (np.isfinite(scale) and scale > 0):
        return math.nan
    return mae(y, yhat) / float(scale)


def mase_scale(train, season_length: int = 7) -> float:
    """In-sample MAE of the seasonal naive forecast, mean(|y_t - y_{t-m}|); NaN if len <= m."""
    train = np.asarray(train, dtype=float).ravel()
    if train.size <= season_length:
        return math.nan
    return float(np.mean(np.abs(train[season_length:] - train[:-season_length])))


def bias(y, yhat) -> float:
    """Mean error, mean(yhat - y): positive means over-forecasting; NaN for empty input."""
    y, yhat = _pair(y, yhat)
    return float(np.mean(yhat - y)) if y.size else math.nan


# --------------------------------------------------------------------------------------------
# Aggregation: the per-SKU error sums of a backtest row, and the overall metrics built from them
# --------------------------------------------------------------------------------------------

def _error_sums(y: np.ndarray, yhat: np.ndarray, scale: float) -> dict[str, float]:
    """The additive sums and the per-SKU metrics derived from them (see overall_accuracy)."""
    e = yhat - y
    n = y.size
    sums = {
        "sum_abs_error": float(np.sum(np.abs(e))),
        "sum_sq_error": float(np.sum(e ** 2)),
        "sum_error": float(np.sum(e)),
        "sum_smape_terms": float(np.sum(_smape_terms(y, yhat))),
    }
    if n == 0:
        return {**sums, **{k: math.nan for k in ("mae", "rmse", "wape", "smape", "mase", "bias")}}
    return {**sums, "mae": mae(y, yhat), "rmse": rmse(y, yhat), "wape": wape(y, yhat),
            "smape": smape(y, yhat), "mase": mase(y, yhat, scale), "bias": bias(y, yhat)}


def overall_accuracy(per_sku: pd.DataFrame) -> dict[str, float]:
    """Aggregate :func:`backtest_one_sku` rows to overall metrics, from sums, so that Spark can
    mirror it with ``F.sum`` / ``F.avg``. With N = Σ n_points over SKUs (for the model, and the
    same with the ``baseline_`` prefix):

    * mae   = Σ sum_abs_error / N
    * rmse  = sqrt(Σ sum_sq_error / N)
    * wape  = Σ sum_abs_error / Σ sum_abs_actual
    * smape = Σ sum_smape_terms / N
    * bias  = Σ sum_error / N                       (mean of forecast - actual)
    * mase  = mean of the per-SKU mase over SKUs where it is finite (the M-competition
      convention: each SKU weighs the same, whatever its volume)
    * share_beats_baseline = mean of beats_baseline over SKUs with n_points > 0

    Also returns n_skus (with n_points > 0), n_skus_mase (finite model mase) and n_points.
    Values are NaN where a denominator is 0.
    """
    df = per_sku[per_sku["n_points"].fillna(0) > 0] if len(per_sku) else per_sku
    n_points = float(df["n_points"].sum()) if len(df) else 0.0
    abs_actual = float(df["sum_abs_actual"].sum()) if len(df) else 0.0

    def ratio(num: float, den: float) -> float:
        return num / den if den > 0 else math.nan

    out: dict[str, float] = {"n_skus": int(len(df)), "n_points": int(n_points)}
    for prefix in ("", "baseline_"):
        col = (lambda c: df[prefix + c].sum()) if len(df) else (lambda c: 0.0)
        out[prefix + "mae"] = ratio(float(col("sum_abs_error")), n_points)
        mse = ratio(float(col("sum_sq_error")), n_points)
        out[prefix + "rmse"] = math.sqrt(mse) if np.isfinite(mse) else math.nan
        out[prefix + "wape"] = ratio(float(col("sum_abs_error")), abs_actual)
        out[prefix + "smape"] = ratio(float(col("sum_smape_terms")), n_points)
        out[prefix + "bias"] = ratio(float(col("sum_error")), n_points)
        finite = df[prefix + "mase"][np.isfinite(df[prefix + "mase"].astype(float))] if len(df) \
            else pd.Series([], dtype=float)
        out[prefix + "mase"] = float(finite.mean()) if len(finite) else math.nan
    out["n_skus_mase"] = int(np.isfinite(df["mase"].astype(float)).sum()) if len(df) else 0
    out["share_beats_baseline"] = float(df["beats_baseline"].mean()) if len(df) else math.nan
    return out
