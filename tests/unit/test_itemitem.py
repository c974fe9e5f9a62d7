"""The item-item term: EASE's closed form, its pruning, and how the model scores with it, by hand."""

import numpy as np
import pytest
import torch

from fusionrec.itemitem import ease, prune
from fusionrec.model import FusionConfig, FusionRecModel

pytestmark = pytest.mark.unit


def test_ease_solves_its_constrained_ridge_regression():
    """B minimises |X - XB|^2 + lam |B|^2 with diag(B) = 0: off the diagonal, the gradient
    (X'X + lam I) B - X'X vanishes; the diagonal is zero."""
    rng = np.random.default_rng(0)
    X = (rng.random((40, 7)) < 0.3).astype(np.float64)
    users, items = np.nonzero(X)
    lam = 5.0
    B = ease(users, items, 40, 7, lam).astype(np.float64)
    G = X.T @ X
    grad = (G + lam * np.eye(7)) @ B - G
    off = ~np.eye(7, dtype=bool)
    assert np.abs(grad[off]).max() < 1e-4
    assert np.all(np.diag(B) == 0) and np.abs(B).max() > 0.01


def test_prune_keeps_each_rows_strongest_weights_by_magnitude():
    B = np.array([[0.0, 0.5, -0.9, 0.1], [0.2, 0.0, 0.3, -0.25], [0.0, 0.0, 0.0, 0.0], [1.0, -2.0, 0.5, 0.0]])
    index, value = prune(B, 2)
    for row in range(4):
        expected = sorted(np.argsort(-np.abs(B[row]), kind="stable")[:2].tolist()) if row != 2 else None
        if expected is not None:
            assert sorted(index[row].tolist()) == expected
        assert np.allclose(value[row], B[row, index[row]])


def test_the_item_item_term_adds_each_history_items_weights_times_the_learned_weight():
    model = FusionRecModel(FusionConfig(n_users=2, n_items=5, dim=4, item_item=2))
    model.ii_index.copy_(torch.tensor([[1, 2], [0, 3], [0, 1], [4, 0], [3, 2]]))
    model.ii_value.copy_(torch.tensor([[0.5, 0.2], [0.1, -0.3], [0.7, 0.4], [0.9, 0.05], [0.3, 0.6]]))
    model.ii_weight.fill_(2.0)
    history = torch.tensor([[0, 3, 4], [2, 0, 0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    got = model.item_item(history, mask).numpy()
    # user 0: items 0 and 3 (4 masked): 0 -> {1: .5, 2: .2}, 3 -> {4: .9, 0: .05}; user 1: 2 -> {0: .7, 1: .4}
    expected = 2.0 * np.array([[0.05, 0.5, 0.2, 0.0, 0.9], [0.7, 0.4, 0.0, 0.0, 0.0]])
    assert got == pytest.approx(expected, abs=1e-6)


def test_no_term_above_the_size_where_the_closed_form_costs_too_much():
    assert FusionConfig(n_users=2, n_items=30_000).item_item_neighbours == 0
    assert FusionConfig(n_users=2, n_items=50, item_item=128).item_item_neighbours == 50
    assert FusionConfig(n_users=2, n_items=50, item_item=0).item_item_neighbours == 0


def _ndcg20(scores: np.ndarray, train: set, valid: dict) -> float:
    """NDCG@20 by hand: training items excluded, binary gains, ideal DCG over min(20, |truth|) hits."""
    total = 0.0
    for u, truth in valid.items():
        s = scores[u].astype(np.float64).copy()
        s[[i for (v, i) in train if v == u]] = -np.inf
        top = np.argsort(-s, kind="stable")[:20]
        dcg = sum(1 / np.log2(r + 2) for r, i in enumerate(top) if i in truth)
        total += dcg / sum(1 / np.log2(r + 2) for r in range(min(20, len(truth))))
    return total / len(valid)


def test_the_ridge_and_the_weight_are_chosen_together_by_the_combined_validation_ndcg():
    """fit_item_item keeps the (ridge, weight) pair whose towers-plus-term validation NDCG@20 is the best
    of the whole grid, each pair scored here by hand from EASE's closed form."""
    import pandas as pd

    from fusionrec.data.splits import Split
    from fusionrec.itemitem import LAMBDAS, WEIGHTS, fit_item_item

    rng = np.random.default_rng(3)
    n_users, n_items = 60, 40
    taste = rng.integers(0, 4, n_users)  # four blocks of items; users mostly pick from their own block
    rows = {
        (u, int(i))
        for u in range(n_users)
        for i in rng.choice(np.r_[taste[u] * 10 : taste[u] * 10 + 10, rng.integers(0, n_items, 3)], 8, replace=False)
    }
    rows = sorted(rows)
    order = rng.permutation(len(rows))
    part = {r: ("valid" if k % 4 == 0 else "train") for k, r in zip(order, rows)}

    def frame(name):
        return pd.DataFrame(
            [(u, i, 0) for (u, i) in rows if part[(u, i)] == name],
            columns=["user_idx", "item_idx", "timestamp"],
        )

    split = Split("random", frame("train"), frame("valid"), frame("valid").iloc[:0], n_users, n_items)
    base = 0.01 * rng.normal(size=(n_users, n_items)).astype(np.float32)  # weak towers: a mid-grid ridge wins
    model = FusionRecModel(FusionConfig(n_users=n_users, n_items=n_items, dim=4, item_item=n_items))
    hist = torch.zeros(n_users, 20, dtype=torch.long)
    hmask = torch.zeros(n_users, 20, dtype=torch.bool)
    train = {(u, i) for (u, i) in rows if part[(u, i)] == "train"}
    for u in range(n_users):
        items = sorted(i for (v, i) in train if v == u)
        hist[u, 20 - len(items) :] = torch.tensor(items, dtype=torch.long)
        hmask[u, 20 - len(items) :] = True
    chosen = fit_item_item(model, split, hist, hmask, lambda us: base[us])

    valid = {}
    for u, i in rows:
        if part[(u, i)] == "valid":
            valid.setdefault(u, set()).add(i)
    X = np.zeros((n_users, n_items))
    for u, i in train:
        X[u, i] = 1.0
    tu, ti = np.nonzero(X)
    grid = {
        (lam, w): _ndcg20(base + w * (X @ ease(tu, ti, n_users, n_items, lam)), train, valid)
        for lam in LAMBDAS
        for w in WEIGHTS
    }
    assert max(grid, key=grid.get)[0] != LAMBDAS[0]  # the data make the choice matter (not the first ridge)
    assert grid[(chosen["lambda"], chosen["weight"])] == pytest.approx(max(grid.values()), abs=1e-9)
    assert chosen["valid_ndcg@20_with_item_item"] == pytest.approx(max(grid.values()), abs=1e-6)
    assert chosen["valid_ndcg@20_network"] == pytest.approx(_ndcg20(base, train, valid), abs=1e-6)
    assert chosen["weight"] > 0  # on block-structured tastes the term beats random tower scores


@pytest.mark.parametrize(
    "n_items, k, B, H",
    [
        (1100, 1024, 256, 300),  # a small catalogue, many long histories: the dense product
        (5000, 64, 512, 600),  # above 4,096 items: neighbours gathered in slices of the history (two here)
    ],
)
def test_the_term_over_long_histories_sums_every_real_entry_whatever_the_batch(n_items, k, B, H):
    """Long, padded histories (one item twice) in batches too large for one gather: the same sums as the
    dense matrix the neighbours describe, by hand, row by row, whichever way the model computes them."""
    from fusionrec.model.modeling import DENSE_ITEM_ITEM
    from tests.reference import item_item_term

    rng = np.random.default_rng(1)
    model = FusionRecModel(FusionConfig(n_users=B, n_items=n_items, dim=4, item_item=k, item_item_history=H))
    index = np.stack([rng.choice(n_items, k, replace=False) for _ in range(n_items)])
    model.ii_index.copy_(torch.from_numpy(index))
    model.ii_value.copy_(torch.from_numpy(rng.normal(size=(n_items, k)).astype(np.float32)))
    model.ii_weight.fill_(1.5)
    lengths = rng.integers(0, 120, B)
    lengths[7] = H  # one user with a whole window
    history = torch.from_numpy(rng.integers(0, n_items, (B, H)))
    history[7, -1] = history[7, -2]  # the same item twice counts twice
    mask = torch.from_numpy(np.arange(H)[None, :] >= H - lengths[:, None])  # right-aligned, padded in front
    if n_items * n_items <= DENSE_ITEM_ITEM:
        assert B * H * k > n_items * n_items  # the product costs less than the gather: the model takes it
    else:
        assert (1 << 24) // (B * k) < H  # more than one slice of the history
    got = model.item_item(history, mask).numpy()
    sd = {k_: v.numpy() for k_, v in model.state_dict().items() if k_.startswith("ii_")}
    for row in (0, 7, 100, B - 1):
        expected = item_item_term(sd, history[row][mask[row]].numpy())
        assert got[row] == pytest.approx(expected, rel=1e-4, abs=1e-3)
    assert np.all(got[lengths == 0] == 0)
