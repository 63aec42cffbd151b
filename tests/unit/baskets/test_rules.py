"""Support thresholds of the rule mining: the count a fraction means, and back (no Spark)."""

import math

from shopsense.baskets import rules as br


def test_min_count_matches_the_fraction_comparison():
    assert br.min_count(7, 3 / 7) == 3                # 3/7*7 may round above 3
    assert br.min_count(1000, 0.01) == 10
    assert br.min_count(999, 0.01) == 10              # 9.99 -> 10
    assert br.min_count(1000, 0.01, min_support_count=4) == 4
    for n in (1, 7, 13, 100, 541, 18_000):
        for s in (0.001, 0.01, 0.05, 1 / 3, 0.5, 1.0):
            c = br.min_count(n, s)
            assert c / n >= s and (c == 1 or (c - 1) / n < s)
            assert math.ceil((br.mllib_min_support(c, n)) * n) == c
