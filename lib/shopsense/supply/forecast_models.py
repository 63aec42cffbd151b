"""Per-SKU demand forecasting models as plain pandas functions (no Spark).

Every public ``*_one_sku`` function takes ONE SKU's daily history as a pandas DataFrame
(columns ``sku``, ``date``, ``units``) and returns a pandas DataFrame whose columns and dtypes
follow a Spark DDL schema declared once here, so the Spark job can run::

    df.groupBy("sku").applyInPandas(
        functools.partial(forecast_one_sku, params=params), FORECAST_SCHEMA)

These functions never raise: a failing fit yields rows with ``status="fallback"`` and a
``reason``. They use one thread, no processes, and set nothing global at import.

Data handling (applies to forecasting and backtesting alike):

* Rows are summed per date and reindexed to a complete daily calendar; dates missing inside the
  range become 0 (reason ``missing_dates_filled``). The upstream demand table is zero-filled,
  so an absent day means no recorded sale.
* ``NaN`` units are treated as 0 (reason ``nan_values_filled``), for the same reason: a null
  daily sum means no valid sale line was recorded that day. Interpolation was rejected because it
  invents fractional demand on intermittent series and changes their classification.
* Negative net units (returns exceeding sales on a day) are clipped to 0 (reason
  ``negative_values_clipped``): the models forecast demand, which is not negative.
* Only the last ``max_history_days`` days are used for fitting, so very long series stay fast.
* ARIMA is fitted on the last ``arima_fit_days`` (364) of those; candidates are fitted cheaply
  (simple differencing, low memory, no Hessian) and the winner is filtered once on the
  undifferenced series (see :func:`_fit_candidate`). Backtest windows after the first refit the
  first window's order, warm-started, instead of searching again (``backtest_reuse_order``).

Model selection (``forecast_one_sku``), in order:

1. no rows                               -> empty frame with the schema's columns
2. no positive unit anywhere             -> zero forecast, model ``zero``, reason ``all_zero``
3. fewer than ``season_length`` days     -> ``mean`` (fallback, ``too_short``)
4. one repeated positive value           -> ``constant`` (ok, ``constant_series``)
5. pattern intermittent / lumpy          -> ``tsb`` or ``croston`` (``intermittent_method``)
6. smooth / erratic, shorter than ``min_history_for_arima`` -> ``seasonal_naive`` (fallback,
   ``too_short``)
7. smooth / erratic                      -> automatic ARIMA on the weekly-adjusted series,
   ``arima(p,d,q)+c[*s7|+s7]`` (``+c``: mean or drift; ``*s7`` / ``+s7``: multiplicative /
   additive weekly profile, absent when the day-of-week effect is not significant)

Any exception, ``ConvergenceWarning``, non-finite output or an exhausted time budget in steps 5
and 7 falls back to the seasonal naive model, and from there to the mean model if even that
cannot be fitted (fewer than ``season_length + 1`` days).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import f_oneway
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from statsmodels.tsa.statespace.sarimax import SARIMAX
from statsmodels.tsa.stattools import kpss

from shopsense.core.columns import DATE, SKU

UNITS = "units"

#: Output of :func:`forecast_one_sku`: one row per SKU and future date.
FORECAST_SCHEMA = (
    "sku string, date date, forecast double, lo80 double, hi80 double, lo95 double, hi95 double, "
    "model string, status string, reason string, pattern string"
)

_METRIC_COLUMNS = ("mae", "rmse", "wape", "smape", "mase", "bias",
                   "sum_abs_error", "sum_sq_error", "sum_error", "sum_smape_terms")

#: Output of :func:`backtest_one_sku`: one row per SKU. ``baseline_*`` columns hold the same
#: metrics for the seasonal naive baseline; the ``sum_*`` columns let
#: :func:`overall_accuracy` (and the Spark job, with built-ins) aggregate across SKUs exactly.
ACCURACY_SCHEMA = (
    "sku string, model string, model_family string, pattern string, n_windows int, "
    "n_fallback_windows int, n_points bigint, sum_actual double, sum_abs_actual double, "
    "mase_scale double, "
    + ", ".join(f"{c} double" for c in _METRIC_COLUMNS) + ", "
    + "baseline_model string, "
    + ", ".join(f"baseline_{c} double" for c in _METRIC_COLUMNS) + ", "
    + "beats_baseline boolean, status string, reason string"
)

PATTERNS = ("smooth", "erratic", "intermittent", "lumpy", "no_demand")

#: Output of :func:`forecast_and_backtest_one_sku`: the forecast rows (``kind = "forecast"``)
#: and the backtest row (``kind = "accuracy"``) of one SKU in one frame, so that the Spark job
#: fits every SKU in a single ``applyInPandas`` pass. Columns of the other kind are null.
KIND = "kind"
_FORECAST_FIELDS = [part.strip() for part in FORECAST_SCHEMA.split(",")]
COMBINED_SCHEMA = ", ".join(
    [f"{KIND} string", *_FORECAST_FIELDS]
    + [part.strip() for part in ACCURACY_SCHEMA.split(",")
       if part.split()[0] not in {f.split()[0] for f in _FORECAST_FIELDS}])

_Z80 = 1.2815515655446004   # standard normal quantile 0.90
_Z95 = 1.959963984540054    # standard normal quantile 0.975


@dataclass(frozen=True)
class ForecastParams:
    """Parameters of the per-SKU forecast; bind with ``functools.partial(fn, params=...)``.

    Raises ``ValueError`` naming the offending field when a value is out of range.
    """

    horizon: int = 28
    season_length: int = 7
    max_p: int = 2
    max_q: int = 2
    max_d: int = 1
    information_criterion: str = "aic"      # "aic" | "bic"
    time_budget_seconds: float = 10.0       # per SKU and per backtest window
    min_history_for_arima: int = 56         # days; 8 weeks, enough for seasonal differencing
    adi_threshold: float = 1.32             # Syntetos-Boylan
    cv2_threshold: float = 0.49             # Syntetos-Boylan
    backtest_windows: int = 3
    backtest_step: int | None = None        # None -> horizon
    intermittent_method: str = "tsb"        # "tsb" | "croston"
    max_history_days: int = 730
    seasonal_test_alpha: float = 0.05       # day-of-week F-test level for the weekly profile
    kpss_alpha: float = 0.05                # KPSS level-stationarity test level for choosing d
    arima_maxiter: int = 50                 # optimizer iterations per candidate
    arima_max_models: int = 6               # candidate fits per search (4 fixed + stepwise)
    arima_fit_days: int = 364               # ARIMA is fitted on the last 52 weeks only
    backtest_reuse_order: bool = True       # later backtest windows refit the first one's order

    def __post_init__(self) -> None:
        positive = ("horizon", "season_length", "min_history_for_arima", "max_history_days",
                    "arima_maxiter", "arima_max_models", "arima_fit_days")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ForecastParams.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("max_p", "max_q", "backtest_windows"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"ForecastParams.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.max_d not in (0, 1):
            raise ValueError(f"ForecastParams.max_d must be 0 or 1, got {self.max_d!r}")
        if not 0.0 <= self.seasonal_test_alpha <= 1.0:
            raise ValueError("ForecastParams.seasonal_test_alpha must be in [0, 1], "
                             f"got {self.seasonal_test_alpha!r}")
        if self.information_criterion not in ("aic", "bic"):
            raise ValueError("ForecastParams.information_criterion must be 'aic' or 'bic', "
                             f"got {self.information_criterion!r}")
        if self.intermittent_method not in ("tsb", "croston"):
            raise ValueError("ForecastParams.intermittent_method must be 'tsb' or 'croston', "
                             f"got {self.intermittent_method!r}")
        if self.time_budget_seconds < 0:
            raise ValueError("ForecastParams.time_budget_seconds must be >= 0, "
                             f"got {self.time_budget_seconds!r}")
        if self.backtest_step is not None and self.backtest_step < 1:
            raise ValueError(f"ForecastParams.backtest_step must be >= 1 or None, got {self.backtest_step!r}")

    @property
    def step(self) -> int:
        """Distance between backtest origins (``backtest_step``, defaulting to ``horizon``)."""
        return int(self.backtest_step or self.horizon)


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
# Demand classification
# --------------------------------------------------------------------------------------------

def classify_demand(units: np.ndarray, adi_threshold: float = 1.32,
                    cv2_threshold: float = 0.49) -> tuple[str, float, float]:
    """Classify a daily demand series by Syntetos-Boylan.

    ADI = number of days / number of days with positive demand (the average inter-demand
    interval, counting the first interval from the series start). CV² = (std/mean)² of the
    positive demand sizes (population std; 0 when there is a single demand). NaN counts as no
    demand. Returns ``(pattern, adi, cv2)`` where pattern is

    * ``no_demand`` (ADI and CV² NaN) when no day has positive demand,
    * ``smooth`` (ADI < threshold, CV² < threshold), ``erratic`` (ADI <, CV² >=),
      ``intermittent`` (ADI >=, CV² <), ``lumpy`` (ADI >=, CV² >=).
    """
    x = np.nan_to_num(np.asarray(units, dtype=float).ravel(), nan=0.0)
    sizes = x[x > 0]
    if sizes.size == 0:
        return "no_demand", math.nan, math.nan
    adi = x.size / sizes.size
    cv2 = float((sizes.std() / sizes.mean()) ** 2)
    intermittent = adi >= adi_threshold
    variable = cv2 >= cv2_threshold
    if intermittent:
        pattern = "lumpy" if variable else "intermittent"
    else:
        pattern = "erratic" if variable else "smooth"
    return pattern, float(adi), cv2


# --------------------------------------------------------------------------------------------
# Models. Each returns a _Fc of arrays of length h, not yet clipped; _finish clips at 0.
# --------------------------------------------------------------------------------------------

class _CannotFit(Exception):
    """A model cannot be fitted to this series; the message is the reason code."""


@dataclass
class _Fc:
    mean: np.ndarray
    lo80: np.ndarray
    hi80: np.ndarray
    lo95: np.ndarray
    hi95: np.ndarray
    model: str


def _normal_fc(mean: np.ndarray, sd: np.ndarray, model: str) -> _Fc:
    return _Fc(mean, mean - _Z80 * sd, mean + _Z80 * sd, mean - _Z95 * sd, mean + _Z95 * sd, model)


def seasonal_naive_forecast(y: np.ndarray, h: int, m: int = 7) -> _Fc:
    """Seasonal naive: yhat_{T+k} = y_{T+k-m*ceil(k/m)}.

    Intervals are normal, yhat ± z * sigma * sqrt(ceil(k/m)), with sigma the root mean square of
    the in-sample seasonal differences y_t - y_{t-m}. Needs at least m + 1 observations."""
    y = np.asarray(y, dtype=float)
    if y.size <= m:
        raise _CannotFit("too_short")
    k = np.arange(1, h + 1)
    seasons_ahead = np.ceil(k / m).astype(int)
    last_season = y[-m:]
    mean = last_season[(k - 1) % m]
    resid = y[m:] - y[:-m]
    sigma = float(np.sqrt(np.mean(resid ** 2)))
    return _normal_fc(mean, sigma * np.sqrt(seasons_ahead), "seasonal_naive")


def mean_forecast(y: np.ndarray, h: int) -> _Fc:
    """Mean of the history, flat. Intervals are normal with sd = sqrt(max(sample variance, mean)),
    i.e. at least Poisson dispersion, so a one-day history still gets a non-degenerate band."""
    y = np.asarray(y, dtype=float)
    if y.size == 0:
        raise _CannotFit("empty")
    mu = float(np.mean(y))
    var = float(np.var(y, ddof=1)) if y.size > 1 else 0.0
    sd = math.sqrt(max(var, mu, 0.0))
    return _normal_fc(np.full(h, mu), np.full(h, sd), "mean")


def _empirical_fc(level: float, errors: np.ndarray, h: int, model: str) -> _Fc:
    """Flat forecast with per-day bands from empirical quantiles of in-sample one-step errors."""
    if errors.size == 0:
        errors = np.zeros(1)
    q = np.quantile(errors, [0.025, 0.10, 0.90, 0.975])
    mean = np.full(h, level)
    return _Fc(mean, mean + q[1], mean + q[2], mean + q[0], mean + q[3], model)


_SMOOTHING_GRID = (0.05, 0.1, 0.2, 0.3)


def _tsb_path(y: np.ndarray, alpha: float, beta: float) -> tuple[np.ndarray, float]:
    """One-step-ahead TSB forecasts f[t] (made before seeing y[t]) and the final forecast."""
    nz = np.flatnonzero(y > 0)
    prob = nz.size / y.size
    size = float(y[nz[0]])
    f = np.empty(y.size)
    for t, v in enumerate(y):
        f[t] = prob * size
        if v > 0:
            prob += beta * (1.0 - prob)
            size += alpha * (v - size)
        else:
            prob += beta * (0.0 - prob)
    return f, prob * size


def _croston_path(y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """One-step-ahead Croston forecasts with the Syntetos-Boylan (SBA) bias correction."""
    nz = np.flatnonzero(y > 0)
    size = float(y[nz[0]])
    interval = float(nz[0] + 1) if nz.size == 1 else float(np.mean(np.diff(np.r_[-1, nz])))
    correction = 1.0 - alpha / 2.0
    f = np.empty(y.size)
    since = 0
    for t, v in enumerate(y):
        f[t] = correction * size / interval
        since += 1
        if v > 0:
            size += alpha * (v - size)
            interval += alpha * (since - interval)
            since = 0
    return f, correction * size / interval


def intermittent_forecast(y: np.ndarray, h: int, method: str = "tsb") -> _Fc:
    """TSB (Teunter-Syntetos-Babai) or Croston-SBA for intermittent / lumpy demand.

    Smoothing constants are chosen from a small grid (0.05, 0.1, 0.2, 0.3) by in-sample one-step
    MSE, scored after the first demand. The forecast is a flat daily rate. Intervals are
    per-day: the point forecast plus empirical 2.5/10/90/97.5 % quantiles of the in-sample
    one-step errors (clipped at 0 later). They do not widen with the horizon, so they describe
    day-to-day spread rather than uncertainty in the rate itself.
    """
    y = np.asarray(y, dtype=float)
    nz = np.flatnonzero(y > 0)
    if nz.size == 0:
        raise _CannotFit("all_zero")
    start = int(nz[0]) + 1
    best = None
    if method == "tsb":
        grid = [(a, b) for a in _SMOOTHING_GRID for b in _SMOOTHING_GRID]
    else:
        grid = [(a, None) for a in _SMOOTHING_GRID]
    for a, b in grid:
        path, final = _tsb_path(y, a, b) if method == "tsb" else _croston_path(y, a)
        err = y[start:] - path[start:]
        score = float(np.mean(err ** 2)) if err.size else 0.0
        if best is None or score < best[0]:
            best = (score, path, final)
    _, path, final = best
    return _empirical_fc(final, y[start:] - path[start:], h, method)


def constant_forecast(value: float, h: int) -> _Fc:
    """A series that never changed: forecast the value with zero-width intervals."""
    mean = np.full(h, float(value))
    return _Fc(mean, mean.copy(), mean.copy(), mean.copy(), mean.copy(), "constant")


# --------------------------------------------------------------------------------------------
# Automatic ARIMA on the weekly-adjusted series
# --------------------------------------------------------------------------------------------

_MIN_MULTIPLICATIVE_INDEX = 0.1   # below this a weekday's index is treated additively


@dataclass(frozen=True)
class SeasonalIndex:
    """A weekly (``m``-day) profile from a classical decomposition.

    ``kind`` is ``"mul"`` (y = z * index[phase]), ``"add"`` (y = z + index[phase]) or
    ``"none"``; ``index[k]`` applies to the positions t of the fitted array with t % m == k."""

    kind: str
    index: tuple[float, ...]
    pvalue: float

    def phases(self, start: int, n: int, m: int) -> np.ndarray:
        """The index values of positions start .. start + n - 1."""
        return np.asarray(self.index)[(np.arange(start, start + n)) % m]


def _moving_average(y: np.ndarray, m: int) -> np.ndarray:
    """Centred moving average of one season (2 x m for an even m); NaN at the ends."""
    w = np.ones(m) / m if m % 2 else np.r_[0.5, np.ones(m - 1), 0.5] / m
    half = w.size // 2
    out = np.full(y.size, np.nan)
    if y.size >= w.size:
        out[half:y.size - half] = np.convolve(y, w, mode="valid")
    return out


def seasonal_index(y: np.ndarray, m: int, alpha: float = 0.05) -> SeasonalIndex:
    """Weekly profile of ``y`` by classical decomposition, used only if it is significant.

    The trend is the centred ``m``-day moving average; the detrended values y - trend are
    tested for a day-of-week effect with a one-way ANOVA (F-test) across the ``m`` phases. When
    the p-value is below ``alpha`` the profile is multiplicative, index[k] = Σ y / Σ trend over
    phase k (normalised to mean 1), unless some weekday's index is below 0.1 (a weekday with
    almost no sales, e.g. a shop closed on Saturdays), where it is additive: the mean detrended
    value per phase (normalised to mean 0). Otherwise ``kind`` is "none"."""
    none = SeasonalIndex("none", tuple([1.0] * max(m, 1)), math.nan)
    if m < 2 or y.size < 3 * m:
        return none
    trend = _moving_average(y, m)
    ok = np.isfinite(trend)
    phase = np.arange(y.size) % m
    detrended = (y - trend)[ok]
    groups = [detrended[phase[ok] == k] for k in range(m)]
    if min(g.size for g in groups) < 2 or np.ptp(detrended) == 0:
        return none
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pvalue = float(f_oneway(*groups).pvalue)
    if not (np.isfinite(pvalue) and pvalue < alpha):
        return SeasonalIndex("none", none.index, pvalue)
    num = np.array([y[ok & (phase == k)].sum() for k in range(m)])
    den = np.array([trend[ok & (phase == k)].sum() for k in range(m)])
    if (den > 0).all() and num.sum() > 0:
        mul = num / den
        mul = mul / mul.mean()
        if mul.min() >= _MIN_MULTIPLICATIVE_INDEX:
            return SeasonalIndex("mul", tuple(float(v) for v in mul), pvalue)
    add = np.array([g.mean() for g in groups])
    return SeasonalIndex("add", tuple(float(v) for v in add - add.mean()), pvalue)


def _adjust(y: np.ndarray, season: SeasonalIndex, m: int) -> np.ndarray:
    """The seasonally adjusted series z."""
    if season.kind == "mul":
        return y / season.phases(0, y.size, m)
    if season.kind == "add":
        return y - season.phases(0, y.size, m)
    return y


def _reseasonalise(values: np.ndarray, season: SeasonalIndex, start: int, m: int) -> np.ndarray:
    """Put the weekly profile back on adjusted forecasts of positions start, start + 1, ..."""
    if season.kind == "mul":
        return values * season.phases(start, values.size, m)
    if season.kind == "add":
        return values + season.phases(start, values.size, m)
    return values


def _needs_difference(y: np.ndarray, alpha: float) -> bool:
    """KPSS level-stationarity test: True if stationarity is rejected at ``alpha``."""
    if y.size < 10 or np.ptp(y) == 0:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # InterpolationWarning: p-value outside the table
        _, pvalue, _, _ = kpss(y, regression="c", nlags="auto")
    return pvalue < alpha


_INITIAL_ORDERS = ((0, 0), (1, 0), (0, 1), (1, 1))


def _within(c: tuple[int, int], params: ForecastParams) -> bool:
    return c[0] <= params.max_p and c[1] <= params.max_q


def _neighbours(c: tuple[int, int], params: ForecastParams) -> list[tuple[int, int]]:
    """One-step-larger orders of ``c`` within bounds (the stepwise part of the search)."""
    p, q = c
    return [s for s in ((p + 1, q), (p, q + 1), (p + 1, q + 1)) if _within(s, params)]


def _arima_name(order, trend: str, season: SeasonalIndex, m: int) -> str:
    p, d, q = order
    suffix = {"mul": f"*s{m}", "add": f"+s{m}"}.get(season.kind, "")
    return f"arima({p},{d},{q})" + ("+c" if trend == "c" else "") + suffix


@dataclass(frozen=True)
class ArimaSpec:
    """A selected model: ARIMA order, trend, fitted parameters (start values for a refit) and
    the weekly profile it was fitted with."""

    order: tuple[int, int, int]
    trend: str
    params: tuple[float, ...]
    season: SeasonalIndex


def _fit_candidate(z: np.ndarray, order, trend: str, params: ForecastParams, start_params=None):
    """Fit one non-seasonal ARIMA candidate by maximum likelihood; returns (criterion, params).

    Cheap on purpose: the weekly pattern is already divided out, so the state vector has at
    most max(p, q + 1) elements (a seasonal AR/MA at lag 7 needs 8 or more, and every
    likelihood evaluation costs in proportion); ``simple_differencing=True`` drops the d
    differencing states (same parameters, same likelihood up to the first d points for every
    candidate, so criteria compare); ``concentrate_scale=True`` takes sigma² out of the
    optimiser; ``low_memory=True`` and ``cov_type="none"`` skip the smoother and the numerical
    Hessian, which selection does not need. Raises ``_CannotFit`` when the fit warns
    ``ConvergenceWarning``, reports no convergence or has a non-finite criterion.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = SARIMAX(z, order=order, trend=trend, concentrate_scale=True,
                      simple_differencing=True).fit(
            start_params=start_params, disp=False, maxiter=params.arima_maxiter,
            low_memory=True, cov_type="none")
    if any(issubclass(w.category, ConvergenceWarning) for w in caught) or \
            not res.mle_retvals.get("converged", True):
        raise _CannotFit("not_converged")
    ic = float(getattr(res, params.information_criterion))
    if not np.isfinite(ic):
        raise _CannotFit("non_finite_ic")
    return ic, np.asarray(res.params, dtype=float)


def _arima_fc(y: np.ndarray, spec: ArimaSpec, h: int, m: int) -> _Fc:
    """Forecast with a fitted spec: one Kalman filter pass over the undifferenced adjusted
    series (no re-optimisation), then the weekly profile put back on the forecast and its
    intervals (scaled by the index when multiplicative, shifted when additive)."""
    z = _adjust(y, spec.season, m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = SARIMAX(z, order=spec.order, trend=spec.trend, concentrate_scale=True).filter(
            np.asarray(spec.params), cov_type="none")
        fc = res.get_forecast(h)
        mean = np.asarray(fc.predicted_mean, dtype=float)
        ci80 = np.asarray(fc.conf_int(alpha=0.20), dtype=float)
        ci95 = np.asarray(fc.conf_int(alpha=0.05), dtype=float)
    def back(values: np.ndarray) -> np.ndarray:
        return _reseasonalise(values, spec.season, y.size, m)

    return _Fc(back(mean), back(ci80[:, 0]), back(ci80[:, 1]), back(ci95[:, 0]), back(ci95[:, 1]),
               _arima_name(spec.order, spec.trend, spec.season, m))


def refit_arima_forecast(y: np.ndarray, h: int, params: ForecastParams, spec: ArimaSpec,
                         deadline: float) -> tuple[_Fc, list[str], ArimaSpec]:
    """Re-estimate an already selected model on new data (no order search): the weekly profile
    is re-estimated with the same kind (multiplicative, additive or none) and the ARIMA
    parameters are re-optimised from ``spec.params``; used by the backtest's later windows.
    Raises ``_CannotFit`` like :func:`auto_arima_forecast`."""
    y = y[-params.arima_fit_days:]
    m = params.season_length
    if time.perf_counter() > deadline:
        raise _CannotFit("time_budget")
    season = spec.season
    if season.kind != "none":
        season = seasonal_index(y, m, alpha=1.0)
        if season.kind != spec.season.kind:
            raise _CannotFit("season_changed")
    try:
        _, fitted = _fit_candidate(_adjust(y, season, m), spec.order, spec.trend, params,
                                   start_params=np.asarray(spec.params))
    except _CannotFit:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _CannotFit(f"fit_failed: {type(exc).__name__}") from None
    new = ArimaSpec(spec.order, spec.trend, tuple(float(v) for v in fitted), season)
    return _arima_fc(y, new, h, m), [], new


def auto_arima_forecast(y: np.ndarray, h: int, params: ForecastParams,
                        deadline: float) -> tuple[_Fc, list[str], ArimaSpec]:
    """ARIMA with weekly seasonality: a weekly profile divided out, then ARIMA(p, d, q) with
    orders chosen by AIC/BIC over a bounded stepwise search, then the profile put back.

    Only the last ``arima_fit_days`` days are used. The weekly profile is
    :func:`seasonal_index` (classical decomposition, kept when a day-of-week F-test is
    significant at ``seasonal_test_alpha``). On the adjusted series z, d = 1 when a KPSS test
    rejects level stationarity at ``kpss_alpha``; a constant is included (a mean when d = 0, a
    drift when d = 1). Search: (0,0), (1,0), (0,1), (1,1), then, stepwise, the larger
    neighbours (p+1, q+1, both, within max_p / max_q) of the best model so far, while one
    improves, at most ``arima_max_models`` fits in all. A candidate that raises, warns
    ``ConvergenceWarning`` or has a non-finite criterion is skipped. Before each fit the
    elapsed time is compared with ``deadline`` (a ``time.perf_counter()`` value) and the
    search stops if the next fit would likely overrun.

    Why not a seasonal ARIMA (P, D, Q at lag 7): its state vector has 8+ elements and 2-3 more
    parameters, which made every candidate 3-5x dearer, and on weekly-patterned daily retail
    demand it was no more accurate (see docs/forecast.md).

    Returns the forecast, notes (e.g. ``time_budget`` when the search was cut short) and the
    selected :class:`ArimaSpec`. Raises ``_CannotFit`` with the reason when no candidate could
    be used.
    """
    y = y[-params.arima_fit_days:]
    m = params.season_length
    season = seasonal_index(y, m, params.seasonal_test_alpha)
    z = _adjust(y, season, m)
    d = int(params.max_d >= 1 and _needs_difference(z, params.kpss_alpha))
    trend = "c"
    queue = [c for c in _INITIAL_ORDERS if _within(c, params)]
    tried: list[tuple[int, int]] = []

    best = None
    failures: list[str] = []
    notes: list[str] = []
    last_fit = 0.0
    expanded: set[tuple[int, int]] = set()
    while len(tried) < params.arima_max_models:
        if not queue:
            # Stepwise: expand the best model so far once; stop when its neighbours don't improve.
            if best is None or best[3] in expanded:
                break
            expanded.add(best[3])
            queue = [c for c in _neighbours(best[3], params) if c not in tried]
            if not queue:
                break
        cand = queue.pop(0)
        now = time.perf_counter()
        if now + last_fit > deadline:
            notes.append(f"time_budget: search stopped after {len(tried)} candidates")
            break
        tried.append(cand)
        order = (cand[0], d, cand[1])
        try:
            ic, fitted = _fit_candidate(z, order, trend, params)
            if best is None or ic < best[0]:
                best = (ic, fitted, order, cand)
        except _CannotFit as exc:
            failures.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - any fit failure skips the candidate
            failures.append(f"fit_failed: {type(exc).__name__}")
        finally:
            last_fit = time.perf_counter() - now
    if best is None:
        reasons = (["time_budget"] if notes else []) + list(dict.fromkeys(failures))
        reasons = reasons or ["no_candidates"]
        raise _CannotFit("; ".join(reasons))
    _, fitted, order, _ = best
    spec = ArimaSpec(order, trend, tuple(float(v) for v in fitted), season)
    return _arima_fc(y, spec, h, m), notes, spec


# --------------------------------------------------------------------------------------------
# Schema helpers
# --------------------------------------------------------------------------------------------

_DDL_DTYPES = {"string": object, "date": object, "double": "float64", "int": "int32",
               "bigint": "int64", "boolean": "bool"}


def schema_fields(ddl: str) -> list[tuple[str, str]]:
    """Parse a flat Spark DDL string ("name type, ...") into [(name, type), ...]."""
    fields = []
    for part in ddl.split(","):
        name, typ = part.split()
        fields.append((name, typ.lower()))
    return fields


_NULLABLE_DTYPES = {"int": "Int32", "bigint": "Int64", "boolean": "boolean"}


def _conform(df: pd.DataFrame, ddl: str, nullable: bool = False) -> pd.DataFrame:
    """Select the schema's columns in order with the pandas dtypes Arrow maps to the DDL types.

    Dates are ``datetime.date`` objects (what Spark itself hands to pandas for a date column).
    With ``nullable``, missing values are allowed everywhere (int and boolean columns get
    pandas' nullable dtypes, dates None)."""
    out = {}
    for name, typ in schema_fields(ddl):
        col = df[name] if name in df.columns else pd.Series([None] * len(df), index=df.index)
        if typ == "date":
            missing = col.isna()
            col = pd.to_datetime(col).dt.date.astype(object)
            if nullable:
                col = col.where(~missing, None)
        elif typ == "string":
            col = col.astype(object).where(col.notna(), None)
        elif nullable and typ in _NULLABLE_DTYPES:
            col = col.astype(_NULLABLE_DTYPES[typ])
        else:
            col = col.astype(_DDL_DTYPES[typ])
        out[name] = col.reset_index(drop=True) if nullable else col.to_numpy()
    return pd.DataFrame(out, columns=[n for n, _ in schema_fields(ddl)])


def empty_frame(ddl: str) -> pd.DataFrame:
    """An empty frame with the schema's columns and dtypes."""
    return pd.DataFrame({n: pd.Series([], dtype=_DDL_DTYPES[t]) for n, t in schema_fields(ddl)})


# --------------------------------------------------------------------------------------------
# History preparation and model selection
# --------------------------------------------------------------------------------------------

@dataclass
class _Series:
    sku: str | None
    dates: pd.DatetimeIndex      # complete daily calendar, full length
    y: np.ndarray                # cleaned units, full length
    notes: list[str]


def _prepare(history: pd.DataFrame, sku_col: str = SKU, date_col: str = DATE,
             units_col: str = UNITS) -> _Series:
    """Sum per date, reindex to a daily calendar, fill NaN/missing with 0 and clip negatives."""
    missing = [c for c in (date_col, units_col) if c not in history.columns]
    if missing:
        raise KeyError(f"history lacks column(s) {missing}; present: {list(history.columns)}")
    notes: list[str] = []
    sku = None
    if sku_col in history.columns:
        skus = history[sku_col].dropna()
        sku = str(skus.iloc[0]) if len(skus) else None
    frame = pd.DataFrame({
        "date": pd.to_datetime(history[date_col], errors="coerce").dt.normalize(),
        "units": pd.to_numeric(history[units_col], errors="coerce").astype(float),
    })
    if frame["date"].isna().any():
        notes.append("null_dates_dropped")
        frame = frame[frame["date"].notna()]
    if frame.empty:
        return _Series(sku, pd.DatetimeIndex([]), np.array([], dtype=float), notes)
    if frame["units"].isna().any():
        notes.append("nan_values_filled")
    daily = frame.groupby("date")["units"].sum(min_count=1)
    calendar = pd.date_range(daily.index.min(), daily.index.max(), freq="D")
    if len(calendar) != len(daily):
        notes.append("missing_dates_filled")
    y = daily.reindex(calendar).fillna(0.0).to_numpy(dtype=float)
    if not np.isfinite(y).all():
        notes.append("non_finite_values_filled")
        y = np.where(np.isfinite(y), y, 0.0)
    if (y < 0).any():
        notes.append("negative_values_clipped")
        y = np.clip(y, 0.0, None)
    return _Series(sku, calendar, y, notes)


@dataclass
class _Result:
    fc: _Fc
    status: str
    reasons: list[str]
    pattern: str
    spec: "ArimaSpec | None" = None


def _fallback(y: np.ndarray, h: int, m: int) -> _Fc:
    try:
        return seasonal_naive_forecast(y, h, m)
    except _CannotFit:
        return mean_forecast(y, h)


def _select_and_fit(y: np.ndarray, params: ForecastParams, started: float,
                    spec: "ArimaSpec | None" = None) -> _Result:
    """The selection rules of :func:`forecast_one_sku` on a cleaned, tail-truncated array.

    With ``spec`` (a backtest window after the first), an ARIMA-bound series refits that
    spec's order instead of searching again."""
    h, m = params.horizon, params.season_length
    pattern, _, _ = classify_demand(y, params.adi_threshold, params.cv2_threshold)
    if pattern == "no_demand":
        zeros = np.zeros(h)
        return _Result(_Fc(zeros, zeros, zeros, zeros, zeros, "zero"), "ok", ["all_zero"], pattern)
    if y.size < m:
        return _Result(mean_forecast(y, h), "fallback", ["too_short"], pattern)
    if np.ptp(y) == 0:
        return _Result(constant_forecast(y[0], h), "ok", ["constant_series"], pattern)

    deadline = started + params.time_budget_seconds
    notes: list[str] = []
    chosen = None
    try:
        if time.perf_counter() > deadline:
            raise _CannotFit("time_budget")
        if pattern in ("intermittent", "lumpy"):
            fc = intermittent_forecast(y, h, params.intermittent_method)
        elif y.size < params.min_history_for_arima:
            raise _CannotFit("too_short")
        else:
            try:
                if spec is None:
                    raise _CannotFit("search")
                fc, notes, chosen = refit_arima_forecast(y, h, params, spec, deadline)
            except _CannotFit:
                fc, notes, chosen = auto_arima_forecast(y, h, params, deadline)
        arrays = (fc.mean, fc.lo80, fc.hi80, fc.lo95, fc.hi95)
        if not all(a.shape == (h,) and np.isfinite(a).all() for a in arrays):
            raise _CannotFit("non_finite_output")
        return _Result(fc, "ok", notes, pattern, chosen)
    except _CannotFit as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - one SKU's failure must not kill the job
        reason = f"fit_failed: {type(exc).__name__}"
    return _Result(_fallback(y, h, m), "fallback", [reason], pattern)


def _finish(fc: _Fc) -> _Fc:
    """Clip at 0 and keep lo95 <= lo80 <= forecast <= hi80 <= hi95."""
    mean = np.clip(fc.mean, 0.0, None)
    lo80 = np.minimum(np.clip(fc.lo80, 0.0, None), mean)
    lo95 = np.minimum(np.clip(fc.lo95, 0.0, None), lo80)
    hi80 = np.maximum(np.clip(fc.hi80, 0.0, None), mean)
    hi95 = np.maximum(np.clip(fc.hi95, 0.0, None), hi80)
    return _Fc(mean, lo80, hi80, lo95, hi95, fc.model)


def _run(series: _Series, end: int, params: ForecastParams, started: float,
         spec: "ArimaSpec | None" = None) -> _Result:
    """Forecast ``params.horizon`` days after position ``end`` (exclusive) of the series."""
    y = series.y[max(0, end - params.max_history_days):end]
    try:
        result = _select_and_fit(y, params, started, spec)
    except Exception as exc:  # noqa: BLE001 - even the fallbacks must not raise
        h = params.horizon
        last = float(y[-1]) if y.size and np.isfinite(y[-1]) else 0.0
        result = _Result(_normal_fc(np.full(h, last), np.zeros(h), "last_value"), "fallback",
                         [f"fit_failed: {type(exc).__name__}"], "unknown")
    result.fc = _finish(result.fc)
    return result


def forecast_one_sku(history: pd.DataFrame, params: ForecastParams | None = None) -> pd.DataFrame:
    """Forecast one SKU's daily units ``params.horizon`` days past its last history date.

    ``history`` has columns ``sku``, ``date`` and ``units`` (one SKU). Returns a frame matching
    :data:`FORECAST_SCHEMA`: one row per future date starting the day after the last date, with
    the point forecast and 80 % / 95 % intervals (all >= 0), the ``model`` actually used, its
    ``status`` ("ok" or "fallback"), a ``reason`` ("; "-joined codes, or null) and the demand
    ``pattern``. Never raises: an empty frame gives an empty result, and a frame it cannot
    read gives an empty result too (there is no date to forecast from).
    """
    started = time.perf_counter()
    params = params or ForecastParams()
    try:
        series = _prepare(history)
    except Exception:  # noqa: BLE001 - unreadable input: nothing to anchor a forecast on
        return empty_frame(FORECAST_SCHEMA)
    if series.y.size == 0:
        return empty_frame(FORECAST_SCHEMA)
    result = _run(series, series.y.size, params, started)
    h = params.horizon
    reasons = result.reasons + series.notes
    fc = result.fc
    out = pd.DataFrame({
        "sku": [series.sku] * h,
        "date": pd.date_range(series.dates[-1] + pd.Timedelta(days=1), periods=h, freq="D"),
        "forecast": fc.mean, "lo80": fc.lo80, "hi80": fc.hi80, "lo95": fc.lo95, "hi95": fc.hi95,
        "model": fc.model, "status": result.status,
        "reason": "; ".join(reasons) if reasons else None,
        "pattern": result.pattern,
    })
    return _conform(out, FORECAST_SCHEMA)


# --------------------------------------------------------------------------------------------
# Backtest
# --------------------------------------------------------------------------------------------

def _family(model: str) -> str:
    return model.split("(")[0]


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


def backtest_one_sku(history: pd.DataFrame, params: ForecastParams | None = None) -> pd.DataFrame:
    """Rolling-origin backtest of :func:`forecast_one_sku` against the seasonal naive baseline.

    Origins are placed ``backtest_step`` days apart so that the last of ``backtest_windows``
    windows of ``horizon`` days ends on the last history date; windows whose origin leaves
    ``season_length`` days or fewer of training data are skipped. In each window the model is
    chosen and fitted on the data before the origin with exactly the selection logic of
    :func:`forecast_one_sku` (own time budget per window), and the baseline is the seasonal
    naive forecast from the same data. Actuals are the cleaned series (NaN -> 0, negatives
    clipped), the same one the models are fitted on.

    MASE divides by one scale per SKU: the in-sample seasonal naive (lag ``season_length``) MAE
    of the training data of the FIRST window, which no window's test days leak into. A zero
    scale (a series repeating exactly every season) gives MASE = NaN.

    Returns one row matching :data:`ACCURACY_SCHEMA` (empty frame for empty history). ``model``
    is the model of the most recent window, ``model_family`` the sorted distinct families over
    the windows (e.g. "arima" or "arima,seasonal_naive"), ``beats_baseline`` compares MASE (MAE
    when MASE is undefined), strictly. Never raises.
    """
    params = params or ForecastParams()
    try:
        series = _prepare(history)
    except Exception:  # noqa: BLE001 - unreadable input: nothing to evaluate
        return empty_frame(ACCURACY_SCHEMA)
    if series.y.size == 0:
        return empty_frame(ACCURACY_SCHEMA)
    h, m, n = params.horizon, params.season_length, series.y.size
    y_all = series.y
    pattern, _, _ = classify_demand(y_all[-params.max_history_days:], params.adi_threshold,
                                    params.cv2_threshold)
    origins = [n - h - k * params.step for k in reversed(range(params.backtest_windows))]
    origins = [o for o in origins if o > m]

    row: dict = {"sku": series.sku, "pattern": pattern, "n_windows": len(origins),
                 "baseline_model": "seasonal_naive"}
    reasons: list[str] = []
    actual, pred, base = [], [], []
    models, n_fallback = [], 0
    spec = None
    for o in origins:
        result = _run(series, o, params, time.perf_counter(), spec)
        if params.backtest_reuse_order and spec is None:
            spec = result.spec
        models.append(result.fc.model)
        n_fallback += result.status != "ok"
        reasons.extend(result.reasons)
        train = y_all[max(0, o - params.max_history_days):o]
        actual.append(y_all[o:o + h])
        pred.append(result.fc.mean)
        base.append(_finish(_fallback(train, h, m)).mean)

    if origins:
        first_train = y_all[max(0, origins[0] - params.max_history_days):origins[0]]
        scale = mase_scale(first_train, m)
        y = np.concatenate(actual)
        row.update(model=models[-1], model_family=",".join(sorted({_family(x) for x in models})),
                   status="ok")
    else:
        scale = math.nan
        y = np.array([], dtype=float)
        pred = base = [np.array([], dtype=float)]
        row.update(model=None, model_family=None, status="skipped")
        reasons.insert(0, "too_short_for_backtest")
    model_metrics = _error_sums(y, np.concatenate(pred), scale)
    base_metrics = _error_sums(y, np.concatenate(base), scale)
    row.update(n_fallback_windows=n_fallback, n_points=int(y.size),
               sum_actual=float(np.sum(y)), sum_abs_actual=float(np.sum(np.abs(y))),
               mase_scale=scale, **model_metrics,
               **{f"baseline_{k}": v for k, v in base_metrics.items()})
    if np.isfinite(model_metrics["mase"]) and np.isfinite(base_metrics["mase"]):
        row["beats_baseline"] = bool(model_metrics["mase"] < base_metrics["mase"])
    else:
        row["beats_baseline"] = bool(y.size and model_metrics["mae"] < base_metrics["mae"])
    reasons = list(dict.fromkeys(reasons + series.notes))
    row["reason"] = "; ".join(reasons) if reasons else None
    return _conform(pd.DataFrame([row]), ACCURACY_SCHEMA)


def forecast_and_backtest_one_sku(history: pd.DataFrame,
                                  params: ForecastParams | None = None) -> pd.DataFrame:
    """:func:`forecast_one_sku` and :func:`backtest_one_sku` of one SKU as one frame matching
    :data:`COMBINED_SCHEMA`: ``horizon`` rows of kind "forecast", then one row of kind
    "accuracy" (none of either for an empty history). Never raises."""
    params = params or ForecastParams()
    parts = [forecast_one_sku(history, params).assign(**{KIND: "forecast"}),
             backtest_one_sku(history, params).assign(**{KIND: "accuracy"})]
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_frame(COMBINED_SCHEMA)
    return _conform(pd.concat(parts, ignore_index=True), COMBINED_SCHEMA, nullable=True)


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
