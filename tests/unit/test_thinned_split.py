"""The sparse regime's thinned movielens-100k-mm (benchmarks/accuracy.py ``thinned``): each item keeps at
most 3 training positives and at most 1 in each held-out part, drawn from the split's own parts, and
which items can be held out does not depend on how many the training part kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusionrec.data.splits import Split
from tests.bench import benchmark_module


@pytest.fixture()
def accuracy():
    return benchmark_module("accuracy")


def _split(seed: int = 4) -> Split:
    rng = np.random.default_rng(seed)
    n_users, n_items = 300, 40
    rows = sorted({(int(u), int(i)) for u, i in zip(rng.integers(0, n_users, 6000), rng.integers(0, n_items, 6000))})
    frame = pd.DataFrame([(u, i, k) for k, (u, i) in enumerate(rows)], columns=["user_idx", "item_idx", "timestamp"])
    part = rng.choice(3, len(frame), p=[0.8, 0.1, 0.1])
    train, valid, test = (frame[part == k].reset_index(drop=True) for k in range(3))
    return Split("random", train, valid, test, n_users, n_items, seed=seed)


def test_each_item_keeps_at_most_three_training_and_one_held_out_positive_of_its_own(accuracy):
    split = _split()
    thin = accuracy.thinned(split)
    assert thin.train.groupby("item_idx").size().max() == 3
    assert thin.valid.groupby("item_idx").size().max() == 1 and thin.test.groupby("item_idx").size().max() == 1
    for small, big in ((thin.train, split.train), (thin.valid, split.valid), (thin.test, split.test)):
        assert len(small.merge(big, on=["user_idx", "item_idx", "timestamp"])) == len(small)  # rows of that part
    again = accuracy.thinned(split)
    assert again.train.equals(thin.train) and again.test.equals(thin.test)  # seeded by the split's seed


def test_an_item_with_all_its_training_positives_kept_can_still_be_held_out(accuracy):
    """Thinning the data before the split (the benchmark's first form) made an item whose 3 all fell in
    training impossible to test: MostPop scored 0. Thinned after it, such items are held out as often as
    the others."""
    thin = accuracy.thinned(_split())
    full = thin.train.groupby("item_idx").size().reindex(range(thin.n_items), fill_value=0) == 3
    tested = np.isin(np.arange(thin.n_items), thin.test["item_idx"].unique())
    assert full.sum() >= 20 and tested[full.to_numpy()].mean() >= 0.8
