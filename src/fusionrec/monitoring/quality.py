"""Recommendation quality where feedback exists: what users did after they were served.

Feedback is the interactions pushed to Feast since the model was trained (``fusionrec.features.store.
push_interactions`` appends them to each user's online history): the items in a user's online history
that the model's training data does not hold for that user. Logged users are pseudonymised, so the
served model's users are pseudonymised with the same key to find theirs.

The figures come from Evidently's recsys metrics (the ones of ``RecsysPreset`` that need no item
features): Recall@k, NDCG@k, popularity bias (the mean popularity of what is recommended), novelty and
personalisation, over the latest recommendation each user got in the window.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fusionrec.monitoring.log import pseudonymise

METRICS = ("recall", "ndcg", "popularity_bias", "novelty", "personalization")


@dataclass
class Quality:
    """The quality figures of a window, and Evidently's snapshot of them."""

    users: int  # users with a recommendation in the window and feedback since
    k: int
    values: dict[str, float]
    snapshot: Any


def feedback_from_feast(store, pseudonyms: dict[str, str], seen: dict[str, set[str]]) -> pd.DataFrame:
    """The later interactions of the given users: items in their online history (Feast) that the model's
    training data does not have for them.

    Args:
        pseudonyms: pseudonym -> user id, for the users to look up.
        seen: user id -> the item ids the model was trained with for that user.

    Returns:
        Rows of (user: the pseudonym, item).
    """
    from fusionrec.features.store import online_user_features

    if not pseudonyms:
        return pd.DataFrame(columns=["user", "item"])
    by_id = {u: p for p, u in pseudonyms.items()}
    feats = online_user_features(store, list(by_id))
    rows = [
        (by_id[u], str(i))
        for u, hist in zip(feats.user_ids, feats.history)
        for i in dict.fromkeys(str(x) for x in hist)
        if i not in seen.get(u, set())
    ]
    return pd.DataFrame(rows, columns=["user", "item"])


def served_users(frame: pd.DataFrame, users: list[str], key: bytes) -> dict[str, str]:
    """Pseudonym -> user id for the model's users that appear in the logged window."""
    logged = set(frame["user"].dropna())
    out = {}
    for u in users:
        p = pseudonymise(u, key)
        if p in logged:
            out[p] = u
    return out


def evaluate(
    frame: pd.DataFrame,
    feedback: pd.DataFrame,
    train: pd.DataFrame,
    *,
    k: int = 10,
    min_users: int = 20,
    timestamp=None,
) -> Quality | None:
    """Evidently's recsys metrics for the window's latest recommendation per user against the feedback.

    Args:
        frame: logged records (``user``, ``kind``, ``items``, ``time``).
        feedback: (user, item) rows, users as pseudonyms.
        train: (user, item) rows the model was trained on (popularity and novelty are measured against it).

    Returns:
        None when fewer than ``min_users`` users have both a recommendation and feedback.
    """
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from evidently import DataDefinition, Dataset, Recsys, Report
    from evidently.metrics import NDCG, Novelty, Personalization, PopularityBiasMetric, RecallTopK

    recs = frame[frame["kind"].isin(["user", "history"]) & frame["user"].notna()].sort_values("time")
    recs = recs.drop_duplicates("user", keep="last")
    liked = feedback.groupby("user")["item"].agg(set)
    recs = recs[recs["user"].isin(liked.index)]
    if len(recs) < min_users:
        return None
    rows = []
    for user, items in zip(recs["user"], recs["items"]):
        top = [str(i) for i in items][:k]
        rows += [
            {"user": user, "item": i, "rank": float(r + 1), "target": float(i in liked[user])}
            for r, i in enumerate(top)
        ]
        rows += [{"user": user, "item": i, "rank": np.nan, "target": 1.0} for i in sorted(liked[user] - set(top))]
    ranking = [Recsys(user_id="user", item_id="item", target="target", prediction="rank", recommendations_type="rank")]
    current = Dataset.from_pandas(
        pd.DataFrame(rows),
        data_definition=DataDefinition(
            numerical_columns=["rank", "target"], categorical_columns=["user", "item"], ranking=ranking
        ),
    )
    trained = Dataset.from_pandas(
        train.assign(target=1.0, rank=1.0),
        data_definition=DataDefinition(
            numerical_columns=["rank", "target"], categorical_columns=["user", "item"], ranking=ranking
        ),
    )
    snap = Report([RecallTopK(k=k), NDCG(k=k), PopularityBiasMetric(k=k), Novelty(k=k), Personalization(k=k)]).run(
        current, None, additional_data={"current_train_data": trained}, timestamp=timestamp, tags=["quality"]
    )
    values = {}
    for m in snap.dict()["metrics"]:
        kind = m["config"]["type"].rsplit(":", 1)[-1]
        v = m["value"]
        if isinstance(v, dict):  # a value per rank: the one at k
            v = list(v["value"].values())[-1]
        values[
            {
                "RecallTopK": "recall",
                "NDCG": "ndcg",
                "PopularityBiasMetric": "popularity_bias",
                "Novelty": "novelty",
                "Personalization": "personalization",
            }[kind]
        ] = float(v)
    return Quality(users=len(recs), k=k, values=values, snapshot=snap)
