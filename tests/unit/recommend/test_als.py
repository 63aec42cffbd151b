"""The per-block top-k of ALS scoring, on numpy arrays (no Spark)."""

import numpy as np

from shopsense.recommend import als as R


def test_top_k_rows_is_exact_with_seen_items_masked():
    rng = np.random.default_rng(0)
    for m, ties in ((50, False), (3000, False), (3000, True)):
        scores = rng.standard_normal((200, m)).astype(np.float32)
        if ties:                            # many equal scores: the lower column index first
            scores = np.round(scores).astype(np.float32)
        scores[rng.random(scores.shape) < 0.3] = -np.inf
        scores[0, :] = -np.inf              # everything seen
        scores[1, : m - 3] = -np.inf        # fewer than k left
        idx, vals = R.top_k_rows(scores, 10)
        ref = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        np.testing.assert_array_equal(vals, np.take_along_axis(scores, ref, axis=1))
        finite = np.isfinite(vals)
        np.testing.assert_array_equal(np.where(finite, idx, -1), np.where(finite, ref, -1))
