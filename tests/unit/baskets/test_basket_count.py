"""basket_count: the numpy itemset counting behind basket_rules' levelwise algorithm, against a
brute-force count with itertools (no Spark)."""

from collections import Counter
from itertools import combinations

import numpy as np
import pyarrow as pa
import pytest

from shopsense.baskets import counting as bc


def random_baskets(n: int, n_items: int, seed: int, max_len: int = 9) -> list[list[str] | None]:
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, n_items + 1)
    weights /= weights.sum()
    out: list[list[str] | None] = []
    for _ in range(n):
        size = int(rng.integers(0, max_len + 1))
        picked = rng.choice(n_items, size=min(size, n_items), replace=False, p=weights)
        out.append(sorted(f"i{j:02d}" for j in picked))
    out[3] = None   # a null basket counts nothing
    return out


def brute_force(baskets, k: int) -> Counter:
    return Counter(c for b in baskets if b for c in combinations(b, k))


def batches_of(baskets, size: int) -> list[pa.RecordBatch]:
    table = pa.table({"items": pa.array(baskets, pa.list_(pa.string()))})
    return table.to_batches(max_chunksize=size)


def mine(baskets, min_count: int, max_len: int, flush_at: int = bc.FLUSH_AT, batch: int = 7):
    """Level by level as basket_rules does it, with the partial counts summed in Python."""
    singles = Counter(i for b in baskets if b for i in b)
    vocab = sorted(i for i, n in singles.items() if n >= min_count)
    base = max(len(vocab), 2)
    found = {1: {(i,): n for i, n in singles.items() if n >= min_count}}
    frequent: list[np.ndarray] = []
    for k in range(2, max_len + 1):
        total: Counter = Counter()
        for out in bc.count_batches(batches_of(baskets, batch), "items", vocab, k, frequent, flush_at):
            for key, n in zip(out.column(bc.KEY).to_pylist(), out.column(bc.COUNT).to_pylist()):
                total[key] += n
        kept = {key: n for key, n in total.items() if n >= min_count}
        codes = bc.decode(np.array(sorted(kept), dtype=np.int64), k, base)
        found[k] = {tuple(vocab[c] for c in row): kept[key] for row, key in zip(codes, sorted(kept))}
        frequent.append(np.array(sorted(kept), dtype=np.int64))
    return found


@pytest.mark.parametrize("flush_at", [bc.FLUSH_AT, 5])
def test_counts_equal_brute_force_up_to_four_items(flush_at):
    baskets = random_baskets(300, 14, seed=3)
    found = mine(baskets, min_count=6, max_len=4, flush_at=flush_at)
    for k in (2, 3, 4):
        expected = {c: n for c, n in brute_force(baskets, k).items() if n >= 6}
        assert found[k] == expected, k
    assert len(found[4]) > 0


def test_sparse_path_when_the_key_space_is_large(monkeypatch):
    monkeypatch.setattr(bc, "DENSE_MAX", 0)
    baskets = random_baskets(200, 12, seed=8)
    found = mine(baskets, min_count=5, max_len=3)
    assert found[3] == {c: n for c, n in brute_force(baskets, 3).items() if n >= 5}


def test_pruning_counts_only_candidates_of_frequent_subsets():
    # {a, b} is frequent, {a, c} and {b, c} are not: no triple is even generated
    baskets = [["a", "b", "c"]] + [["a", "b"]] * 3
    out = list(bc.count_batches(batches_of(baskets, 10), "items", ["a", "b", "c"], 3,
                                [np.array([bc.encode(np.array([[0, 1]]), 3)[0]])]))
    assert sum(b.num_rows for b in out) == 0


def test_codes_skip_infrequent_and_disallowed_items():
    items = pa.array([["a", "x", "b"], [], None, ["b", "c"]], pa.list_(pa.string()))
    codes, ends = bc.basket_codes(items, pa.array(["a", "b", "c"]), np.array([True, True, False]))
    assert codes.tolist() == [0, 1, 1] and ends.tolist() == [2, 2, 3]


def test_encode_decode_round_trip():
    codes = np.array([[0, 5, 9], [1, 2, 3], [7, 8, 9]])
    assert (bc.decode(bc.encode(codes, 10), 3, 10) == codes).all()
    assert bc.encode(codes, 10).tolist() == [59, 123, 789]


def test_item_counts_per_batch():
    out = list(bc.item_counts(batches_of([["a", "b"], ["a"], None], 10), "items"))
    assert dict(zip(out[0].column("item").to_pylist(), out[0].column(bc.COUNT).to_pylist())) == {"a": 2, "b": 1}


def test_pieces_split_the_work_without_changing_the_keys():
    baskets = random_baskets(60, 10, seed=4)
    vocab = pa.array(sorted({i for b in baskets if b for i in b}))
    codes, ends = bc.basket_codes(pa.array(baskets, pa.list_(pa.string())), vocab)
    whole = list(bc.level_keys(codes, ends, 2, len(vocab)))
    pieces = list(bc.level_keys(codes, ends, 2, len(vocab), piece=7))
    assert len(whole) == 1 and len(pieces) > 10 and all(len(p) <= 7 + 9 for p in pieces)
    assert sorted(np.concatenate(pieces).tolist()) == sorted(whole[0].tolist())


def test_level_below_two_is_an_error():
    with pytest.raises(ValueError, match="k must be >= 2"):
        list(bc.level_keys(np.array([0, 1]), np.array([2, 2]), 1, 2))
