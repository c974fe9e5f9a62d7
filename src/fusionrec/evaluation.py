"""Full-ranking evaluation: Recall@K, NDCG@K, HitRate@K and catalogue coverage, training items excluded;
AUC and log loss for a ranking head. Every model is evaluated through one function on one split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

ScoreFn = Callable[[np.ndarray], np.ndarray]  # user indices [b] -> scores [b, n_items]


@dataclass
class Metrics:
    """Full-ranking metrics of one model on one split part."""

    recall: dict[int, float]
    ndcg: dict[int, float]
    hit: dict[int, float]
    coverage: float
    users: int

    def flat(self) -> dict[str, float]:
        out = {}
        for k in sorted(self.recall):
            out[f"recall@{k}"] = self.recall[k]
            out[f"ndcg@{k}"] = self.ndcg[k]
            out[f"hit@{k}"] = self.hit[k]
        out["coverage"] = self.coverage
        out["users"] = self.users
        return out


def _lists(frame: pd.DataFrame, n_users: int) -> list[np.ndarray]:
    out = [np.zeros(0, dtype=np.int64)] * n_users
    for u, g in frame.groupby("user_idx")["item_idx"]:
        out[int(u)] = g.to_numpy(dtype=np.int64)
    return out


def evaluate_ranking(
    score_fn: ScoreFn,
    target: pd.DataFrame,
    exclude: list[pd.DataFrame],
    n_users: int,
    n_items: int,
    ks: tuple[int, ...] = (10, 20),
    candidates: np.ndarray | None = None,
    batch: int = 512,
) -> Metrics:
    """Rank every candidate item (default: the whole catalogue) for each user with targets.

    Args:
        score_fn: user indices -> scores over all items.
        target: the (user_idx, item_idx) rows to find.
        exclude: parts whose items are removed from each user's ranking (training, and valid when testing).
        candidates: restrict the ranking to these items (the cold items, on a cold-item split).
    """
    targets = _lists(target, n_users)
    excluded = [_lists(e, n_users) for e in exclude]
    users = np.array([u for u in range(n_users) if len(targets[u])], dtype=np.int64)
    kmax = max(ks)
    allowed = None
    if candidates is not None:
        allowed = np.zeros(n_items, dtype=bool)
        allowed[candidates] = True
    discounts = 1.0 / np.log2(np.arange(2, kmax + 2))
    recall = {k: 0.0 for k in ks}
    ndcg = {k: 0.0 for k in ks}
    hit = {k: 0.0 for k in ks}
    shown = np.zeros(n_items, dtype=bool)
    for s in range(0, len(users), batch):
        ub = users[s : s + batch]
        scores = np.asarray(score_fn(ub), dtype=np.float64).copy()
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        for row, u in enumerate(ub):
            for ex in excluded:
                scores[row, ex[u]] = -np.inf
        top = (
            np.argpartition(-scores, kmax - 1, axis=1)[:, :kmax]
            if kmax < n_items
            else np.tile(np.arange(n_items), (len(ub), 1))
        )
        top_scores = np.take_along_axis(scores, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)
        for row, u in enumerate(ub):
            truth = targets[u]
            hits = np.isin(top[row], truth)
            for k in ks:
                h = hits[:k]
                recall[k] += h.sum() / len(truth)
                ideal = discounts[: min(len(truth), k)].sum()
                ndcg[k] += (discounts[:k] * h).sum() / ideal
                hit[k] += float(h.any())
            valid = np.isfinite(top_scores[row])
            shown[top[row][valid]] = True
    n = max(1, len(users))
    pool = int(allowed.sum()) if allowed is not None else n_items
    return Metrics(
        {k: v / n for k, v in recall.items()},
        {k: v / n for k, v in ndcg.items()},
        {k: v / n for k, v in hit.items()},
        float(shown.sum() / max(1, pool)),
        len(users),
    )


def auc_logloss(pos_logits: np.ndarray, neg_logits: np.ndarray) -> tuple[float, float]:
    """AUC (Mann-Whitney, a tie counts one half) and log loss L = -mean(y log p + (1 - y) log(1 - p)) for the
    ranking head."""
    from scipy.stats import rankdata

    scores = np.concatenate([pos_logits, neg_logits]).astype(np.float64)
    y = np.concatenate([np.ones(len(pos_logits)), np.zeros(len(neg_logits))])
    ranks = rankdata(scores, method="average")  # tied scores share their mean rank
    auc = (ranks[y == 1].sum() - len(pos_logits) * (len(pos_logits) + 1) / 2) / max(
        1, len(pos_logits) * len(neg_logits)
    )
    p = torch.sigmoid(torch.as_tensor(scores)).clamp(1e-7, 1 - 1e-7).numpy()
    logloss = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    return float(auc), logloss
