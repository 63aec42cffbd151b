"""Per-SKU demand forecasting models as plain pandas functions (no Spark).

This module holds the per-SKU drivers (:func:`forecast_one_sku`, :func:`backtest_one_sku`,
:func:`forecast_and_backtest_one_sku`), their parameters (:class:`ForecastParams`), the output
schemas and the pandas-frame helpers. The methods they choose between (classification, naive,
mean, TSB / Croston, weekly profile + ARIMA) are in :mod:`shopsense.supply.forecast_methods`;
the accuracy metrics and :func:`~shopsense.supply.forecast_metrics.overall_accuracy` in
:mod:`shopsense.supply.forecast_metrics`.

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
  undifferenced series (see ``forecast_methods._fit_candidate``). Backtest windows after the
  first refit the first window's order, warm-started, instead of searching again
  (``backtest_reuse_order``).

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
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shopsense.core.columns import DATE, SKU
from shopsense.supply.forecast_methods import (
    ArimaSpec,
    _CannotFit,
    _Fc,
    _normal_fc,
    auto_arima_forecast,
    classify_demand,
    constant_forecast,
    intermittent_forecast,
    mean_forecast,
    refit_arima_forecast,
    seasonal_naive_forecast,
)
from shopsense.supply.forecast_metrics import _error_sums, mase_scale

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
#: :func:`~shopsense.supply.forecast_metrics.overall_accuracy` (and the Spark job, with built-ins)
#: aggregate across SKUs exactly.
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
