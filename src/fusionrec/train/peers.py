"""Baselines evaluated on the same split as the fusion model: MostPop, ID-only matrix factorisation
(BPR), and the external peers Cornac BPR and Cornac VBPR (fed our image embeddings).

Each returns a score function (user indices -> scores over all items) for
:func:`fusionrec.evaluation.evaluate_ranking`; :data:`fusionrec.train.models.PEERS` names them all.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fusionrec.data.splits import Split


def most_popular(split: Split):
    """Items by their number of training interactions, the same list for everyone."""
    pop = np.bincount(split.train["item_idx"].to_numpy(), minlength=split.n_items).astype(np.float64)
    return lambda users: np.tile(pop, (len(users), 1))


def random_scores(split: Split, seed: int = 0):
    """A random ranking (the floor on a cold-item split)."""
    rng = np.random.default_rng(seed)
    return lambda users: rng.random((len(users), split.n_items))


def bpr_mf(
    split: Split,
    *,
    dim: int,
    epochs: int,
    lr: float = 5e-3,
    reg: float = 1e-5,
    batch: int = 2048,
    seed: int = 0,
    patience: int = 4,
    valid_fn=None,
):
    """ID-only matrix factorisation trained with BPR (uniform negatives), early-stopped on validation."""
    torch.manual_seed(seed)
    U = torch.nn.Embedding(split.n_users, dim)
    V = torch.nn.Embedding(split.n_items, dim)
    b = torch.nn.Embedding(split.n_items, 1)
    for e in (U, V):
        torch.nn.init.normal_(e.weight, std=0.1)
    torch.nn.init.zeros_(b.weight)
    params = [*U.parameters(), *V.parameters(), *b.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    users = torch.from_numpy(split.train["user_idx"].to_numpy(np.int64))
    items = torch.from_numpy(split.train["item_idx"].to_numpy(np.int64))
    g = torch.Generator().manual_seed(seed)

    def scores(us):
        with torch.no_grad():
            u = U(torch.from_numpy(np.asarray(us, dtype=np.int64)))
            return (u @ V.weight.T + b.weight.T).numpy()

    best, best_state, bad = -1.0, None, 0
    for _ in range(epochs):
        perm = torch.randperm(len(users), generator=g)
        for s in range(0, len(perm), batch):
            idx = perm[s : s + batch]
            u, i = users[idx], items[idx]
            j = torch.randint(0, split.n_items, (len(idx),), generator=g)
            x = (U(u) * (V(i) - V(j))).sum(-1) + (b(i) - b(j)).squeeze(-1)
            loss = -torch.nn.functional.logsigmoid(x).mean() + reg * (
                U(u).pow(2).sum() + V(i).pow(2).sum() + V(j).pow(2).sum()
            ) / len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if valid_fn is None:
            continue
        val = valid_fn(scores)
        if val > best:
            best, bad = val, 0
            best_state = [p.detach().clone() for p in params]
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        with torch.no_grad():
            for p, s in zip(params, best_state):
                p.copy_(s)
    return scores


def ease(split: Split, lam: float | None = None, valid_fn=None):
    """EASE (Steck 2019): a closed-form item-item linear model, B = -P / diag(P) with P = (X'X + lam I)^-1
    and a zero diagonal. ``lam`` chosen by ``valid_fn`` (validation NDCG@20) among
    :data:`fusionrec.itemitem.LAMBDAS` when not given, as our own item-item term's is (at every catalogue
    size: the peer's cost is its own)."""
    from fusionrec.itemitem import DEFAULT_LAMBDA, LAMBDAS
    from fusionrec.itemitem import ease as ease_weights

    X = np.zeros((split.n_users, split.n_items), dtype=np.float32)
    X[split.train["user_idx"].to_numpy(), split.train["item_idx"].to_numpy()] = 1.0
    users, items = split.train["user_idx"].to_numpy(), split.train["item_idx"].to_numpy()

    def fitted(lam: float):
        B = ease_weights(users, items, split.n_users, split.n_items, lam)

        def score(us):
            return X[np.asarray(us)] @ B

        score.chosen = {"lambda": lam}  # what the comparison reports
        return score

    if lam is not None or valid_fn is None:
        return fitted(DEFAULT_LAMBDA if lam is None else lam)
    return max((fitted(v) for v in LAMBDAS), key=valid_fn)


def _cornac_sets(split: Split, image: np.ndarray | None):
    import cornac
    from cornac.data import ImageModality

    uid = {str(u): u for u in range(split.n_users)}
    triples = [(str(u), str(i), 1.0) for u, i in zip(split.train["user_idx"], split.train["item_idx"])]
    train = cornac.data.Dataset.build(triples, fmt="UIR", seed=0)
    if image is not None:
        ids = [str(i) for i in range(split.n_items)]
        modality = ImageModality(features=image, ids=ids, normalized=True)
        modality.build(id_map=train.iid_map)
        train.add_modalities(item_image=modality)
    return train, uid


def _cornac_scores(model, train, split: Split):
    """Scores over our item index from a fitted Cornac model (items it never saw get -inf)."""
    n_known = len(train.iid_map)
    our_of = np.array([int(k) for k, _ in sorted(train.iid_map.items(), key=lambda kv: kv[1])])
    uidx = {int(k): v for k, v in train.uid_map.items()}

    def scores(users):
        out = np.full((len(users), split.n_items), -np.inf)
        for row, u in enumerate(users):
            if int(u) in uidx:
                out[row, our_of] = model.score(uidx[int(u)])[:n_known]
        return out

    return scores


def tuned(fit: Callable[..., Callable], grid: dict[str, tuple], valid_fn) -> tuple[Callable, dict[str, Any]]:
    """``fit(**setting)`` for every setting of ``grid`` (the product of its values), the one with the best
    ``valid_fn`` (validation NDCG@20) kept: (its score function, the setting and its validation figure).
    The same kind of search the fusion model gets (its item-item ridge and weight, early stopping)."""
    best, chosen, best_value = None, {}, -1.0
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values))
        score = fit(**setting)
        value = valid_fn(score)
        if value > best_value:
            best, chosen, best_value = score, setting, value
    return best, {
        **chosen,
        "valid_ndcg@20": round(best_value, 4),
        "tried": len(list(itertools.product(*grid.values()))),
    }


def content_knn(split: Split, embeddings: dict):
    """The content peer a user would try first: each item as its encoder vectors (each modality
    unit-normalised, then concatenated), each user as the mean of their training items' vectors, every
    item ranked by cosine to it. It scores cold items as well as warm ones."""
    parts = []
    for name in sorted(embeddings):
        m = embeddings[name]
        v = np.asarray(m.values, dtype=np.float32) * np.asarray(m.mask, dtype=np.float32)[:, None]
        parts.append(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12))
    items = np.concatenate(parts, axis=1)
    items /= np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    users = np.zeros((split.n_users, items.shape[1]), dtype=np.float32)
    np.add.at(users, split.train["user_idx"].to_numpy(), items[split.train["item_idx"].to_numpy()])
    users /= np.maximum(np.linalg.norm(users, axis=1, keepdims=True), 1e-12)
    return lambda us: users[np.asarray(us)] @ items.T


def cornac_bpr(
    split: Split, k: int = 64, max_iter: int = 200, lr: float = 0.01, lambda_reg: float = 0.01, seed: int = 0
):
    """Cornac's BPR (Cython SGD), fitted on the training part."""
    import cornac

    train, _ = _cornac_sets(split, None)
    model = cornac.models.BPR(k=k, max_iter=max_iter, learning_rate=lr, lambda_reg=lambda_reg, seed=seed, verbose=False)
    model.fit(train)
    return _cornac_scores(model, train, split)


def cornac_vbpr(
    split: Split,
    image: np.ndarray,
    k: int = 32,
    k2: int = 32,
    n_epochs: int = 30,
    lr: float = 0.005,
    lambda_w: float = 0.01,
    seed: int = 0,
):
    """Cornac's VBPR, fed our image embeddings as the visual features."""
    import cornac

    train, _ = _cornac_sets(split, image.astype(np.float32))
    model = cornac.models.VBPR(
        k=k,
        k2=k2,
        n_epochs=n_epochs,
        batch_size=512,
        learning_rate=lr,
        lambda_w=lambda_w,
        lambda_b=0.01,
        lambda_e=0.0,
        use_gpu=torch.cuda.is_available(),
        seed=seed,
        verbose=False,
    )
    model.fit(train)
    return _cornac_scores(model, train, split)
