"""Usage: python benchmarks/item_item.py [--items 1682] [--neighbours 512] [--threads 1]

The item-item term's cost in serving and scoring: a batch of users with histories of a given length,
on the same inputs in the same run: always gathering every history item's neighbours (in slices of the
history; the peer) beside the model's own choice, which on catalogues up to 4,096 items keeps the dense
n x n matrix (made on the first call, kept until the neighbour rows change) and sums its rows over each
user's history (one bag per user) or, for more history entries than items, multiplies the history counts
by it. Prints milliseconds per call (median of 30, the first call's build left out) for each batch and
history length, and the path taken.
"""

from __future__ import annotations

import argparse
import statistics
import time

import record
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1682)  # movielens-100k-mm
    ap.add_argument("--neighbours", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)  # the predictor's torch_threads
    args = ap.parse_args()

    from fusionrec.model import FusionConfig, FusionRecModel, modeling

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = FusionRecModel(FusionConfig(n_users=1, n_items=args.items, dim=8, item_item=args.neighbours))
    k = model.ii_index.shape[1]
    model.ii_index.copy_(torch.stack([torch.randperm(args.items)[:k] for _ in range(args.items)]))
    model.ii_value.normal_()
    model.ii_weight.fill_(1.0)
    window = model.config.item_item_history

    def timed(batch: int, length: int, dense_up_to: int) -> float:
        modeling.DENSE_ITEM_ITEM = dense_up_to
        h = torch.randint(0, args.items, (batch, window))
        mask = torch.zeros(batch, window, dtype=torch.bool)
        mask[:, window - length :] = True
        runs = []
        with torch.inference_mode():
            model.item_item(h, mask)
            for _ in range(30):
                t = time.perf_counter()
                model.item_item(h, mask)
                runs.append(1000 * (time.perf_counter() - t))
        return statistics.median(runs)

    default = modeling.DENSE_ITEM_ITEM
    print(f"item-item term, {args.items:,} items, {k} neighbours, {args.threads} thread(s); ms per call (median of 30)")
    print(f"{'users':>6}{'history':>9}{'gather':>10}{'model':>10}  path")
    rows = []
    for batch, length in ((1, 106), (1, 590), (64, 106), (64, 590)):
        gather = timed(batch, length, 0)
        chosen = timed(batch, length, default)
        dense = (
            "gather" if args.items**2 > default else "dense bags" if batch * length < args.items else "dense product"
        )
        rows.append((batch, length, gather, chosen, dense))
        print(f"{batch:>6}{length:>9}{gather:>10.2f}{chosen:>10.2f}  {dense}")
    modeling.DENSE_ITEM_ITEM = default
    record.write(
        "item_item",
        "python benchmarks/item_item.py",
        [
            record.Figure(
                f"u{b}_h{n}",
                f"item-item term, {args.items:,} items, {b} user(s), history {n}: {c:.2f} ms a call ({d})",
                f"always gathering: {g:.2f} ms",
                readme=(
                    f"item-item term, {b} users with {n}-item histories: {c:.2f} ms a call (always gathering "
                    f"{g:.2f} ms)"
                )
                if (b, n) == (64, 590)
                else None,
                value=c,
            )
            for b, n, g, c, d in rows
        ],
        threads=args.threads,
        neighbours=k,
    )


if __name__ == "__main__":
    main()
