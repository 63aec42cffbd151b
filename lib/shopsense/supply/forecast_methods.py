"""Forecasting methods for one daily demand series, on numpy arrays (no Spark, no pandas).

Demand classification (Syntetos-Boylan, :func:`classify_demand`); the simple forecasters
(seasonal naive, mean, constant) and the intermittent ones (TSB, Croston-SBA); the weekly profile
(:func:`seasonal_index`) and the automatic ARIMA search on the weekly-adjusted series
(:func:`auto_arima_forecast`, :func:`refit_arima_forecast`). Each forecaster returns an ``_Fc``
of arrays of length ``h`` (not yet clipped at 0) or raises ``_CannotFit`` with a reason code.
Which method a SKU gets, the fallbacks and the output frames are in
:mod:`shopsense.supply.forecast_models`.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import f_oneway
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from statsmodels.tsa.statespace.sarimax import SARIMAX
from statsmodels.tsa.stattools import kpss

if TYPE_CHECKING:  # annotations only: forecast_models imports this module
    from shopsense.supply.forecast_models import ForecastParams

_Z80 = 1.2815515655446004   # standard normal quantile 0.90
_Z95 = 1.959963984540054    # standard normal quantile 0.975


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
