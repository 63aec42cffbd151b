"""BG/NBD and Gamma-Gamma against the published CDNOW figures (Fader, Hardie and Lee 2005) on
the published calibration summary, and against parameters planted in simulated customers."""

from __future__ import annotations

import numpy as np
import pytest

from shopsense.customers import value_models as M
from tests.helpers import cdnow_summary

PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "v": 15.45}


@pytest.fixture(scope="module")
def summary():
    return cdnow_summary()


def test_bgnbd_fit_on_the_grouped_summary_gives_the_published_parameters(summary):
    groups = summary.groupby(["x", "t_x", "T"]).size().reset_index(name="weight")
    assert len(groups) < len(summary)   # the fit really runs on groups
    fit = M.fit_bgnbd(groups["x"], groups["t_x"], groups["T"], groups["weight"])
    assert fit.converged and fit.penalty == 0.0
    for name, published in PUBLISHED_BGNBD.items():
        assert fit.params[name] == pytest.approx(published, abs=0.005), name
    # the published log-likelihood at the optimum (Fader, Hardie and Lee 2005: -9582.4)
    assert fit.log_likelihood == pytest.approx(-9582.4, abs=0.1)
    # ungrouped, one row per customer: the same optimum
    each = M.fit_bgnbd(summary["x"], summary["t_x"], summary["T"])
    assert each.params == pytest.approx(fit.params, rel=1e-3)


def test_conditional_expectation_is_the_published_one():
    """E[X(39) | x = 2, t_x = 30.43, T = 38.86] = 1.226 at the published parameters."""
    assert float(M.bgnbd_expected(PUBLISHED_BGNBD, 39, 2, 30.43, 38.86)) == pytest.approx(1.226, abs=0.001)


def test_p_alive_and_p_any_against_brute_force_integration():
    """P(alive) and P(a purchase in t) from their closed forms against a Monte-Carlo draw of
    (λ, p) from the prior weighted by each customer's likelihood."""
    rng = np.random.default_rng(3)
    params = PUBLISHED_BGNBD
    n = 400_000
    lam = rng.gamma(params["r"], 1 / params["alpha"], n)
    p = rng.beta(params["a"], params["b"], n)
    for x, t_x, T, t in [(2, 30.43, 38.86, 4.3), (0, 0.0, 38.86, 4.3), (5, 10.0, 38.0, 13.0)]:
        # likelihood of (x, t_x, T) given (λ, p), alive at T and dropped after the last purchase
        alive = (1 - p) ** x * lam ** x * np.exp(-lam * T)
        dropped = (p * (1 - p) ** (x - 1) * lam ** x * np.exp(-lam * t_x)) if x > 0 else 0 * lam
        w_alive, total = alive, alive + dropped
        p_alive = w_alive.sum() / total.sum()
        p_any = (w_alive * (1 - np.exp(-lam * t))).sum() / total.sum()
        assert float(M.bgnbd_p_alive(params, x, t_x, T)) == pytest.approx(p_alive, abs=0.01)
        assert float(M.bgnbd_p_any(params, t, x, t_x, T)) == pytest.approx(p_any, abs=0.01)


def test_gamma_gamma_fit_gives_the_published_parameters(summary):
    buyers = summary[summary["x"] > 0]
    assert len(buyers) == 946
    fit = M.fit_gamma_gamma(buyers["x"], buyers["zbar"])
    assert fit.converged
    for name, published in PUBLISHED_GAMMA_GAMMA.items():
        assert fit.params[name] == pytest.approx(published, abs=0.05), name
    # the posterior mean lies between the population mean and the customer's own
    population = M.population_order_value(fit.params)
    own = buyers["zbar"].to_numpy()
    value = M.gamma_gamma_expected_value(fit.params, buyers["x"], own)
    assert np.all((value - population) * (own - population) >= -1e-9)
    assert np.all(np.abs(value - population) <= np.abs(own - population) + 1e-9)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_planted_parameters_are_recovered_from_simulated_customers(seed):
    """100,000 customers drawn from known parameters, observed 20 to 78 weeks: the fit on their
    grouped summaries (weeks to 2 decimals, as published) recovers each parameter within 10%."""
    rng = np.random.default_rng(seed)
    planted = PUBLISHED_BGNBD
    T = np.round(rng.uniform(20, 78, 100_000), 2)
    x, t_x = M.bgnbd_simulate(planted, T.size, T, rng)
    t_x = np.round(t_x, 2)
    keys, weight = np.unique(np.stack([x, t_x, T]), axis=1, return_counts=True)
    fit = M.fit_bgnbd(keys[0], keys[1], keys[2], weight)
    assert fit.converged
    for name, value in planted.items():
        assert fit.params[name] == pytest.approx(value, rel=0.10), name


def test_no_repeat_purchase_is_not_identified():
    with pytest.raises(M.ModelNotIdentified, match="repeat purchases"):
        M.fit_bgnbd([0, 0, 0], [0, 0, 0], [10, 20, 30])
    with pytest.raises(M.ModelNotIdentified, match="repeat buyers"):
        M.fit_gamma_gamma([1], [10.0])


def test_discounted_value_is_the_monthly_sum():
    """Twelve monthly increments of E[X] times the order value, discounted: at rate 0 the
    12-month expectation times the value."""
    params = PUBLISHED_BGNBD
    undiscounted = M.discounted_value(params, 2, 30.43, 38.86, 20.0, 12, 7.0, 0.0)
    assert float(undiscounted) == pytest.approx(20.0 * float(M.bgnbd_expected(params, 365.25 / 7, 2, 30.43, 38.86)))
    assert float(M.discounted_value(params, 2, 30.43, 38.86, 20.0, 12, 7.0, 0.1)) < float(undiscounted)
