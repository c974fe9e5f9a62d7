"""The fusion model's item-item term: EASE (Steck 2019) fitted on the training rows, kept sparse.

``B = -P / diag(P)`` with ``P = (X'X + lambda I)^-1`` and a zero diagonal, ``X`` the users-by-items
matrix of training positives; a user's item-item score for item ``j`` is ``sum_h B[h, j]`` over the
items ``h`` of their history. It sees what the two towers compress away (which items go together, item
by item), and the towers see what it cannot (content, cold items, new users' tastes by ID).

Fitted after the network is trained: the ridge ``lambda`` and the weight of the term in the model's score
together, by the combined validation NDCG@20 (weight 0 when it does not help). The ridge that serves EASE
alone best is not the one that complements the towers best: on movielens-100k-mm EASE alone prefers 500,
the sum 250 (all 3 seeds).
Each item keeps its ``k`` strongest neighbours (largest ``|B[h, j]|``), so the term costs
``history x k`` per user and ``n_items x k`` in the artifact.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

LAMBDAS = (100.0, 250.0, 500.0, 1000.0, 2000.0)
WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)
# the content term's weights: its cosine lies in [-1, 1] where the towers' logits span about +-5 (temperature 0.2)
CONTENT_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0)
DEFAULT_LAMBDA = 500.0
LAMBDA_SEARCH_UP_TO = 4000  # items; above, one closed form costs tens of seconds: the default ridge only
VALID_USERS = 4000  # validation users the choices are made on (a random sample beyond that)


def ease(train_users: np.ndarray, train_items: np.ndarray, n_users: int, n_items: int, lam: float) -> np.ndarray:
    """The dense EASE weights [n_items, n_items] (float32)."""
    X = np.zeros((n_users, n_items), dtype=np.float32)
    X[train_users, train_items] = 1.0
    G = X.T.astype(np.float64) @ X
    G[np.diag_indices(n_items)] += lam
    P = np.linalg.inv(G)
    B = -P / np.diag(P)
    np.fill_diagonal(B, 0.0)
    return B.astype(np.float32)


def prune(B: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` largest weights by magnitude: (indices [n, k], values [n, k])."""
    idx = (
        np.argpartition(-np.abs(B), k - 1, axis=1)[:, :k]
        if k < B.shape[1]
        else np.tile(np.arange(B.shape[1]), (len(B), 1))
    )
    return idx.astype(np.int64), np.take_along_axis(B, idx, axis=1)


def _ndcg(scores: np.ndarray, users: np.ndarray, split) -> float:
    from fusionrec.evaluation import evaluate_ranking

    row = {int(u): r for r, u in enumerate(users)}
    valid = split.valid[split.valid["user_idx"].isin(users)]
    return evaluate_ranking(
        lambda us: scores[[row[int(u)] for u in us]], valid, [split.train], split.n_users, split.n_items, ks=(20,)
    ).ndcg[20]


def valid_users(split, seed: int) -> np.ndarray:
    """The validation users the choices are made on: all of them, or a random ``VALID_USERS``, sorted."""
    users = np.unique(split.valid["user_idx"].to_numpy())
    if len(users) > VALID_USERS:
        users = np.sort(np.random.default_rng(seed).choice(users, VALID_USERS, replace=False))
    return users


def fit_item_item(
    model, split, hist: torch.Tensor, hmask: torch.Tensor, network_scores, *, seed: int = 0, device: str = "cpu"
) -> dict[str, float]:
    """Fit the model's item-item term in place (``model.ii_*`` buffers) and say what was chosen.

    ``network_scores(users)`` gives the two towers' scores; the term is chosen on ``split.valid``.
    """
    k = model.ii_index.shape[1]
    if k == 0 or len(split.valid) == 0:
        return {}
    users = valid_users(split, seed)
    u = torch.from_numpy(users)
    base = np.asarray(network_scores(users), dtype=np.float32)
    tu, ti = split.train["user_idx"].to_numpy(), split.train["item_idx"].to_numpy()
    network = _ndcg(base, users, split)
    best = (network, 0.0, DEFAULT_LAMBDA, None)  # (combined NDCG, weight, ridge, (index, value))
    lambdas = LAMBDAS if split.n_items <= LAMBDA_SEARCH_UP_TO else (DEFAULT_LAMBDA,)
    for lam in lambdas:  # the ridge and the weight together, by the combined validation NDCG@20
        index, value = prune(ease(tu, ti, split.n_users, split.n_items, lam), k)
        model.ii_index.copy_(torch.from_numpy(index))
        model.ii_value.copy_(torch.from_numpy(value))
        model.ii_weight.fill_(1.0)
        with torch.inference_mode():
            term = model.item_item(hist[u].to(device), hmask[u].to(device)).float().cpu().numpy()
        combined = {w: _ndcg(base + w * term, users, split) for w in WEIGHTS}
        w = max(combined, key=combined.get)  # the smallest of equally good weights
        ndcg = combined[w]
        log.info(
            "item-item: lambda %g, valid NDCG@20 %.4f at weight %g (%.4f on its own)",
            lam,
            ndcg,
            w,
            _ndcg(term, users, split),
        )
        if ndcg > best[0] or best[3] is None:
            best = (ndcg, w, lam, (index, value))
    ndcg, chosen, lam, (index, value) = best
    model.ii_index.copy_(torch.from_numpy(index))
    model.ii_value.copy_(torch.from_numpy(value))
    model.ii_weight.fill_(float(chosen))
    out = {
        "lambda": lam,
        "weight": float(chosen),
        "valid_ndcg@20_network": network,
        "valid_ndcg@20_with_item_item": ndcg if chosen else network,
    }
    log.info("item-item term: %s", out)
    return out


def fit_content_term(
    model, split, hist: torch.Tensor, hmask: torch.Tensor, scores, *, seed: int = 0, device: str = "cpu"
):
    """Choose the content term's weight (``model.cc_weight``) in place, on ``split.valid`` NDCG@20 added to
    ``scores(users)`` (the towers and the item-item term as fitted); then the item-item weight again beside
    it. Returns what was chosen ({} without the term)."""
    if not (model.config.content_term and model.modality_names) or len(split.valid) == 0:
        return {}
    users = valid_users(split, seed)
    u = torch.from_numpy(users)
    h, m = hist[u].to(device), hmask[u].to(device)
    with torch.inference_mode():
        content = model.content_term(h, m, weight=1.0).float().cpu().numpy()
        ii = model.item_item(h, m).float().cpu().numpy() if model.has_item_item else None
    base = np.asarray(scores(users), dtype=np.float32)  # with the item-item term at its fitted weight
    before = _ndcg(base, users, split)
    combined = {w: _ndcg(base + w * content, users, split) for w in CONTENT_WEIGHTS}
    weight = max(combined, key=combined.get)  # the smallest of equally good weights
    out = {"weight": float(weight), "valid_ndcg@20_before": before, "valid_ndcg@20_alone": _ndcg(content, users, split)}
    if ii is not None and weight != 0.0 and float(model.ii_weight) != 0.0:  # the item-item weight again, beside it
        w_ii = float(model.ii_weight)
        towers = base - ii  # item_item() carries its weight
        again = {x: _ndcg(towers + (x / w_ii) * ii + weight * content, users, split) for x in WEIGHTS}
        best = max(again, key=again.get)
        if again[best] > combined[weight]:
            model.ii_weight.fill_(float(best))
            out["item_item_weight"] = float(best)
            combined[weight] = again[best]
    model.cc_weight.fill_(float(weight))
    out["valid_ndcg@20_with_content"] = combined[weight]
    log.info("content term: %s", out)
    return out
