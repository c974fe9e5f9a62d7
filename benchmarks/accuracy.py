"""Usage: python benchmarks/accuracy.py [--seeds 0 1 2] [--variants] [--epochs 40]

The accuracy bars on movielens-100k-mm (validated and embedded by `make run`, or by `fusionrec data
validate` and `fusionrec embed` into artifacts/movielens-100k-mm/), every model on the same splits in
the same run, the mean over seeds:

- warm (random 8:1:1 split): our Recall@20 and NDCG@20 beside the peers' (Cornac BPR, Cornac VBPR fed
  our image embeddings, our ID-only BPR-MF, EASE with its ridge chosen on validation, as ours is) and
  MostPop; bar: ours >= 1.03 x the best peer on both;
- cold (10% of items never trained on, ranked among themselves): our Recall@20 beside a random ranking
  of the cold items and MostPop; bar: >= 2.5 x random and above MostPop;
- the sampled softmax (what training takes above 5,000 items) on the same warm splits; bar: within 1%
  of the full softmax on both metrics.

With --variants also what each part brings, measured by leaving it out: the concat fusion, text only,
image only, no tabular side features, no item-item term (warm), no tabular (cold).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fusionrec.train.request import TrainSpec

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("cornac_bpr", "cornac_vbpr", "bpr_mf", "ease")
DIM = TrainSpec().dim  # every model's size: the training request's default


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--data", type=Path, default=ROOT / "artifacts" / "movielens-100k-mm")
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "benchmarks" / "accuracy")
    args = ap.parse_args()

    from fusionrec.data.dataset import Dataset
    from fusionrec.data.splits import make_split
    from fusionrec.encoders.pipeline import load_embeddings
    from fusionrec.train.compare import compare, write_comparison
    from fusionrec.train.loop import TrainConfig

    if not (args.data / "validated" / "dataset.json").exists():
        raise SystemExit(f"{args.data}: run 'make run' first (it validates and embeds movielens-100k-mm)")
    ds = Dataset.load(args.data / "validated")
    emb = load_embeddings(args.data / "embeddings")
    variants = ("concat", "text_only", "image_only", "no_tabular", "no_item_item") if args.variants else ()
    warm_models = ("fusion", "fusion_sampled", *variants, "mostpop", *PEERS)
    cold_models = ("fusion", *(("no_tabular",) if args.variants else ()), "random", "mostpop")
    warm: dict[str, list[dict]] = {}
    cold: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    for seed in args.seeds:
        cfg = TrainConfig(epochs=args.epochs, seed=seed)
        res = compare(ds, emb, make_split(ds, "random", seed=seed), models=warm_models, train_cfg=cfg, dim=DIM)
        for k, v in res.items():
            warm.setdefault(k, []).append(v)
        res = compare(ds, emb, make_split(ds, "cold_item", seed=seed), models=cold_models, train_cfg=cfg, dim=DIM)
        for k, v in res.items():
            cold.setdefault(k, []).append(v)
        print(f"seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)

    def mean(runs, key):
        return float(np.mean([r[key] for r in runs]))

    def std(runs, key):
        return float(np.std([r[key] for r in runs]))

    means = {
        name: {k: mean(runs, k) for k in runs[0] if isinstance(runs[0][k], (int, float))} for name, runs in warm.items()
    }
    write_comparison(means, args.out / "random", f"movielens-100k-mm, random 8:1:1, mean of seeds {args.seeds}")
    cold_means = {
        name: {k: mean(runs, k) for k in runs[0] if isinstance(runs[0][k], (int, float))} for name, runs in cold.items()
    }
    write_comparison(
        cold_means, args.out / "cold_item", f"movielens-100k-mm, cold-item split, mean of seeds {args.seeds}"
    )

    print(f"\nmovielens-100k-mm, random 8:1:1 split, mean (std) over seeds {args.seeds}; all models on the same splits")
    print(f"{'model':<14}{'Recall@20':>18}{'NDCG@20':>18}{'HitRate@20':>12}{'coverage':>10}{'train s':>9}")
    for name, runs in warm.items():
        print(
            f"{name:<14}{mean(runs, 'recall@20'):>11.4f} ({std(runs, 'recall@20'):.3f}){mean(runs, 'ndcg@20'):>11.4f} "
            f"({std(runs, 'ndcg@20'):.3f}){mean(runs, 'hit@20'):>12.4f}"
            f"{mean(runs, 'coverage'):>10.3f}{mean(runs, 'seconds'):>9.0f}"
        )
    best = {k: max((mean(warm[p], k), p) for p in PEERS if p in warm) for k in ("recall@20", "ndcg@20")}
    for k, (value, peer) in best.items():
        ratio = mean(warm["fusion"], k) / value
        print(f"ours / best peer ({peer}), {k}: {ratio:.3f} (bar 1.03: {'met' if ratio >= 1.03 else 'NOT met'})")
    for k in ("recall@20", "ndcg@20"):
        ratio = mean(warm["fusion_sampled"], k) / mean(warm["fusion"], k)
        print(f"sampled / full softmax, {k}: {ratio:.4f} (bar: within 1%: {'met' if ratio >= 0.99 else 'NOT met'})")
    print(
        f"fusion training throughput: {mean(warm['fusion'], 'samples_per_second'):,.0f} samples/s full softmax, "
        f"{mean(warm['fusion_sampled'], 'samples_per_second'):,.0f} sampled; {mean(warm['fusion'], 'seconds'):.0f} s "
        "per model"
    )
    print(f"\ncold-item split, mean over seeds {args.seeds}")
    print(f"{'model':<14}{'Recall@20':>18}{'NDCG@20':>18}")
    for name, runs in cold.items():
        print(
            f"{name:<14}{mean(runs, 'recall@20'):>11.4f} ({std(runs, 'recall@20'):.3f}){mean(runs, 'ndcg@20'):>11.4f} "
            f"({std(runs, 'ndcg@20'):.3f})"
        )
    r_ours, r_rand, r_pop = (mean(cold[m], "recall@20") for m in ("fusion", "random", "mostpop"))
    print(
        f"ours / random ranking of the cold items: {r_ours / max(r_rand, 1e-12):.2f} (bar 2.5: "
        f"{'met' if r_ours >= 2.5 * r_rand else 'NOT met'}); above MostPop ({r_pop:.4f}): "
        f"{'met' if r_ours > r_pop else 'NOT met'}"
    )
    (args.out / "summary.json").write_text(
        json.dumps({"random": means, "cold_item": cold_means, "seeds": args.seeds}, indent=2, default=float)
    )


if __name__ == "__main__":
    main()
