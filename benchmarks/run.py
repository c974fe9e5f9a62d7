"""Usage: python benchmarks/run.py [--only NAME ...] [--list]   (what `make bench` runs)

Prepares what the benchmarks need and runs them one after another, each in a process of its own. Each
one writes its figures to ``build/bench/<name>.json``; at the end ``build/bench/summary.md`` has all of
them.

What is prepared, in ``artifacts/movielens-100k-mm/`` where the shared data is present, with progress
bars:

- the validated dataset (``validated/``);
- its embeddings (``embeddings/``), taken from the embedding cache ``make run`` filled where it can;
- the Feast tables (``features/``), registered and materialised into its online store.

The model registry (``models/``) comes from ``make run``. The benchmarks that serve its champion are
skipped, with a message, where it has none. Exits 1 when a benchmark fails; a skipped one is reported
with its reason and does not fail the run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = ROOT / ".." / "shared" / "data" / "movielens-100k-mm"
WORK = ROOT / "artifacts" / "movielens-100k-mm"
CONTRACT = ROOT / "configs" / "datasets" / "movielens-100k-mm.yaml"

# name -> (arguments, what it needs): "data" the shared movielens-100k-mm, "model" make run's champion,
# "redis" a redis-server binary, "gpu" a CUDA device. In the order they run: the quick ones first.
BENCHES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "synth_speed": ([], ()),
    "privacy_filter": ([], ()),
    "item_item": ([], ()),
    "item_item_scale": ([], ()),
    "topk": ([], ()),
    "online_lookup": ([], ("redis",)),
    "encoders": (["--repeats", "3"], ()),
    "accuracy": ([], ("data",)),
    "accuracy_sparse": (["--regime", "sparse"], ("data",)),
    "accuracy_synthetic": (["--regime", "synthetic"], ()),
    "pipeline": ([], ("data",)),
    "retrieval": ([], ("data", "model")),
    "retrieval_shop": (["--catalogue", "shop"], ()),
    "image_encoders": ([], ("data",)),
    "serving": ([], ("data", "model")),
    "drift": ([], ("data", "model")),
    "abuse": ([], ()),
    "scale": ([], ()),
}

SCRIPTS = {
    "accuracy_sparse": "accuracy",
    "accuracy_synthetic": "accuracy",
    "retrieval_shop": "retrieval",
}  # a benchmark whose script is another's, with its own options


def missing(needs: tuple[str, ...]) -> str | None:
    """Why a benchmark cannot run here (None: it can)."""
    if "data" in needs and not (DATA / "ratings.csv").exists():
        return f"the shared data is absent ({DATA.resolve()})"
    if "model" in needs and not (WORK / "models" / "champion.json").exists():
        return f"no champion in {WORK / 'models'}: run 'make run' first"
    if "redis" in needs and shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    if "gpu" in needs:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA device"
    return None


def fusionrec(*args: str) -> None:
    subprocess.run([str(BIN / "fusionrec"), *args], check=True)


def prepare() -> None:
    """The validated dataset, its embeddings and the Feast tables, where the shared data is present."""
    if not (DATA / "ratings.csv").exists():
        print(f"prepare: the shared data is absent ({DATA.resolve()}); the benchmarks that need it are skipped")
        return
    if not (WORK / "validated" / "dataset.json").exists():
        fusionrec("data", "validate", str(CONTRACT), "--out", str(WORK / "validated"))
    if not (WORK / "embeddings").is_dir():
        fusionrec("embed", str(WORK / "validated"), "--out", str(WORK / "embeddings"))  # reuses the cache
    if not (WORK / "features").is_dir():
        fusionrec(
            "features",
            "build",
            str(WORK / "validated"),
            "--embeddings",
            str(WORK / "embeddings"),
            "--out",
            str(WORK / "features"),
        )
    if not (WORK / "features" / "registry.db").exists():  # the store the serving benchmarks read
        fusionrec("features", "apply", "--data-dir", str(WORK / "features"))
        fusionrec("features", "materialize", "--data-dir", str(WORK / "features"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="Run these benchmarks only (make bench BENCH=name).")
    ap.add_argument("--list", action="store_true", help="List the benchmarks and what each needs.")
    args = ap.parse_args()
    unknown = sorted(set(args.only or []) - set(BENCHES))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHES)}")
        return 2
    chosen = [n for n in BENCHES if not args.only or n in args.only]
    if args.list:
        for n in chosen:
            print(f"{n:<16} needs: {', '.join(BENCHES[n][1]) or 'nothing'}")
        return 0
    if any("data" in BENCHES[n][1] or "model" in BENCHES[n][1] for n in chosen):
        prepare()
    failed, skipped = [], []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for n in chosen:
        argv, needs = BENCHES[n]
        why = missing(needs)
        if why:
            skipped.append(f"{n}: {why}")
            print(f"== {n}: skipped ({why})")
            continue
        print(f"== {n}", flush=True)
        t = time.perf_counter()
        script = ROOT / "benchmarks" / f"{SCRIPTS.get(n, n)}.py"
        done = subprocess.run([sys.executable, str(script), *argv], cwd=ROOT, env=env)
        print(
            f"== {n}: {'ok' if done.returncode == 0 else f'FAILED (exit {done.returncode})'} "
            f"in {time.perf_counter() - t:.0f} s",
            flush=True,
        )
        if done.returncode != 0:
            failed.append(n)
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "summary.py")], cwd=ROOT, check=True)
    for line in skipped:
        print(f"skipped {line}")
    if failed:
        print(f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
