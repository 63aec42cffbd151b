"""Inventory policy maths without Spark: the normal loss function and its inverse, the policy
formulas as plain Python (the reference the Spark column rules are tested against), and the
per-SKU day-by-day replay of a reorder-point policy, :func:`simulate_one_sku`, that the
inventory job runs with ``groupBy(sku).applyInPandas``.

The policy is a continuous (s, nQ) policy reviewed once a day with backorders:

* every day ``t``: orders due on day ``t`` arrive, then the day's demand is served from stock
  (what cannot be served is backordered and served first when stock arrives), then the
  inventory position (on hand - backorders + on order) is compared with the reorder point ``s``;
  when it is at or below ``s`` the smallest multiple ``n * Q`` that lifts it above ``s`` is
  ordered, and arrives at the end of day ``t + L`` (usable from day ``t + L + 1``), ``L`` drawn
  from the SKU's lead-time distribution (a gamma distribution with the catalogue's mean and
  standard deviation, rounded to whole days, at least 1; seeded per SKU).
* an order therefore has to cover ``L`` days of demand plus the undershoot below ``s`` on the
  day it is placed: the policy protects ``L + R`` days, ``R`` the review period (1 day).

Measured per SKU: the fill rate (units served from stock on the day they were demanded / units
demanded), the cycle service level (share of replenishment cycles - order placed to order
received - without a stock-out), stock-out days, average stock on hand, orders placed.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

_N = NormalDist()

#: Output of :func:`simulate_one_sku`: one row per SKU.
SIMULATION_SCHEMA = (
    "sku string, sim_start date, sim_end date, days int, demand_units double, "
    "filled_units double, fill_rate double, cycles int, cycles_with_stockout int, "
    "cycle_service_level double, stockout_days int, avg_on_hand double, orders_placed int, "
    "units_ordered double, mean_lead_time_drawn double, status string, reason string"
)

#: Columns :func:`simulate_one_sku` needs in its input (one SKU: one row per day, the policy
#: repeated on every row).
SIM_INPUT_COLUMNS = ("sku", "date", "units", "reorder_point", "order_qty", "lead_time_days",
                     "lead_time_std_days")


# --- normal distribution helpers --------------------------------------------------------------

def normal_loss(k: float) -> float:
    """Standard normal loss function G(k) = E[(Z - k)+] = phi(k) - k (1 - Phi(k))."""
    return _N.pdf(k) - k * 0.5 * math.erfc(k / math.sqrt(2.0))


def inverse_normal_loss(x: float, lo: float = -6.0, hi: float = 6.0) -> float:
    """The k with G(k) = x (x > 0), by bisection; clamped to [lo, hi]."""
    if not x > 0:
        raise ValueError(f"inverse_normal_loss needs x > 0, got {x!r}")
    if x >= normal_loss(lo):
        return lo
    if x <= normal_loss(hi):
        return hi
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if normal_loss(mid) > x:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def z_for_cycle_service(level: float) -> float:
    """The safety factor z of a cycle service level (probability of no stock-out per cycle)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"a service level must be in (0, 1), got {level!r}")
    return _N.inv_cdf(level)


# --- the policy formulas (reference implementation) --------------------------------------------

def lead_time_demand_std(daily_demand: float, demand_std: float, lead_time: float,
                         lead_time_std: float) -> float:
    """sigma_L = sqrt(L * sigma_d^2 + d^2 * sigma_LT^2): the deviation of demand over the
    protection period ``lead_time`` (days) when both demand and lead time vary."""
    return math.sqrt(lead_time * demand_std ** 2 + daily_demand ** 2 * lead_time_std ** 2)


def economic_order_quantity(annual_demand: float, ordering_cost: float,
                            holding_cost_per_unit_year: float) -> float:
    """Wilson's EOQ sqrt(2 D S / H)."""
    if holding_cost_per_unit_year <= 0:
        raise ValueError(f"holding cost must be > 0, got {holding_cost_per_unit_year!r}")
    return math.sqrt(2.0 * annual_demand * ordering_cost / holding_cost_per_unit_year)


def round_up_to_pack(qty: float, pack_size: float, min_order_qty: float) -> float:
    """``qty`` rounded up to a whole number of packs, at least the minimum order (itself
    rounded up to packs); 0 stays 0."""
    if qty <= 0:
        return 0.0
    pack = pack_size if pack_size and pack_size > 0 else 1.0
    return max(math.ceil(qty / pack - 1e-9) * pack, math.ceil(min_order_qty / pack - 1e-9) * pack)


def safety_factor(measure: str, target: float, order_qty: float, sigma_lt: float) -> float:
    """k of SS = k * sigma_L: ``cycle`` -> Phi^-1(target); ``fill_rate`` -> the k with
    sigma_L * G(k) = (1 - target) * Q (expected units short per cycle = allowed share of Q)."""
    if measure == "cycle":
        return z_for_cycle_service(target)
    if measure != "fill_rate":
        raise ValueError(f"service measure must be fill_rate or cycle, got {measure!r}")
    if sigma_lt <= 0 or order_qty <= 0:
        return 0.0
    return inverse_normal_loss((1.0 - target) * order_qty / sigma_lt, LOSS_K_MIN, LOSS_K_MAX)


#: Range of the fill-rate safety factor (the Spark lookup table covers the same range).
LOSS_K_MIN = -4.0
LOSS_K_MAX = 5.0   # G(5) = 5.3e-8: beyond, the difference loses precision


# --- simulation ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SimParams:
    """Parameters of :func:`simulate_one_sku`; bind with ``functools.partial``."""

    seed: int = 42
    # Starting stock: on hand = reorder point + start_cycle_share * Q, nothing on order. None
    # draws the share uniformly from (0, 1] (seeded), the long-run distribution of the
    # inventory position of an (s, Q) policy, so short windows do not all start on a full cycle.
    start_cycle_share: float | None = None


def _sku_seed(seed: int, sku: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(str(sku).encode())) % (2 ** 32)


def draw_lead_times(rng: np.random.Generator, mean: float, std: float, n: int) -> np.ndarray:
    """``n`` lead times in whole days >= 1 from a gamma distribution with the given mean and
    standard deviation (the mean itself, rounded, when ``std`` is 0)."""
    if std <= 0 or mean <= 0:
        return np.full(n, max(1, int(round(mean))), dtype=int)
    shape = (mean / std) ** 2
    scale = std ** 2 / mean
    return np.maximum(1, np.rint(rng.gamma(shape, scale, size=n))).astype(int)


def _empty_result(sku, reason: str, status: str = "skipped") -> pd.DataFrame:
    row = {"sku": sku, "sim_start": None, "sim_end": None, "days": 0, "demand_units": 0.0,
           "filled_units": 0.0, "fill_rate": None, "cycles": 0, "cycles_with_stockout": 0,
           "cycle_service_level": None, "stockout_days": 0, "avg_on_hand": None,
           "orders_placed": 0, "units_ordered": 0.0, "mean_lead_time_drawn": None,
           "status": status, "reason": reason}
    return _typed(pd.DataFrame([row]))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    ints = ["days", "cycles", "cycles_with_stockout", "stockout_days", "orders_placed"]
    floats = ["demand_units", "filled_units", "fill_rate", "cycle_service_level", "avg_on_hand",
              "units_ordered", "mean_lead_time_drawn"]
    for c in ints:
        df[c] = df[c].astype("int32")
    for c in floats:
        df[c] = df[c].astype("float64")
    for c in ("sim_start", "sim_end"):
        df[c] = pd.to_datetime(df[c]).dt.date
    return df


def simulate_one_sku(days: pd.DataFrame, params: SimParams = SimParams()) -> pd.DataFrame:
    """Replay one SKU's reorder-point policy over its daily demand (see the module docstring).

    ``days``: one row per day with :data:`SIM_INPUT_COLUMNS` (the policy columns equal on every
    row; negative or null units count as 0). Returns one row following :data:`SIMULATION_SCHEMA`.
    Never raises: bad input yields a row with ``status`` ``skipped`` or ``failed`` and a reason.
    """
    if days.empty:
        return _typed(pd.DataFrame(columns=[c.split()[0] for c in SIMULATION_SCHEMA.split(", ")]))
    sku = days["sku"].iloc[0]
    try:
        missing = [c for c in SIM_INPUT_COLUMNS if c not in days.columns]
        if missing:
            return _empty_result(sku, f"missing input columns {missing}", "failed")
        days = days.sort_values("date")
        first = days.iloc[0]
        rop, q = first["reorder_point"], first["order_qty"]
        lt, lt_std = first["lead_time_days"], first["lead_time_std_days"]
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (rop, q, lt)):
            return _empty_result(sku, "no policy (reorder point, order quantity or lead time)")
        lt_std = 0.0 if lt_std is None or math.isnan(lt_std) else float(lt_std)
        demand = np.clip(np.nan_to_num(days["units"].to_numpy(dtype=float)), 0.0, None)
        n = len(demand)
        if demand.sum() <= 0:
            return _empty_result(sku, "no demand in the simulated window")
        if q <= 0:
            return _empty_result(sku, "order quantity is 0")
        rng = np.random.default_rng(_sku_seed(params.seed, sku))
        share = params.start_cycle_share
        if share is None:
            share = 1.0 - rng.uniform()
        # Enough draws for one order per day, drawn up front so results do not depend on timing.
        lead_times = draw_lead_times(rng, float(lt), lt_std, n + 1)

        on_hand = float(rop) + share * float(q)   # net stock (neg = backorder)
        arrivals = np.zeros(n + int(lead_times.max()) + 2)
        outstanding = 0.0
        filled = np.zeros(n)
        stock_end = np.zeros(n)
        orders: list[tuple[int, int]] = []                  # (placed day, arrival day)
        units_ordered = 0.0
        for t in range(n):
            arriving = arrivals[t]
            if arriving:
                on_hand += arriving
                outstanding -= arriving
            available = max(on_hand, 0.0)
            filled[t] = min(demand[t], available)
            on_hand -= demand[t]
            stock_end[t] = on_hand
            position = on_hand + outstanding
            if position <= rop:
                n_q = math.floor((rop - position) / q) + 1
                qty = n_q * float(q)
                lead = int(lead_times[len(orders)])
                # usable from day t + L + 1: it arrives at the end of day t + L
                arrivals[t + lead + 1] += qty
                outstanding += qty
                units_ordered += qty
                orders.append((t, t + lead))
        short = stock_end < 0
        new_short = (demand > filled)
        cycles = [(p, a) for p, a in orders if a < n]       # cycles that ended in the window
        with_stockout = sum(bool(new_short[p + 1:a + 1].any()) for p, a in cycles)
        total = float(demand.sum())
        row = {
            "sku": sku, "sim_start": days["date"].iloc[0], "sim_end": days["date"].iloc[-1],
            "days": n, "demand_units": total, "filled_units": float(filled.sum()),
            "fill_rate": float(filled.sum()) / total,
            "cycles": len(cycles), "cycles_with_stockout": int(with_stockout),
            "cycle_service_level": (1.0 - with_stockout / len(cycles)) if cycles else None,
            "stockout_days": int(short.sum()),
            "avg_on_hand": float(np.clip(stock_end, 0.0, None).mean()),
            "orders_placed": len(orders), "units_ordered": units_ordered,
            "mean_lead_time_drawn": float(np.mean([a - p for p, a in orders])) if orders else None,
            "status": "ok", "reason": None,
        }
        return _typed(pd.DataFrame([row]))
    except Exception as exc:  # one SKU never kills the job
        return _empty_result(sku, f"{type(exc).__name__}: {exc}"[:500], "failed")
