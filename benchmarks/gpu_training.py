"""Usage: python benchmarks/gpu_training.py [--device cuda] [--epochs 2] [--interactions 1000000]

Training speed of the fusion model on a GPU (bf16 autocast), full softmax beside the sampled one, at the
scale of the README's 10^6-interaction synthetic set (20,000 users, 10,000 items; text 384-d, image
1280-d and tabular 56-d item features). The data are random with a planted taste per user (each user
draws items from one of 50 clusters), built here so that the script needs nothing but the package: it
measures speed (samples per second, seconds per epoch, peak device memory), and that training learns
(validation Recall@20 beside a random ranking's). Run it where a GPU is; `--device cpu` for the floor.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch


def planted(n_users: int, n_items: int, interactions: int, seed: int = 0):
    """A split and item features with a planted taste: a user's items come from their cluster, 9 in 10."""
    from fusionrec.data.splits import Split

    rng = np.random.default_rng(seed)
    clusters = 50
    item_cluster = np.arange(n_items) % clusters
    user_cluster = rng.integers(0, clusters, n_users)
    by_cluster = [np.flatnonzero(item_cluster == c) for c in range(clusters)]
    users = rng.integers(0, n_users, interactions)
    own = rng.random(interactions) < 0.9
    size = np.array([len(b) for b in by_cluster])
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    ordered = np.concatenate(by_cluster)
    c = user_cluster[users]
    mine = ordered[start[c] + (rng.random(interactions) * size[c]).astype(int)]
    items = np.where(own, mine, rng.integers(0, n_items, interactions))
    frame = pd.DataFrame({"user_idx": users, "item_idx": items, "timestamp": np.arange(interactions)})
    frame = frame.drop_duplicates(["user_idx", "item_idx"]).reset_index(drop=True)
    part = rng.choice(3, len(frame), p=[0.8, 0.1, 0.1])
    split = Split("random", *(frame[part == k].reset_index(drop=True) for k in range(3)), n_users, n_items)
    centres = {m: rng.normal(size=(clusters, d)) for m, d in (("text", 384), ("image", 1280), ("tabular", 56))}

    class Emb:
        def __init__(self, values):
            self.values, self.mask, self.dim = values.astype(np.float32), np.ones(len(values), bool), values.shape[1]

    emb = {m: Emb(c[item_cluster] + rng.normal(size=(n_items, c.shape[1]))) for m, c in centres.items()}
    return split, emb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--interactions", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=1024)
    args = ap.parse_args()

    from fusionrec.model import FusionConfig
    from fusionrec.train.loop import TrainConfig, train

    n_users, n_items = args.interactions // 50, args.interactions // 100
    t = time.perf_counter()
    split, emb = planted(n_users, n_items, args.interactions)
    print(
        f"{len(split.train):,} training rows, {n_users:,} users, {n_items:,} items (built in "
        f"{time.perf_counter() - t:.0f} s); device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""),
        flush=True,
    )
    cfg = FusionConfig(n_users=n_users, n_items=n_items, modalities={m: e.dim for m, e in emb.items()})
    random_recall = 20 / n_items  # a random top 20 holds about 20 / n of any user's held-out items
    print(f"{'softmax':<9}{'samples/s':>11}{'s/epoch':>9}{'peak GiB':>10}{'valid Recall@20':>17}")
    for softmax in ("full", "sampled"):
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        r = train(
            split,
            emb,
            cfg,
            TrainConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                device=args.device,
                softmax=softmax,
                patience=10**6,  # counts validation checks, several an epoch: never stop early here
                deterministic=False,
            ),
            progress=False,
        )
        # validation runs several times an epoch ("epoch" is fractional there): seconds per whole epoch are
        # the time to the last check over the epochs it covers
        epochs_done = float(r.history[-1]["epoch"])
        per_epoch = r.history[-1]["seconds"] / max(epochs_done, 1e-9)
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan")
        print(
            f"{softmax:<9}{r.samples_per_second:>11,.0f}{per_epoch:>9.1f}{peak:>10.2f}"
            f"{r.history[-1]['valid_recall@20']:>17.4f}",
            flush=True,
        )
    print(f"(a random ranking finds about {random_recall:.4f} of a user's validation items in its top 20)")


if __name__ == "__main__":
    main()
