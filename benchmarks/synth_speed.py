"""Usage: python benchmarks/synth_speed.py [--users 20000] [--items 10000] [--interactions 1000000]

Times the synthetic generator at scale and, in the same run, the floor: writing files of the same
size (interactions Parquet, item CSV, blank JPEGs) without any sampling or drawing. Then times
validation of the generated dataset.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import record


def floor(folder: Path, users: int, items: int, interactions: int, size: int) -> float:
    from PIL import Image

    t = time.perf_counter()
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    blank = Image.new("RGB", (size, size), (128, 128, 128))
    for k in range(items):
        blank.save(folder / "images" / f"{k}.jpg", format="JPEG", quality=90)
    pd.DataFrame({"item_id": [f"item-{k:06d}" for k in range(items)], "text": ["x" * 120] * items}).to_csv(
        folder / "items.csv"
    )
    pd.DataFrame({"user_id": [f"user-{k:07d}" for k in range(users)]}).to_csv(folder / "users.csv")
    pd.DataFrame(
        {
            "user_id": rng.integers(0, users, interactions).astype(str),
            "item_id": rng.integers(0, items, interactions).astype(str),
            "rating": rng.integers(1, 6, interactions),
            "timestamp": rng.integers(0, 10**9, interactions),
        }
    ).to_parquet(folder / "i.parquet")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--interactions", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from fusionrec.config import Settings
    from fusionrec.data.synth import SynthConfig, generate
    from fusionrec.validation import validate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = SynthConfig(users=args.users, items=args.items, interactions=args.interactions, seed=args.seed)
        t = time.perf_counter()
        result = generate(cfg, tmp / "synth", progress=False)
        synth_s = time.perf_counter() - t
        floor_s = floor(tmp / "floor", args.users, args.items, args.interactions, cfg.image_size)
        t = time.perf_counter()
        validate_dataset(result.contract_path, tmp / "validated", Settings().validation, progress=False)
        validate_s = time.perf_counter() - t

    n = result.counts["interactions"]
    print(f"dataset: {args.users:,} users, {args.items:,} items, {n:,} interactions, seed {args.seed}")
    print(f"{'step':<28}{'seconds':>10}{'interactions/s':>18}")
    print(f"{'fusionrec data synth':<28}{synth_s:>10.1f}{n / synth_s:>18,.0f}")
    print(f"{'floor (write same files)':<28}{floor_s:>10.1f}{n / floor_s:>18,.0f}")
    print(f"{'fusionrec data validate':<28}{validate_s:>10.1f}{n / validate_s:>18,.0f}")
    print(f"target: synth under 120 s -> {'met' if synth_s < 120 else 'MISSED'}")
    size = f"{args.users:,} users, {args.items:,} items, {n:,} interactions"
    record.write(
        "synth_speed",
        "python benchmarks/synth_speed.py",
        [
            record.Figure(
                "synth",
                f"synthetic generator, {size}: {synth_s:.1f} s",
                f"floor, writing files of the same size: {floor_s:.1f} s",
                f"synthetic set of {n:,} interactions: {synth_s:.1f} s (floor {floor_s:.1f} s)",
                synth_s,
                "< 120 s",
                synth_s < 120,
            ),
            record.Figure("validate", f"validation of that dataset: {validate_s:.1f} s", value=validate_s),
        ],
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
