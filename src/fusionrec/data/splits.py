"""Evaluation splits over a dataset's positive interactions.

* ``random``: per user, 80/10/10 of their interactions to train/valid/test (users with fewer than 3
  keep them all in train);
* ``temporal``: per user, the last interaction to test, the one before to valid (leave-last-out);
* ``cold_item``: 10% of the items never appear in training: all their interactions are test; valid is
  a random 10% of the rest;
* ``given``: the split the dataset carries (MMRec ``x_label``: 0 train, 1 valid, 2 test), exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from fusionrec.errors import ConfigError

Protocol = Literal["random", "temporal", "cold_item", "given"]


@dataclass
class Split:
    """Positive (user_idx, item_idx, timestamp) rows per part, and the cold items when there are any."""

    protocol: str
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    n_users: int
    n_items: int
    cold_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    seed: int = 0

    def summary(self) -> dict[str, int | str]:
        return {
            "protocol": self.protocol,
            "train": len(self.train),
            "valid": len(self.valid),
            "test": len(self.test),
            "cold_items": len(self.cold_items),
            "seed": self.seed,
        }


def make_split(dataset, protocol: Protocol = "random", seed: int = 0, cold_share: float = 0.1) -> Split:
    """Split a dataset's positive interactions by ``protocol`` (deterministic per seed).

    Raises:
        ConfigError: ``given`` on a dataset without its own split, or an unknown protocol.
    """
    inter = dataset.interactions
    pos = inter[inter["label"] > 0]
    cols = ["user_idx", "item_idx", "timestamp"]
    rng = np.random.default_rng(seed)
    if protocol == "given":
        if "split" not in pos:
            raise ConfigError(
                f"dataset {dataset.name!r} carries no split (no 'split' role); use random, temporal or cold_item"
            )
        parts = [pos.loc[pos["split"] == k, cols].reset_index(drop=True) for k in (0, 1, 2)]
        return Split("given", *parts, dataset.n_users, dataset.n_items, seed=seed)
    pos = pos[cols].drop_duplicates(["user_idx", "item_idx"]).reset_index(drop=True)
    if protocol == "random":
        key = rng.random(len(pos))
        order = np.lexsort((key, pos["user_idx"].to_numpy()))
        p = pos.iloc[order].reset_index(drop=True)
        rank = p.groupby("user_idx").cumcount().to_numpy()
        size = p.groupby("user_idx")["item_idx"].transform("size").to_numpy()
        n_test = np.where(size >= 3, np.maximum(1, np.round(size * 0.1)), 0).astype(int)
        n_valid = np.where(size >= 3, np.maximum(1, np.round(size * 0.1)), 0).astype(int)
        part = np.where(rank < n_test, 2, np.where(rank < n_test + n_valid, 1, 0))
    elif protocol == "temporal":
        key = rng.random(len(pos))  # ties in time broken at random
        order = np.lexsort((key, pos["timestamp"].to_numpy(), pos["user_idx"].to_numpy()))
        p = pos.iloc[order].reset_index(drop=True)
        from_end = p.groupby("user_idx").cumcount(ascending=False).to_numpy()
        size = p.groupby("user_idx")["item_idx"].transform("size").to_numpy()
        part = np.where(size >= 3, np.where(from_end == 0, 2, np.where(from_end == 1, 1, 0)), 0)
    elif protocol == "cold_item":
        items = np.unique(pos["item_idx"].to_numpy())
        cold = np.sort(rng.choice(items, size=max(1, int(round(cold_share * len(items)))), replace=False))
        p = pos.reset_index(drop=True)
        is_cold = np.isin(p["item_idx"].to_numpy(), cold)
        part = np.where(is_cold, 2, np.where(rng.random(len(p)) < 0.1, 1, 0))
        split = Split(
            "cold_item",
            p.loc[part == 0].reset_index(drop=True),
            p.loc[part == 1].reset_index(drop=True),
            p.loc[part == 2].reset_index(drop=True),
            dataset.n_users,
            dataset.n_items,
            cold,
            seed,
        )
        return split
    else:
        raise ConfigError(f"unknown split protocol {protocol!r}; use random, temporal, cold_item or given")
    return Split(
        protocol,
        p.loc[part == 0].reset_index(drop=True),
        p.loc[part == 1].reset_index(drop=True),
        p.loc[part == 2].reset_index(drop=True),
        dataset.n_users,
        dataset.n_items,
        seed=seed,
    )
