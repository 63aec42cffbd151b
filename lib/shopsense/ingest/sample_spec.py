"""What the sample generator makes: :class:`SampleSpec`, the planted parameters, validation.

Plain Python (no Spark): the spec and its checks (``_validate``), the parameters of the planted
structure (customer groups, tastes, pairs, intermittent demand, trend, promotions, calendar),
the SKU layout derived from a spec and the analytic :func:`expected_counts`. The planted
structure itself is described in :mod:`shopsense.ingest.sample`; the rows are drawn in
:mod:`shopsense.ingest.sample_orders`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timezone

import numpy as np


@dataclass(frozen=True)
class SampleSpec:
    """What to generate. The defaults give roughly 200k order lines in a few seconds."""

    n_customers: int = 2000
    n_skus: int = 200
    n_days: int = 730
    start_date: str = "2023-01-01"
    seed: int = 42
    guest_share: float = 0.10      # share of orders without a customer id (guest checkouts)
    return_rate: float = 0.02      # share of sale lines later returned
    n_pairs: int = 10              # planted "bought together" product pairs
    n_tastes: int = 5              # latent taste groups


# --- planted parameters ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Group:
    name: str
    share: float        # share of customers
    rate: float         # orders per active day (champions, loyal, at_risk)
    lines: float        # mean distinct lines per order (before companions)
    qty: float          # mean quantity per line


GROUPS = (
    _Group("champions", 0.12, 1 / 5, 6.0, 5.0),
    _Group("loyal", 0.33, 1 / 25, 2.5, 2.0),
    _Group("at_risk", 0.30, 1 / 12, 2.5, 2.0),
    _Group("new", 0.25, 0.0, 1.5, 1.5),
)
_CHAMPIONS, _LOYAL, _AT_RISK, _NEW = range(4)
_NEW_MAX_ORDERS = 3                 # new customers place 1..3 orders
_START_SPREAD = 0.15                # champions/loyal/at_risk join in the first 15% of the period
_AT_RISK_GAP = (0.25, 0.50)         # at_risk stop 25-50% of the period before the end
_NEW_WINDOW_DAYS = 60               # ... for a 730-day period; scaled with n_days
_RATE_JITTER = 0.25                 # per-customer rate multiplier exp(U(-j, j))

_TASTE_SHARE = 0.95                 # share of lines from the customer's taste block
_ZIPF_TASTE = 1.6                   # within-block skew: j = floor(n * u ** a)
_ZIPF_GLOBAL = 2.0                  # global popularity skew
_INTERMITTENT_SHARE = 0.20          # least popular share of non-companion SKUs
_INTERMITTENT_LINES_PER_DAY = 0.12  # target lines/day of one intermittent SKU
_INTERMITTENT_QTY = 2.5             # intermittent demand is lumpy: bigger quantities
_CONFIDENCE = (0.3, 0.7)            # planted pair confidences drawn from this range

_TREND = 0.30                       # per-SKU quantity trend over the period in [-0.3, 0.3]
_PROMO_SHARE = 0.30                 # share of smooth SKUs that are promo-eligible
_PROMO_DAYS = 14
_PROMO_LIFT = 1.8                   # quantity multiplier inside a promotion
_PROMO_DISCOUNT = 0.20              # price cut inside a promotion

_WEEKDAY_FACTOR = (1.0, 1.0, 1.0, 1.0, 1.0, 0.7, 0.55)  # Monday .. Sunday
_MONTH_FACTOR = {10: 1.2, 11: 1.5, 12: 1.6}             # Q4 peak; other months 1.0
_WEEKDAY_ATTEMPTS = 4               # rejection-sampling tries for an order's weekday

_RETURN_DELAY_DAYS = (1, 10)
_COUNTRIES = (("United Kingdom", 0.60), ("Germany", 0.10), ("France", 0.10),
              ("Netherlands", 0.05), ("Spain", 0.05), ("Ireland", 0.05), ("Sweden", 0.05))
_COLOURS = ("WHITE", "RED", "BLUE", "GREEN", "PINK", "BLACK", "IVORY", "GOLD", "SILVER",
            "VINTAGE", "PAISLEY", "SPOTTY")
# Two nouns per category, in category order.
_CATEGORIES = ("HOME DECOR", "KITCHEN", "STATIONERY", "TOYS", "GARDEN", "LIGHTING", "BAGS",
               "PARTY")
_NOUNS = ("HANGING HEART", "PHOTO FRAME", "TEA CUP", "CAKE STAND", "NOTEBOOK", "GIFT WRAP",
          "SPINNING TOP", "JIGSAW", "PLANT POT", "BIRD FEEDER", "T-LIGHT HOLDER", "LANTERN",
          "LUNCH BAG", "TOTE BAG", "BUNTING", "PAPER CUPS")


# --- validation and derived layout ---------------------------------------------------------------

def _validate(spec: SampleSpec) -> None:
    if not isinstance(spec, SampleSpec):
        raise TypeError(f"spec must be a SampleSpec, got {type(spec).__name__}")
    try:
        date.fromisoformat(spec.start_date)
    except ValueError as exc:
        raise ValueError(f"start_date must be YYYY-MM-DD, got {spec.start_date!r}") from exc
    problems = []
    if spec.n_customers < 1:
        problems.append(f"n_customers={spec.n_customers} (need >= 1)")
    if spec.n_days < 28:
        problems.append(f"n_days={spec.n_days} (need >= 28)")
    if spec.n_tastes < 1:
        problems.append(f"n_tastes={spec.n_tastes} (need >= 1)")
    if spec.n_pairs < 0:
        problems.append(f"n_pairs={spec.n_pairs} (need >= 0)")
    if not 0.0 <= spec.guest_share < 1.0:
        problems.append(f"guest_share={spec.guest_share} (need 0 <= x < 1)")
    if not 0.0 <= spec.return_rate < 1.0:
        problems.append(f"return_rate={spec.return_rate} (need 0 <= x < 1)")
    if not problems:
        n_smooth = _layout(spec)["n_smooth"]
        if n_smooth < max(spec.n_tastes, spec.n_pairs, 1):
            problems.append(
                f"n_skus={spec.n_skus} leaves {n_smooth} regular SKUs after {spec.n_pairs} "
                f"companions and the intermittent slow movers; need at least "
                f"max(n_tastes={spec.n_tastes}, n_pairs={spec.n_pairs})")
    if problems:
        raise ValueError("invalid SampleSpec: " + "; ".join(problems))


def _layout(spec: SampleSpec) -> dict:
    """SKU ranks: [0, n_smooth) regular SKUs by global popularity, then the intermittent slow
    movers, then the companions (rank n_base + i is the companion of pair i)."""
    n_base = spec.n_skus - spec.n_pairs
    n_int = int(round(_INTERMITTENT_SHARE * n_base))
    return {"n_base": n_base, "n_int": n_int, "n_smooth": n_base - n_int}


def _start_epoch(spec: SampleSpec) -> int:
    d = date.fromisoformat(spec.start_date)
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp())


def _new_window(spec: SampleSpec) -> int:
    return max(7, int(round(spec.n_days * _NEW_WINDOW_DAYS / 730)))


def _max_orders(spec: SampleSpec) -> int:
    top = max(g.rate for g in GROUPS) * math.exp(_RATE_JITTER) * spec.n_days
    return max(_NEW_MAX_ORDERS, int(math.ceil(top)) + 1)


def _order_key_stride(spec: SampleSpec) -> int:
    return 10 ** len(str(_max_orders(spec)))


def _pairs(spec: SampleSpec) -> list[tuple[int, int, int, float]]:
    """(pair index, antecedent rank, companion rank, confidence). Antecedents are the most
    popular regular SKUs, so the planted confidences have plenty of support."""
    lay = _layout(spec)
    rng = np.random.default_rng([spec.seed, 20231])
    conf = rng.uniform(*_CONFIDENCE, size=spec.n_pairs)
    return [(i, i, lay["n_base"] + i, round(float(conf[i]), 3)) for i in range(spec.n_pairs)]


def expected_counts(spec: SampleSpec) -> dict:
    """Analytic expectations (orders, lines, lines per day, mean quantity) of the regular lines,
    before companions, guests and returns. Used to size intermittent demand and the truth
    base rates; approximate (ignores duplicate SKUs in a basket and calendar thinning)."""
    n = spec.n_days
    jitter = (math.exp(_RATE_JITTER) - math.exp(-_RATE_JITTER)) / (2 * _RATE_JITTER)
    active = {
        _CHAMPIONS: n * (1 - _START_SPREAD / 2),
        _LOYAL: n * (1 - _START_SPREAD / 2),
        _AT_RISK: n * (1 - sum(_AT_RISK_GAP) / 2 - _START_SPREAD / 2),
    }
    orders = lines = units = 0.0
    for gi, g in enumerate(GROUPS):
        per_customer = (_NEW_MAX_ORDERS + 1) / 2 if gi == _NEW else g.rate * jitter * active[gi]
        o = spec.n_customers * g.share * per_customer
        orders += o
        lines += o * g.lines
        units += o * g.lines * g.qty
    return {"orders": orders, "lines": lines, "lines_per_day": lines / n,
            "orders_per_day": orders / n, "mean_qty": units / lines if lines else 0.0,
            "lines_per_order": lines / orders if orders else 0.0}


def _p_intermittent(spec: SampleSpec) -> float:
    n_int = _layout(spec)["n_int"]
    if n_int == 0:
        return 0.0
    return min(0.05, _INTERMITTENT_LINES_PER_DAY * n_int / expected_counts(spec)["lines_per_day"])
