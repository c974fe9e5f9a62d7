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
