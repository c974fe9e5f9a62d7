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


def test_the_term_keeps_its_neighbours_at_every_catalogue_size():
    assert FusionConfig(n_users=2, n_items=200_000).item_item_neighbours == 512
    assert FusionConfig(n_users=2, n_items=1_000_000).item_item_neighbours == 134  # buffers under 2^27 values
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


@pytest.mark.parametrize("form", ["dense", "sparse", "popular"])
def test_the_ridge_and_the_weight_are_chosen_together_by_the_combined_validation_ndcg(form):
    """fit_item_item keeps the (ridge, weight) pair whose towers-plus-term validation NDCG@20 is the best
    of the whole grid, each pair scored here by hand from EASE's closed form (for the sparse form, at full
    rank, the closed form where two items were bought together, and with ``item_item_popular``, also from
    every item to the most bought ones), every ridge tried in both forms."""
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
    dense_up_to = n_items if form == "dense" else 0
    popular = 6 if form == "popular" else 0
    config = FusionConfig(
        n_users=n_users, n_items=n_items, dim=4, item_item=n_items, item_item_dense_up_to=dense_up_to,
        item_item_rank=n_items, item_item_popular=popular,
    )  # fmt: skip
    model = FusionRecModel(config)
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
    support = (X.T @ X > 0) if form != "dense" else np.ones((n_items, n_items), dtype=bool)
    most_bought = np.argsort(-X.sum(0), kind="stable")[:popular]
    support[:, most_bought] = True  # every row reaches the most bought items (none when popular is 0)

    def closed_form(lam):
        P = np.linalg.inv(X.T @ X + lam * np.eye(n_items))
        B = -P / np.diag(P)
        np.fill_diagonal(B, 0.0)
        return np.where(support, B, 0.0)

    grid = {(lam, w): _ndcg20(base + w * (X @ closed_form(lam)), train, valid) for lam in LAMBDAS for w in WEIGHTS}
    assert max(grid, key=grid.get)[0] != LAMBDAS[0]  # the data make the choice matter (not the first ridge)
    assert grid[(chosen["lambda"], chosen["weight"])] == pytest.approx(max(grid.values()), abs=1e-9)
    assert chosen["valid_ndcg@20_with_item_item"] == pytest.approx(max(grid.values()), abs=1e-6)
    assert chosen["valid_ndcg@20_network"] == pytest.approx(_ndcg20(base, train, valid), abs=1e-6)
    assert chosen["weight"] > 0  # on block-structured tastes the term beats random tower scores
    assert chosen["sparse"] == float(form != "dense")
    if form != "dense":  # pairs never bought together exist, and the sparse form leaves them out
        assert not support.all()
    if form == "popular":  # some rows reach a most bought item only through the added pairs
        assert (X.T @ X == 0)[:, most_bought].any()


def test_with_popular_adds_the_most_bought_items_to_every_row_with_their_counts():
    """Every row gets the most bought items (its own row excepted) with its co-occurrence count with each,
    0 where the two were never bought together; the co-occurring pairs stay as they were."""
    import scipy.sparse as sp

    from fusionrec.itemitem import cooccurring, interactions, with_popular

    rng = np.random.default_rng(5)
    users = rng.integers(0, 30, 120)
    items = np.minimum(rng.zipf(1.5, 120) - 1, 24)
    X = interactions(users, items, 30, 25)
    G = (X.T @ X).toarray()
    count = np.asarray(X.sum(0)).ravel()
    pairs = cooccurring(X, 3)
    got = with_popular(pairs, X, count, 4)
    top = np.argsort(-count, kind="stable")[:4]
    assert isinstance(got, sp.csr_matrix) and got.has_sorted_indices
    dense = got.toarray()
    present = np.zeros((25, 25), dtype=bool)
    present[np.repeat(np.arange(25), np.diff(got.indptr)), got.indices] = True
    expected = pairs.toarray() > 0
    expected[:, top] = True
    np.fill_diagonal(expected, False)
    assert (present == expected).all()
    assert np.array_equal(dense[present], G[present])  # the counts, zeros included
    assert (G[:, top][~np.eye(25, dtype=bool)[:, top]] == 0).any()  # some pairs were never bought together
    assert with_popular(pairs, X, count, 0) is pairs


def _blocks(n_users: int, n_items: int, seed: int) -> np.ndarray:
    """Users who mostly buy from one block of 20 items, a few from anywhere: a binary matrix."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n_users, n_items))
    for u in range(n_users):
        block = rng.integers(0, n_items // 20)
        X[u, rng.choice(np.r_[block * 20 : block * 20 + 20, rng.integers(0, n_items, 4)], 6)] = 1.0
    return X


def test_the_sparse_form_at_full_rank_is_the_closed_form_where_items_were_bought_together():
    """With every eigenpair the sparse form's P is the exact inverse, so each kept weight B[h, j] is the
    closed form's (an explicit inverse here); a row keeps its k strongest co-occurring items."""
    from fusionrec.itemitem import SparseEase, interactions

    X = _blocks(200, 60, 0)
    lam, k = 20.0, 8
    tu, ti = np.nonzero(X)
    P = np.linalg.inv(X.T @ X + lam * np.eye(60))
    B = -P / np.diag(P)
    G = X.T @ X
    index, value = SparseEase(interactions(tu, ti, 200, 60), width=60, rank=60).weights(lam, k)
    for h in range(60):
        pairs = [j for j in range(60) if j != h and G[h, j] > 0]
        expected = sorted(pairs, key=lambda j: -abs(B[h, j]))[:k]
        real = value[h] != 0
        assert sorted(index[h][real].tolist()) == sorted(expected)
        assert value[h][real] == pytest.approx(B[h, index[h][real]], rel=1e-3, abs=1e-5)
        assert np.all(index[h][~real] == h)  # a short row is filled with its own index at weight 0


def test_the_sparse_form_at_low_rank_ranks_as_the_closed_form_does():
    """At a quarter of the rank, with the ridge well above the eigenvalues left out (about 44 here, against
    500: the remainder is of order (44/500)^2), the sparse form keeps most of the closed form's top 5 per
    row, and the kept weights close to its."""
    from fusionrec.itemitem import SparseEase, interactions

    X = _blocks(3000, 400, 1)
    lam, k = 500.0, 5
    tu, ti = np.nonzero(X)
    P = np.linalg.inv(X.T @ X + lam * np.eye(400))
    B = -P / np.diag(P)
    np.fill_diagonal(B, 0.0)
    B = np.where(X.T @ X > 0, B, 0.0)
    index, value = SparseEase(interactions(tu, ti, 3000, 400), width=400, rank=100).weights(lam, k)
    exact = np.argsort(-np.abs(B), axis=1)[:, :k]
    overlap = np.mean([len(set(index[h]) & set(exact[h])) / k for h in range(400)])
    assert overlap > 0.9
    err = np.abs(value - np.take_along_axis(B, index, 1)).max() / np.abs(B).max()
    assert err < 0.08  # (and the first-order part alone is off by more than 0.2, below)
    # leaving the low-rank part out (first order alone) is far off: the test can tell
    first_order = -(X.T @ X) / lam**2 / (1 / lam - np.diag(X.T @ X) / lam**2)
    assert np.abs(np.where(X.T @ X > 0, first_order, 0) - B).max() / np.abs(B).max() > 0.2


def test_where_the_eigenvalues_left_out_reach_the_ridge_the_remainder_is_expanded_around_its_diagonal():
    """Popular items bought whatever the taste (their counts grow with the users, as in a catalogue of 10^6)
    leave eigenvalues near the ridge outside the top 20 (about 244 against 250): the first-order form is
    off by several times the weights themselves, the diagonal-expanded one ranks as the closed form does
    for most of each row's top 5."""
    from fusionrec.itemitem import SparseEase, interactions

    X = _blocks(3000, 400, 1)
    rng = np.random.default_rng(3)
    X[:, 360:] = np.maximum(X[:, 360:], rng.random((3000, 40)) < 0.4 / np.sqrt(np.arange(1, 41)))
    lam, k = 250.0, 5
    G = X.T @ X
    P = np.linalg.inv(G + lam * np.eye(400))
    B = np.where(G > 0, -P / np.diag(P), 0.0)
    np.fill_diagonal(B, 0.0)
    exact = np.argsort(-np.abs(B), axis=1)[:, :k]
    tu, ti = np.nonzero(X)
    sparse = SparseEase(interactions(tu, ti, 3000, 400), width=400, rank=20)
    assert sparse.eigenvalues[-1] > SparseEase.JACOBI * lam and sparse.form(lam) == "jacobi"

    def off(index, value):
        true = np.take_along_axis(B, index, 1)
        overlap = np.mean([len(set(index[h]) & set(exact[h])) / k for h in range(400)])
        return overlap, np.linalg.norm(value - true) / np.linalg.norm(true)

    overlap, err = off(*sparse.weights(lam, k))
    sparse.JACOBI = np.inf  # the first-order form on the same eigenpairs
    assert sparse.form(lam) == "first-order"
    first_overlap, first_err = off(*sparse.weights(lam, k))
    assert overlap > 0.75 and err < 0.5
    assert first_err > 2.0 and first_overlap < overlap - 0.1


def test_co_occurring_pairs_are_the_same_whatever_the_slice_budget():
    from fusionrec.itemitem import cooccurring, interactions

    X = _blocks(300, 100, 2)
    tu, ti = np.nonzero(X)
    M = interactions(tu, ti, 300, 100)
    whole = cooccurring(M, width=7, budget=10**9)
    sliced = cooccurring(M, width=7, budget=50)  # many slices
    assert whole.has_sorted_indices and sliced.has_sorted_indices
    assert all(np.array_equal(getattr(whole, a), getattr(sliced, a)) for a in ("indptr", "indices", "data"))
    heads = np.repeat(np.arange(100), np.diff(whole.indptr))
    tails, counts = whole.indices, whole.data
    G = X.T @ X
    assert np.all(counts == G[heads, tails]) and np.all(heads != tails)
    kept = set(zip(heads.tolist(), tails.tolist()))
    assert all((j, i) in kept for i, j in kept)  # symmetric
    for i in range(100):  # each item's 7 most co-occurring are among its pairs (ties aside)
        seventh = np.sort(np.delete(G[i], i))[::-1][6]
        strong = [j for j in range(100) if j != i and G[i, j] > seventh]
        assert all((i, j) in kept for j in strong)


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


def test_the_content_term_is_the_cosine_of_the_users_mean_content_to_each_item_by_hand():
    """Each modality unit-normalised (zeros where masked), concatenated, normalised; the user's vector the
    normalised sum over the real history entries; the term the weight times their cosine."""
    rng = np.random.default_rng(1)
    n_items = 6
    cfg = FusionConfig(n_users=2, n_items=n_items, dim=4, modalities={"text": 3, "image": 2}, item_item=0)
    model = FusionRecModel(cfg)
    text, image = rng.normal(size=(n_items, 3)), rng.normal(size=(n_items, 2))
    t_mask, i_mask = np.array([1, 1, 1, 0, 1, 1], bool), np.array([1, 0, 1, 1, 1, 1], bool)
    model.set_item_features(
        {
            "text": (torch.tensor(text, dtype=torch.float32), torch.tensor(t_mask)),
            "image": (torch.tensor(image, dtype=torch.float32), torch.tensor(i_mask)),
        },
        torch.ones(n_items, dtype=torch.bool),
    )
    history = torch.tensor([[0, 3, 5], [1, 2, 2]])
    mask = torch.tensor([[True, True, True], [False, True, False]])
    got = model.content_term(history, mask, weight=3.0).numpy()

    def unit(v):
        n = np.linalg.norm(v, axis=-1, keepdims=True)
        return np.where(n > 0, v / np.where(n > 0, n, 1), 0)

    c = unit(np.concatenate([unit(image) * i_mask[:, None], unit(text) * t_mask[:, None]], axis=1))
    users = unit(np.stack([c[[0, 3, 5]].sum(0), c[2]]))
    assert got == pytest.approx(3.0 * users @ c.T, abs=1e-5)
    assert not model.has_content_term  # weight 0 until fitted
    model.cc_weight.fill_(3.0)
    assert model.has_content_term and model.content_term(history, mask).numpy() == pytest.approx(got, abs=1e-6)


def test_the_content_term_ranks_as_the_content_peer_does():
    """The term over a user's whole training history orders the catalogue as content_knn does (the peer a
    user would try first), computed apart in numpy from the same embeddings."""
    import pandas as pd

    from fusionrec.data.splits import Split
    from fusionrec.encoders.pipeline import ModalityEmbeddings
    from fusionrec.train.peers import content_knn

    rng = np.random.default_rng(2)
    n_users, n_items = 8, 30
    values = {"text": rng.normal(size=(n_items, 5)), "image": rng.normal(size=(n_items, 4))}
    masks = {"text": rng.random(n_items) > 0.2, "image": rng.random(n_items) > 0.2}
    emb = {
        m: ModalityEmbeddings(m, values[m].astype(np.float32), masks[m], [None] * n_items, f"test-{m}") for m in values
    }
    train = pd.DataFrame(
        [(u, int(i), 0) for u in range(n_users) for i in rng.choice(n_items, 4, replace=False)],
        columns=["user_idx", "item_idx", "timestamp"],
    )
    split = Split("random", train, train.iloc[:0], train.iloc[:0], n_users, n_items)
    peer = content_knn(split, emb)(np.arange(n_users))
    model = FusionRecModel(FusionConfig(n_users=n_users, n_items=n_items, dim=4, modalities={"text": 5, "image": 4}))
    model.set_item_features(
        {m: (torch.tensor(values[m], dtype=torch.float32), torch.tensor(masks[m])) for m in values},
        torch.ones(n_items, dtype=torch.bool),
    )
    hist = torch.tensor(np.stack([g["item_idx"].to_numpy() for _, g in train.groupby("user_idx")]))
    ours = model.content_term(hist, torch.ones_like(hist, dtype=torch.bool), weight=1.0).numpy()
    assert ours == pytest.approx(peer, abs=1e-5)


def _text_model(n_users: int, content: np.ndarray, dim: int) -> FusionRecModel:
    """A model over one text modality holding ``content`` [n_items, d], every item seen, no item-item term and
    no content neighbourhood."""
    n_items, d = content.shape
    model = FusionRecModel(
        FusionConfig(
            n_users=n_users, n_items=n_items, dim=dim, modalities={"text": d}, item_item=0, content_neighbours=0
        )
    )
    model.set_item_features(
        {"text": (torch.tensor(content, dtype=torch.float32), torch.ones(n_items, dtype=torch.bool))},
        torch.ones(n_items, dtype=torch.bool),
    )
    return model


def _kinds(rng, n_users: int, n_items: int, kinds: int, per_user: int, every: int):
    """Items of ``kinds`` kinds, each user buying ``per_user`` items of one kind, every ``every``-th row held out
    for validation; towers as strong as noise. Returns (each item's kind, the split, the histories and their
    mask, the towers' scores, the training pairs, the validation items by user)."""
    import pandas as pd

    from fusionrec.data.splits import Split

    kind = rng.integers(0, kinds, n_items)
    taste = rng.integers(0, kinds, n_users)
    rows = sorted(
        {
            (u, int(i))
            for u in range(n_users)
            for i in rng.choice(np.flatnonzero(kind == taste[u]), per_user, replace=False)
        }
    )
    valid_rows = {r for k, r in enumerate(rows) if k % every == 0}
    frame = lambda rs: pd.DataFrame([(u, i, 0) for u, i in rs], columns=["user_idx", "item_idx", "timestamp"])  # noqa: E731
    train_rows = [r for r in rows if r not in valid_rows]
    split = Split("random", frame(train_rows), frame(sorted(valid_rows)), frame([]), n_users, n_items)
    hist = torch.zeros(n_users, 8, dtype=torch.long)
    hmask = torch.zeros(n_users, 8, dtype=torch.bool)
    for u in range(n_users):
        items = [i for v, i in train_rows if v == u]
        hist[u, 8 - len(items) :] = torch.tensor(items)
        hmask[u, 8 - len(items) :] = True
    base = rng.normal(size=(n_users, n_items)).astype(np.float32)  # small weights lose to it
    valid = {}
    for u, i in valid_rows:
        valid.setdefault(u, set()).add(i)
    return kind, split, hist, hmask, base, set(train_rows), valid


def test_the_content_weight_is_chosen_on_validation_and_zero_when_content_says_nothing():
    """On tastes that only content shows (each user's items share a direction in content space) the
    chosen weight is positive and lifts validation NDCG@20; on content unrelated to the tastes it stays 0
    (or lifts nothing)."""

    from fusionrec.itemitem import CONTENT_WEIGHTS, fit_content_term

    rng = np.random.default_rng(4)
    n_users, n_items, groups = 80, 60, 6
    group, split, hist, hmask, base, train, valid = _kinds(rng, n_users, n_items, groups, 4, 4)
    centres = rng.normal(size=(groups, 16))
    for content, positive in (
        (centres[group] + 0.3 * rng.normal(size=(n_items, 16)), True),
        (rng.normal(size=(n_items, 16)), False),
    ):
        model = _text_model(n_users, content, dim=4)
        chosen = fit_content_term(model, split, hist, hmask, lambda us: base[us])
        assert float(model.cc_weight) == chosen["weight"]
        # every weight of the grid scored here by hand (the term's own values: the test above checks them)
        term = model.content_term(hist, hmask, weight=1.0).numpy()
        grid = {w: _ndcg20(base + w * term, train, valid) for w in CONTENT_WEIGHTS}
        assert grid[chosen["weight"]] == pytest.approx(max(grid.values()), abs=1e-9)
        if positive:
            assert chosen["weight"] > CONTENT_WEIGHTS[1] and max(grid, key=grid.get) == chosen["weight"]
            assert chosen["valid_ndcg@20_with_content"] > chosen["valid_ndcg@20_before"] + 0.2
        else:
            assert chosen["valid_ndcg@20_with_content"] < chosen["valid_ndcg@20_before"] + 0.1


def test_content_neighbours_are_each_items_nearest_others_by_cosine_in_any_slice():
    """content_neighbours: each item's k largest cosines to other items (never itself), clamped at 0, the
    same whatever the slice size; checked against a brute-force numpy sort."""
    from fusionrec.itemitem import content_neighbours

    rng = np.random.default_rng(7)
    c = rng.normal(size=(50, 6))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    sims = c @ c.T
    np.fill_diagonal(sims, -np.inf)
    want = np.sort(sims, axis=1)[:, ::-1][:, :5]
    for chunk in (7, 50, 2048):
        index, cosine = content_neighbours(torch.tensor(c, dtype=torch.float32), 5, chunk=chunk)
        assert not (index.numpy() == np.arange(50)[:, None]).any()
        assert cosine.numpy() == pytest.approx(np.clip(want, 0, None), abs=1e-5)
        got = np.take_along_axis(sims, index.numpy(), axis=1)
        assert got == pytest.approx(want, abs=1e-5)


def test_the_content_neighbourhood_term_sums_each_history_items_row_by_hand():
    """score = cn_weight * sum over the real history entries h of cn_value[h] at cn_index[h]; padding adds
    nothing; the term counts as present once its weight is set."""
    rng = np.random.default_rng(8)
    n_items, k = 12, 3
    model = FusionRecModel(
        FusionConfig(n_users=2, n_items=n_items, dim=4, modalities={"text": 3}, item_item=0, content_neighbours=k)
    )
    model.set_item_features(
        {"text": (torch.tensor(rng.normal(size=(n_items, 3)), dtype=torch.float32), torch.ones(n_items, dtype=bool))},
        torch.ones(n_items, dtype=torch.bool),
    )
    index = np.stack([rng.choice([j for j in range(n_items) if j != i], k, replace=False) for i in range(n_items)])
    value = rng.random((n_items, k))
    model.cn_index.copy_(torch.tensor(index))
    model.cn_value.copy_(torch.tensor(value, dtype=torch.float32))
    history = torch.tensor([[4, 4, 9], [0, 1, 2]])
    mask = torch.tensor([[True, True, True], [False, False, True]])
    assert not model.has_content_term
    model.cn_weight.fill_(2.0)
    assert model.has_content_term
    got = model.content_term(history, mask).numpy()
    want = np.zeros((2, n_items))
    for row, hs in ((0, [4, 4, 9]), (1, [2])):
        for h in hs:
            np.add.at(want[row], index[h], 2.0 * value[h])
    assert got == pytest.approx(want, abs=1e-5)


def test_the_content_neighbourhood_is_chosen_where_a_shopper_buys_another_colour_of_one_item():
    """Products in pairs of near-identical content (two colours of one product), in four kinds; each
    user's history is four products of one kind and one of another, and what they buy next is the other
    colour of that one. The mean of the history points at the kind they buy most, the neighbourhood at
    the twins: fit_content_term gives it a weight, and the setting it keeps is the best of those it
    tried, each scored here by hand."""
    import pandas as pd

    from fusionrec.data.splits import Split
    from fusionrec.itemitem import fit_content_term

    rng = np.random.default_rng(9)
    n_users, products, dim, kinds = 60, 40, 24, 4
    n_items = 2 * products
    kind = np.arange(products) % kinds
    centre = rng.normal(size=(kinds, dim))[kind] * 1.5 + rng.normal(size=(products, dim))
    content = np.repeat(centre, 2, axis=0) + 0.1 * rng.normal(size=(n_items, dim))  # items 2p and 2p + 1
    train_rows, valid_rows = set(), set()
    for u in range(n_users):
        mine = rng.integers(kinds)
        bought = [*rng.choice(np.flatnonzero(kind == mine), 4, replace=False)]
        other = int(rng.choice(np.flatnonzero(kind != mine)))
        train_rows |= {(u, int(2 * p)) for p in [*bought, other]}
        valid_rows.add((u, 2 * other + 1))
    frame = lambda rs: pd.DataFrame([(u, i, 0) for u, i in sorted(rs)], columns=["user_idx", "item_idx", "timestamp"])  # noqa: E731
    split = Split("random", frame(train_rows), frame(valid_rows), frame([]), n_users, n_items)
    hist = torch.tensor([[i for v, i in sorted(train_rows) if v == u] for u in range(n_users)])
    hmask = torch.ones_like(hist, dtype=torch.bool)
    base = rng.normal(size=(n_users, n_items)).astype(np.float32) * 0.1
    model = FusionRecModel(
        FusionConfig(
            n_users=n_users, n_items=n_items, dim=4, modalities={"text": dim}, item_item=0, content_neighbours=4
        )
    )
    model.set_item_features(
        {"text": (torch.tensor(content, dtype=torch.float32), torch.ones(n_items, dtype=torch.bool))},
        torch.ones(n_items, dtype=torch.bool),
    )
    chosen = fit_content_term(model, split, hist, hmask, lambda us: base[us])
    assert chosen["neighbour_weight"] > 0 and float(model.cn_weight) == chosen["neighbour_weight"]
    # by hand: unit content, each item's 4 nearest others, cos^p scaled by the mean nearest, summed
    c = content / np.linalg.norm(content, axis=1, keepdims=True)
    sims = c @ c.T
    np.fill_diagonal(sims, -np.inf)
    index = np.argsort(-sims, axis=1)[:, :4]
    values = np.clip(np.take_along_axis(sims, index, axis=1), 0, None) ** chosen["neighbour_power"]
    values /= values[:, 0].mean()
    mean = np.stack([c[h].sum(0) for h in hist.numpy()])
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    nb = np.zeros((n_users, n_items))
    for u, hs in enumerate(hist.numpy()):
        for h in hs:
            np.add.at(nb[u], index[h], values[h])
    train = set(train_rows)
    valid = {u: {i} for u, i in valid_rows}
    score = lambda w, wn: _ndcg20(base + w * (mean @ c.T) + wn * nb, train, valid)  # noqa: E731
    kept = score(chosen["weight"], chosen["neighbour_weight"])
    assert kept == pytest.approx(chosen["valid_ndcg@20_with_content"], abs=1e-6)
    assert kept > 0.55  # the twin among the five twins of the history on top (about 0.59 at random among them)
    best_mean_only = max(score(w, 0.0) for w in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0))
    assert kept > best_mean_only + 0.2, best_mean_only


def test_the_dense_term_of_a_short_history_counts_repeats_and_follows_rows_changed_in_place():
    """One short history (the bag path of the cached dense matrix): an item twice counts twice, and new
    neighbour weights written into the buffers (as a fit or a load does) are used, not the cached ones."""
    from tests.reference import item_item_term

    rng = np.random.default_rng(3)
    n, k = 60, 8
    model = FusionRecModel(FusionConfig(n_users=1, n_items=n, dim=4, item_item=k))
    model.ii_index.copy_(torch.from_numpy(np.stack([rng.choice(n, k, replace=False) for _ in range(n)])))
    model.ii_weight.fill_(2.0)
    history = torch.tensor([[0, 3, 3, 5]])
    mask = torch.tensor([[False, True, True, True]])
    for _ in range(2):
        model.ii_value.copy_(torch.from_numpy(rng.normal(size=(n, k)).astype(np.float32)))
        sd = {k_: v.numpy() for k_, v in model.state_dict().items() if k_.startswith("ii_")}
        got = model.item_item(history, mask)[0].numpy()
        assert got == pytest.approx(item_item_term(sd, np.array([3, 3, 5])), rel=1e-5, abs=1e-5)


def test_the_taste_term_is_the_log_share_of_each_items_cluster_in_the_history_by_hand():
    """score = w * (log((n_c + 1) / (n + K)) + log K) at each item's cluster c, n_c the real history entries in
    c (a repeat counts twice, padding not at all) and n their count; an empty history scores 0; the term is
    part of the content term once its weight is set."""
    n_items, K = 7, 3
    model = FusionRecModel(
        FusionConfig(n_users=3, n_items=n_items, dim=4, modalities={"text": 3}, item_item=0, content_neighbours=0)
    )
    model.tc_label.copy_(torch.tensor([0, 0, 1, 2, 2, 2, 1]))
    model.tc_clusters.fill_(K)
    history = torch.tensor([[0, 1, 1, 3], [5, 6, 2, 2], [4, 4, 4, 4]])
    mask = torch.tensor([[True, True, True, True], [False, False, True, False], [False, False, False, False]])
    assert not model.has_taste_term and not model.has_content_term  # weight 0 until fitted
    got = model.taste_term(history, mask, weight=2.0).numpy()
    label = [0, 0, 1, 2, 2, 2, 1]
    # user 0: clusters 0, 0, 0, 2 (n 4); user 1: cluster 1 once (n 1); user 2: nothing
    want = np.zeros((3, n_items))
    for row, counts, n in ((0, [3, 0, 1], 4), (1, [0, 1, 0], 1)):
        want[row] = [2.0 * (np.log((counts[c] + 1) / (n + K)) + np.log(K)) for c in label]
    assert got == pytest.approx(want, abs=1e-5)
    model.tc_weight.fill_(2.0)
    assert model.has_taste_term and model.has_content_term
    assert model.content_term(history, mask).numpy() == pytest.approx(want, abs=1e-5)  # cc and cn weights are 0


def test_kmeans_finds_well_separated_clusters_and_repeats_for_a_seed():
    """Three tight blobs far apart: three clusters are exactly the blobs, from a sample of the rows as from
    all of them; the same seed gives the same labels."""
    from fusionrec.itemitem import kmeans

    rng = np.random.default_rng(11)
    truth = rng.integers(0, 3, 600)
    x = torch.tensor(rng.normal(size=(3, 8))[truth] * 10 + rng.normal(size=(600, 8)) * 0.1, dtype=torch.float32)
    for sample in (600, 50):
        got = kmeans(x, 3, seed=1, sample=sample).numpy()
        pairs = {(int(t), int(g)) for t, g in zip(truth, got)}
        assert len(pairs) == 3 and len({g for _, g in pairs}) == 3  # one cluster a blob, one blob a cluster
    assert np.array_equal(kmeans(x, 5, seed=2).numpy(), kmeans(x, 5, seed=2).numpy())


def test_the_taste_term_is_chosen_where_tastes_follow_kinds_of_content_and_not_on_noise():
    """Items of six kinds told apart by their content, each user buying within one kind: fit_taste_term keeps
    clusters and a weight, and the validation NDCG@20 it reports is the kept setting's, scored here by hand,
    well above the towers' noise; on content unrelated to the kinds it lifts little."""

    from fusionrec.itemitem import TASTE_CLUSTERS, fit_taste_term

    rng = np.random.default_rng(12)
    n_users, n_items, kinds = 90, 120, 6
    kind, split, hist, hmask, base, train, valid = _kinds(rng, n_users, n_items, kinds, 6, 3)
    centres = rng.normal(size=(kinds, 16)) * 3
    for content, positive in (
        (centres[kind] + 0.3 * rng.normal(size=(n_items, 16)), True),
        (rng.normal(size=(n_items, 16)), False),
    ):
        torch.manual_seed(0)
        model = _text_model(n_users, content, dim=8)
        model.eval()
        chosen = fit_taste_term(model, split, hist, hmask, lambda us: base[us])
        assert float(model.tc_weight) == chosen["taste_weight"] and int(model.tc_clusters) == chosen["taste_clusters"]
        kept = _ndcg20(base + model.taste_term(hist, hmask).numpy(), train, valid)
        assert kept == pytest.approx(chosen["valid_ndcg@20_with_taste"], abs=1e-6)
        before = _ndcg20(base, train, valid)
        if positive:
            assert chosen["taste_weight"] > 0 and chosen["taste_clusters"] in TASTE_CLUSTERS
            assert kept > before + 0.2, (kept, before)
        else:
            assert kept < before + 0.1, (kept, before)
