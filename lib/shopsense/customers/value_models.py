"""The customer-value models, in numpy and scipy: BG/NBD for the number of repeat purchases and
Gamma-Gamma for their value, fitted by maximum likelihood on grouped summaries.

BG/NBD (Fader, Hardie and Lee 2005, "Counting your customers the easy way", Marketing Science
24(2)): while alive a customer buys at Poisson rate λ ~ Gamma(r, α); after each purchase they
drop out with probability p ~ Beta(a, b). A customer is summarised by ``x`` repeat purchases
(purchase days after the first), ``t_x`` the time of the last one and ``T`` the time since the
first, both from the first purchase, in the model's time unit. Gamma-Gamma (Fader, Hardie and
Lee 2005, "RFM and CLV: using iso-value curves", and Fader and Hardie's 2013 note "The
Gamma-Gamma model of monetary value"): a repeat buyer's transactions have mean value m_x over
``x`` repeat purchases; values are Gamma(p, ν) with ν ~ Gamma(q, γ) across customers (γ is
written ``v`` here).

Every function takes arrays (one element per customer or per group); the fits take a weight
per row, the number of customers with that summary, so that the data a fit holds grows with the
distinct summaries, not with the customers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, special

#: Starting point of the fits (log-parameters 0: every parameter 1).
_START_BGNBD = np.zeros(4)
_START_GAMMA_GAMMA = np.zeros(3)


@dataclass(frozen=True)
class Fit:
    """A fitted model: its parameters by name, the log-likelihood at them (weighted sum), whether
    the optimiser converged, and the penalty used (0.0: plain maximum likelihood)."""

    params: dict[str, float]
    log_likelihood: float
    converged: bool
    penalty: float
    iterations: int
    message: str = ""
    notes: list[str] = field(default_factory=list)


class ModelNotIdentified(ValueError):
    """The data cannot identify the model (too few customers, or no repeat purchase at all)."""


# --- BG/NBD ---------------------------------------------------------------------------------

def bgnbd_log_likelihood(r: float, alpha: float, a: float, b: float,
                         x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Each customer's log-likelihood (Fader, Hardie and Lee 2005, eq. 6)::

        L = B(a, b+x)/B(a, b) · Γ(r+x) α^r / Γ(r) · [(α+T)^-(r+x) + δ(x>0) a/(b+x-1) (α+t_x)^-(r+x)]
    """
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    head = (special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
            + special.betaln(a, b + x) - special.betaln(a, b))
    alive = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        dropped = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-300))
                           - (r + x) * np.log(alpha + t_x), -np.inf)
    return head + np.logaddexp(alive, dropped)


def fit_bgnbd(x, t_x, T, weight=None, penalty: float = 0.0, max_iter: int = 2000) -> Fit:
    """Maximum-likelihood r, α, a, b (on log scale, L-BFGS-B); ``penalty`` adds
    penalty · Σ parameter² to the negative log-likelihood (a small one keeps a flat likelihood
    from running off to infinity). Raises ModelNotIdentified without repeat purchases."""
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    w = np.ones_like(x) if weight is None else np.asarray(weight, dtype=float)
    if w.sum() < 2 or not np.any((x > 0) & (w > 0)):
        raise ModelNotIdentified("BG/NBD needs customers with repeat purchases: "
                                 f"{w.sum():.0f} customers, {w[x > 0].sum():.0f} with a repeat purchase")
    total = w.sum()

    def objective(log_params):
        params = np.exp(log_params)
        ll = bgnbd_log_likelihood(*params, x, t_x, T)
        value = -(w * ll).sum() / total + penalty * (params ** 2).sum()
        return value if np.isfinite(value) else 1e100

    return _fit(objective, _START_BGNBD, ("r", "alpha", "a", "b"), total, penalty, max_iter)


def bgnbd_p_alive(params: dict, x, t_x, T) -> np.ndarray:
    """P(alive at T | x, t_x, T) = 1 / (1 + δ(x>0) a/(b+x-1) ((α+T)/(α+t_x))^(r+x))."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_odds = (np.log(a) - np.log(np.maximum(b + x - 1, 1e-300))
                    + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x)))
    return np.where(x > 0, special.expit(-log_odds), 1.0)


def bgnbd_expected(params: dict, t, x, t_x, T) -> np.ndarray:
    """E[purchases in (T, T+t] | x, t_x, T] (Fader, Hardie and Lee 2005, eq. 10)::

        (a+b+x-1)/(a-1) · [1 - ((α+T)/(α+T+t))^(r+x) · 2F1(r+x, b+x; a+b+x-1; t/(α+T+t))]
        / [1 + δ(x>0) a/(b+x-1) ((α+T)/(α+t_x))^(r+x)]
    """
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    t = np.asarray(t, dtype=float)
    z = t / (alpha + T + t)
    hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
    bracket = 1.0 - np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t))) * hyp
    return (a + b + x - 1) / (a - 1) * bracket * bgnbd_p_alive(params, x, t_x, T)


def bgnbd_p_any(params: dict, t, x, t_x, T) -> np.ndarray:
    """P(at least one purchase in (T, T+t] | x, t_x, T): alive, and not zero Poisson arrivals
    under λ's posterior given alive, Gamma(r+x, α+T)::

        P(alive) · (1 - ((α+T)/(α+T+t))^(r+x))

    (a customer who makes no purchase has no chance to drop out, so the chance of none in t
    while alive is E[exp(-λt)])."""
    r, alpha = params["r"], params["alpha"]
    x, T = np.asarray(x, dtype=float), np.asarray(T, dtype=float)
    none_while_alive = np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + np.asarray(t, float))))
    return bgnbd_p_alive(params, x, t_x, T) * (1.0 - none_while_alive)


def bgnbd_simulate(params: dict, n: int, T, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(x, t_x) of ``n`` customers drawn from the model, each observed for ``T`` time units
    after a first purchase at 0 (the generative story: purchases at rate λ until dropping out
    after a purchase with probability p). For benchmarks and tests."""
    T = np.broadcast_to(np.asarray(T, dtype=float), (n,))
    lam = rng.gamma(params["r"], 1.0 / params["alpha"], n)
    p = rng.beta(params["a"], params["b"], n)
    x = np.zeros(n)
    t_x = np.zeros(n)
    now = np.zeros(n)
    active = np.ones(n, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        now[idx] += rng.exponential(1.0 / lam[idx])
        bought = now[idx] <= T[idx]
        done = idx[~bought]
        active[done] = False
        buyers = idx[bought]
        x[buyers] += 1
        t_x[buyers] = now[buyers]
        active[buyers[rng.random(buyers.size) < p[buyers]]] = False   # dropped out after it
    return x, t_x


# --- Gamma-Gamma ----------------------------------------------------------------------------

def gamma_gamma_log_likelihood(p: float, q: float, v: float, x, m_x) -> np.ndarray:
    """Each repeat buyer's log-likelihood of their mean value m_x over x transactions (Fader and
    Hardie 2013, eq. 4)::

        Γ(px+q) / (Γ(px) Γ(q)) · v^q m_x^(px-1) x^(px) / (v + x m_x)^(px+q)
    """
    x, m_x = np.asarray(x, dtype=float), np.asarray(m_x, dtype=float)
    return (special.gammaln(p * x + q) - special.gammaln(p * x) - special.gammaln(q)
            + q * np.log(v) + (p * x - 1) * np.log(m_x) + p * x * np.log(x)
            - (p * x + q) * np.log(v + x * m_x))


def fit_gamma_gamma(x, m_x, weight=None, penalty: float = 0.0, max_iter: int = 2000) -> Fit:
    """Maximum-likelihood p, q, v on repeat buyers (x ≥ 1, m_x > 0; others are left out by the
    caller). Raises ModelNotIdentified with fewer than 2 repeat buyers."""
    x, m_x = np.asarray(x, dtype=float), np.asarray(m_x, dtype=float)
    w = np.ones_like(x) if weight is None else np.asarray(weight, dtype=float)
    if w.sum() < 2:
        raise ModelNotIdentified(f"Gamma-Gamma needs repeat buyers with a positive order value: "
                                 f"{w.sum():.0f}")
    total = w.sum()

    def objective(log_params):
        params = np.exp(log_params)
        value = -(w * gamma_gamma_log_likelihood(*params, x, m_x)).sum() / total \
            + penalty * (params ** 2).sum()
        return value if np.isfinite(value) else 1e100

    return _fit(objective, _START_GAMMA_GAMMA, ("p", "q", "v"), total, penalty, max_iter)


def gamma_gamma_expected_value(params: dict, x, m_x) -> np.ndarray:
    """E[M | x, m_x] = (q-1)/(px+q-1) · pv/(q-1) + px/(px+q-1) · m_x: between the population
    mean pv/(q-1) and the customer's own mean, weighted by x. With x = 0 it is the population
    mean. Needs q > 1 (else the population mean is infinite)."""
    p, q, v = params["p"], params["q"], params["v"]
    x, m_x = np.asarray(x, dtype=float), np.nan_to_num(np.asarray(m_x, dtype=float))
    return (p * (v + x * m_x)) / (p * x + q - 1)


def population_order_value(params: dict) -> float:
    """The mean transaction value across customers, p v / (q - 1) (infinite when q ≤ 1)."""
    return params["p"] * params["v"] / (params["q"] - 1) if params["q"] > 1 else math.inf


# --- both -----------------------------------------------------------------------------------

def discounted_value(params: dict, x, t_x, T, order_value, months: int, unit_days: float,
                     annual_rate: float) -> np.ndarray:
    """Σ over months i = 1..months of the expected purchases in month i times the expected order
    value, discounted at the monthly rate equivalent to ``annual_rate`` (a month: 365.25/12
    days, in the model's unit of ``unit_days`` days)."""
    month = 365.25 / 12 / unit_days
    monthly = (1.0 + annual_rate) ** (1.0 / 12) - 1.0
    total = np.zeros(np.shape(np.asarray(x, dtype=float)))
    previous = np.zeros_like(total)
    for i in range(1, months + 1):
        cumulative = bgnbd_expected(params, i * month, x, t_x, T)
        total += (cumulative - previous) / (1.0 + monthly) ** i
        previous = cumulative
    return total * np.asarray(order_value, dtype=float)


def _fit(objective, start, names, total, penalty, max_iter) -> Fit:
    result = optimize.minimize(objective, start, method="L-BFGS-B",
                               options={"maxiter": max_iter, "maxfun": 20 * max_iter,
                                        "ftol": 1e-13, "gtol": 1e-9})
    params = np.exp(result.x)
    finite = bool(np.all(np.isfinite(params)) and np.isfinite(result.fun) and result.fun < 1e99)
    # converged: the optimiser says so and no parameter ran off (a flat likelihood direction)
    converged = bool(result.success and finite and np.all(np.abs(result.x) < 15))
    log_likelihood = -(result.fun - penalty * float((params ** 2).sum())) * total
    return Fit(dict(zip(names, map(float, params))), float(log_likelihood), converged, penalty,
               int(result.nit), str(result.message))
