"""Inventory maths without Spark: hand-computed formula values, the loss function and its
inverse, and the day-by-day simulation of one SKU."""

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from shopsense.supply.replay import (SimParams, draw_lead_times, economic_order_quantity,
                                     inverse_normal_loss, lead_time_demand_std, normal_loss,
                                     round_up_to_pack, safety_factor, simulate_one_sku,
                                     z_for_cycle_service)


def test_eoq_matches_the_published_reference():
    # ordering cost 8, holding cost 0.225 per unit per year, annual demand 1,300
    assert economic_order_quantity(1300, 8, 0.225) == pytest.approx(304.0467800264368, rel=1e-12)


def test_eoq_zero_demand_and_invalid_holding_cost():
    assert economic_order_quantity(0, 8, 0.225) == 0.0
    with pytest.raises(ValueError, match="holding cost must be > 0"):
        economic_order_quantity(1300, 8, 0.0)


def test_lead_time_demand_std_hand_values():
    # sqrt(4 * 3^2 + 10^2 * 1^2) = sqrt(136)
    assert lead_time_demand_std(10, 3, 4, 1) == pytest.approx(math.sqrt(136))
    # zero lead-time variability: sqrt(L) * sigma_d
    assert lead_time_demand_std(10, 3, 4, 0) == pytest.approx(6.0)
    # zero demand: nothing varies
    assert lead_time_demand_std(0, 0, 4, 1) == 0.0


def test_cycle_service_safety_factor_is_the_normal_quantile():
    assert z_for_cycle_service(0.95) == pytest.approx(1.6448536269514722)
    assert safety_factor("cycle", 0.5, 100, 10) == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"must be in \(0, 1\)"):
        z_for_cycle_service(1.0)
    with pytest.raises(ValueError, match="fill_rate or cycle"):
        safety_factor("csl", 0.9, 1, 1)


def test_normal_loss_and_its_inverse():
    # G(0) = phi(0); G(1) = phi(1) - (1 - Phi(1)) = 0.2419707245 - 0.1586552539
    assert normal_loss(0.0) == pytest.approx(0.3989422804014327)
    assert normal_loss(1.0) == pytest.approx(0.0833154706, abs=1e-9)
    assert inverse_normal_loss(0.0833154706) == pytest.approx(1.0, abs=1e-8)
    # fill rate: sigma G(k) = (1 - beta) Q -> Q = 100, sigma = 0.05 * 100 / G(1) gives k = 1
    sigma = 0.05 * 100 / normal_loss(1.0)
    assert safety_factor("fill_rate", 0.95, 100, sigma) == pytest.approx(1.0, abs=1e-8)
    # nothing to protect
    assert safety_factor("fill_rate", 0.95, 100, 0.0) == 0.0
    with pytest.raises(ValueError, match="x > 0"):
        inverse_normal_loss(0.0)


@pytest.mark.parametrize("qty, pack, moq, expected", [
    (304.05, 12, 48, 312.0), (10, 12, 48, 48.0), (0, 12, 48, 0.0), (5, 6, 0, 6.0),
    (1, 6, 10, 12.0), (12, 12, 1, 12.0), (7.2, 0, 0, 8.0)])
def test_round_up_to_pack(qty, pack, moq, expected):
    assert round_up_to_pack(qty, pack, moq) == expected


def days(units, rop, q, lt, lt_std=0.0, sku="S1"):
    n = len(units)
    return pd.DataFrame({"sku": sku, "date": [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(n)],
                         "units": units, "reorder_point": rop, "order_qty": q,
                         "lead_time_days": lt, "lead_time_std_days": lt_std})


def test_simulation_by_hand():
    # reorder point 5, Q 10, lead time 2 (an order placed on day t is usable from day t + 3);
    # start with s + Q = 15 on hand. Per day: demand 4 -> net stock, position, order?
    # d0: 11, 11   d1: 7, 7   d2: 3, 3 <= 5: order (usable d5)
    # d3: 3 served, 1 short -> -1, pos 9   d4: 0 served, 4 short -> -5, pos 5 <= 5: order (usable d7)
    # d5: +10 -> 5, 4 served -> 1   d6: 1 served, 3 short -> -3   d7: +10 -> 7, 4 served -> 3,
    # pos 3: order (beyond the window)
    out = simulate_one_sku(days([4.0] * 8, 5.0, 10.0, 2.0), SimParams(start_cycle_share=1.0)).iloc[0]
    assert out["demand_units"] == 32.0
    assert out["filled_units"] == 4 + 4 + 4 + 3 + 0 + 4 + 1 + 4
    assert out["fill_rate"] == pytest.approx(24 / 32)
    assert out["orders_placed"] == 3 and out["units_ordered"] == 30.0
    # the two orders received in the window both saw a shortage while they were on the way
    assert out["cycles"] == 2 and out["cycles_with_stockout"] == 2
    assert out["cycle_service_level"] == 0.0
    assert out["stockout_days"] == 3          # d3, d4, d6 end with backorders
    assert out["avg_on_hand"] == pytest.approx((11 + 7 + 3 + 0 + 0 + 1 + 0 + 3) / 8)
    assert out["mean_lead_time_drawn"] == 2.0
    assert out["status"] == "ok" and out["days"] == 8


def test_simulation_enough_stock_never_short_and_is_seeded():
    rng = np.random.default_rng(0)
    units = rng.poisson(3.0, 200).astype(float)
    frame = days(units, 60.0, 30.0, 5.0, 2.0)
    a, b = simulate_one_sku(frame, SimParams(seed=7)), simulate_one_sku(frame, SimParams(seed=7))
    pd.testing.assert_frame_equal(a, b)
    assert a.iloc[0]["fill_rate"] == 1.0 and a.iloc[0]["stockout_days"] == 0


def test_simulation_edge_cases_give_status_rows():
    assert simulate_one_sku(days([0.0] * 5, 1.0, 5.0, 2.0)).iloc[0]["status"] == "skipped"
    assert simulate_one_sku(days([1.0] * 5, None, 5.0, 2.0)).iloc[0]["reason"].startswith("no policy")
    assert simulate_one_sku(days([1.0] * 5, 1.0, 0.0, 2.0)).iloc[0]["reason"] == "order quantity is 0"
    bad = days([1.0] * 5, 1.0, 5.0, 2.0).drop(columns=["order_qty"])
    assert simulate_one_sku(bad).iloc[0]["status"] == "failed"
    assert simulate_one_sku(days([], 1.0, 5.0, 2.0)).empty
    # negative and missing units count as 0
    out = simulate_one_sku(days([-3.0, None, 2.0], 0.0, 5.0, 1.0)).iloc[0]
    assert out["demand_units"] == 2.0


def test_lead_time_draws_match_mean_and_spread():
    rng = np.random.default_rng(1)
    draws = draw_lead_times(rng, 10.0, 3.0, 20000)
    assert draws.min() >= 1
    assert draws.mean() == pytest.approx(10.0, abs=0.1)
    assert draws.std() == pytest.approx(3.0, abs=0.15)
    assert set(draw_lead_times(rng, 4.4, 0.0, 3)) == {4}
