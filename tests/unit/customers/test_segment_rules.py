"""Segment naming rules, the adjusted Rand index and parameter checks (no Spark)."""

import pandas as pd
import pytest

from shopsense.customers.segments import (NamingRules, SegmentError, SegmentParams, adjusted_rand_index,
                               adjusted_rand_index_from_table, base_name, name_segments)

RULES = NamingRules(recent_days=90, new_tenure_days=90, champion_factor=3.0, occasional_factor=0.5)


def profiles(rows):
    return pd.DataFrame(rows, columns=["cluster", "median_recency_days", "median_frequency",
                                       "median_monetary", "median_tenure_days"])


def test_planted_like_profiles_get_the_planted_names():
    got = name_segments(profiles([
        (0, 143, 12, 420.0, 324),    # stopped buying months ago, used to buy often
        (1, 5, 39, 3370.0, 329),     # recent, frequent, high spend
        (2, 17, 10, 360.0, 313),     # recent, regular
        (3, 3, 2, 31.0, 7),          # joined last week
    ]), pop_frequency=10, pop_monetary=360.0, rules=RULES)
    assert got == {1: (0, "champions"), 0: (1, "at risk"), 2: (2, "loyal"), 3: (3, "new")}


@pytest.mark.parametrize("medians, name", [
    ((200, 1, 20.0, 300), "hibernating"),   # lapsed one-off buyers
    ((30, 1, 20.0, 300), "promising"),      # recent one-off buyers, not new
    ((200, 40, 5000.0, 400), "can't lose"),  # lapsed big spenders
    ((10, 40, 500.0, 400), "loyal"),        # frequent but not big spenders: not champions
])
def test_base_names(medians, name):
    assert base_name(*medians, pop_frequency=10, pop_monetary=300.0, rules=RULES) == name


def test_duplicate_names_are_told_apart_by_value():
    got = name_segments(profiles([
        (0, 10, 10, 300.0, 300),
        (1, 12, 11, 900.0, 300),
        (2, 300, 1, 10.0, 300),
    ]), pop_frequency=8, pop_monetary=300.0, rules=RULES)
    assert got == {1: (0, "loyal (high value)"), 0: (1, "loyal (low value)"),
                   2: (2, "hibernating")}


def test_adjusted_rand_index_known_values():
    assert adjusted_rand_index([0, 0, 1, 1], ["b", "b", "a", "a"]) == 1.0
    assert adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(8 / 33)
    assert adjusted_rand_index([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(4 / 7)
    assert adjusted_rand_index_from_table([[2, 0], [0, 2]]) == 1.0


def test_adjusted_rand_index_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        adjusted_rand_index([0, 1], [0])


def params(**changes):
    base = dict(features=("recency_days", "frequency"), log_features=("frequency",), k=None,
                k_min=2, k_max=6, selection_sample=0, seed=1, max_iter=20, naming=RULES)
    return SegmentParams(**{**base, **changes})


@pytest.mark.parametrize("changes, message", [
    ({"features": ("recency_days", "shoe_size")}, "unknown .'shoe_size'."),
    ({"log_features": ("monetary",)}, "not in segment.features"),
    ({"k": 1}, "k must be at least 2"),
    ({"k_min": 5, "k_max": 3}, "2 <= k_min <= k_max"),
])
def test_bad_parameters_are_named(changes, message):
    with pytest.raises(SegmentError, match=message):
        params(**changes).validate()


def test_pick_k_best_or_largest_within_tolerance():
    from shopsense.customers.segments import pick_k

    scores = {2: 0.61, 3: 0.58, 4: 0.57, 5: 0.50, 6: float("nan")}
    assert pick_k(scores) == (2, "the highest silhouette")
    k, rule = pick_k(scores, 0.05)
    assert k == 4 and "largest k within segment.silhouette_tolerance 0.05" in rule and "k=2: 0.610" in rule
    assert pick_k(scores, 0.2)[0] == 5                        # k=6 made one cluster: never chosen
    assert pick_k({2: 0.5, 3: 0.5})[0] == 2                   # a tie: the smaller k
    assert pick_k({2: 0.7, 3: 0.5}, 0.05)[1].startswith("the highest silhouette (no larger k")
