"""Usage: python benchmarks/pipeline.py [--contract FILE] [--epochs N]

The training pipeline on the KFP local runner, end to end, wall time per step and in total: with a
cold embedding cache, then with a warm one (a new pipeline root, so no step comes from KFP's step
cache), beside the same core functions called directly in one process (the pipeline's own overhead).
Every run starts from an empty registry, so each one registers and deploys. Bars: cold under 15 min,
warm under 5 min, overhead under 20% of the direct run.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import record

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("validate", "embed", "collect", "features", "train", "evaluate", "gate", "register", "deploy")
STAMP = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) - INFO - (?:Executing task '(\w+)'|Task '(\w+)' finished)")


def step_times(log: str) -> dict[str, float]:
    """Each step's wall time from the local runner's log (parallel tasks of one step: first start to last end)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", log)
    starts, ends = defaultdict(list), defaultdict(list)
    for line in plain.splitlines():
        m = STAMP.match(line)
        if m:
            t = datetime.strptime(m.group(1), "%H:%M:%S.%f")
            (starts[m.group(2)] if m.group(2) else ends[m.group(3)]).append(t)
    return {s: (max(ends[s]) - min(starts[s])).total_seconds() for s in STEPS if starts[s] and ends[s]}


def run_pipeline(contract: str, work: Path, cache: Path, epochs: int, ports: tuple[int, int]) -> tuple[float, dict]:
    cmd = [
        sys.executable,
        "-m",
        "fusionrec",
        "pipeline",
        "run",
        "--local",
        "--contract",
        contract,
        "--registry",
        str(work / "models"),
        "--root",
        str(work / "root"),
        "--epochs",
        str(epochs),
        "--set",
        f"paths.cache={cache}",
        "--set",
        f"paths.artifacts={work / 'artifacts'}",
        "--set",
        f"serving.predictor_port={ports[0]}",
        "--set",
        f"serving.transformer_port={ports[1]}",
    ]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t
    if r.returncode:
        sys.exit(f"pipeline failed:\n{r.stderr[-3000:]}")
    stop_servers(work)
    return seconds, step_times(r.stdout + r.stderr)


def stop_servers(work: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "fusionrec", "serve", "--stop"],
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, "FUSIONREC__PATHS__ARTIFACTS": str(work / "artifacts")},
    )


def run_direct(contract: str, work: Path, cache: Path, epochs: int, ports: tuple[int, int]) -> tuple[float, dict]:
    """The pipeline's core calls, in one process, in the pipeline's order."""
    from fusionrec import metrics as metrics_file
    from fusionrec.config import settings_from
    from fusionrec.data.contract import load_contract
    from fusionrec.data.dataset import Dataset
    from fusionrec.encoders.pipeline import embed_to_folder, merge_embeddings
    from fusionrec.features.store import build_store
    from fusionrec.platform.deploy import deploy_version
    from fusionrec.registry import champion, judge, register
    from fusionrec.reports import gallery_html, sample_rows
    from fusionrec.train.request import TrainSpec
    from fusionrec.train.run import evaluate_candidate, train_candidate
    from fusionrec.validation import validate_dataset

    s = settings_from(
        {
            "paths": {"cache": str(cache), "artifacts": str(work / "artifacts")},
            "serving": {"predictor_port": ports[0], "transformer_port": ports[1]},
        }
    )
    times, t0 = {}, time.perf_counter()

    def timed(name, fn, *a, **k):
        t = time.perf_counter()
        out = fn(*a, **k)
        times[name] = times.get(name, 0.0) + time.perf_counter() - t
        return out

    data, emb, tables, model = work / "clean", work / "emb", work / "tables", work / "model"
    timed("validate", validate_dataset, contract, data, s.validation, progress=False)
    parts = []
    for m in load_contract(contract).modality_names:
        timed("embed", embed_to_folder, data, work / f"emb-{m}", s, modalities={m}, progress=False)
        parts.append(work / f"emb-{m}")
    timed("collect", merge_embeddings, parts, emb)
    timed("features", build_store, data, emb, tables, s.features)
    timed(
        "train",
        train_candidate,
        data,
        emb,
        TrainSpec(epochs=epochs),
        model,
        device=s.encoders.device,
        features_dir=tables,
        feature_settings=s.features,
        progress=False,
    )
    timed("evaluate", evaluate_candidate, data, emb, model, work / "eval", device=s.encoders.device)
    registry = work / "models"
    decision = timed("gate", judge, registry, metrics_file.read(model))
    ds = Dataset.load(data)
    timed("gate", lambda: gallery_html(ds, sample_rows(ds, model, champion(registry)), title="gallery"))
    version = timed("register", register, registry, model, champion_too=decision.promoted, decision=decision)
    timed(
        "deploy",
        deploy_version,
        s,
        registry=str(registry),
        version=version.name,
        target="local",
        features_dir=str(tables),
    )
    total = time.perf_counter() - t0
    stop_servers(work)
    return total, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = "configs/datasets/movielens-100k-mm.yaml"
    ap.add_argument("--contract", default=default)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--keep", action="store_true", help="Keep the working folders.")
    args = ap.parse_args()
    contract = str((ROOT / args.contract).resolve())
    if not Path(contract).exists():
        sys.exit(f"{contract}: no such contract (movielens-100k-mm needs ../shared/data)")
    base = Path(tempfile.mkdtemp(prefix="fusionrec-bench-pipeline-"))
    cache = base / "embedding-cache"
    ports = (18081, 18080)
    try:
        cold = run_pipeline(contract, base / "cold", cache, args.epochs, ports)
        warm = run_pipeline(contract, base / "warm", cache, args.epochs, ports)
        direct = run_direct(contract, base / "direct", cache, args.epochs, ports)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(f"training pipeline on {Path(args.contract).name}, {args.epochs} epochs at most, {os.cpu_count()} CPUs")
    print(f"{'step':<10} {'cold cache':>11} {'warm cache':>11} {'direct':>9}")
    for step in STEPS:
        print(
            f"{step:<10} {cold[1].get(step, 0):>10.1f}s {warm[1].get(step, 0):>10.1f}s {direct[1].get(step, 0):>8.1f}s"
        )
    print(f"{'total':<10} {cold[0]:>10.1f}s {warm[0]:>10.1f}s {direct[0]:>8.1f}s")
    overhead = warm[0] / direct[0] - 1
    print(
        f"cold {cold[0] / 60:.1f} min (bar < 15), warm {warm[0] / 60:.1f} min (bar < 5), "
        f"pipeline overhead over the direct run with a warm cache {overhead:+.0%} (bar < 20%)"
    )
    record.write(
        "pipeline",
        "python benchmarks/pipeline.py",
        [
            record.Figure(
                "pipeline",
                f"the training pipeline on the KFP local runner, {Path(args.contract).name}, end to end (validate to "
                f"deploy, {args.epochs} epochs at most): cold embedding cache {cold[0]:.0f} s; warm cache, no step "
                f"cache {warm[0]:.0f} s",
                f"the same core functions called directly in one process: {direct[0]:.0f} s (the pipeline's overhead "
                f"{overhead:+.0%})",
                f"training pipeline on the KFP local runner, validate to deploy: {cold[0]:.0f} s cold, {warm[0]:.0f} s "
                f"warm (direct {direct[0]:.0f} s: overhead {overhead:+.0%}, bar < 20%)",
                cold[0],
                "cold < 15 min, warm < 5 min",
                cold[0] < 900 and warm[0] < 300,
            ),
            record.Figure(
                "overhead",
                f"the pipeline's overhead over the direct run: {overhead:+.0%}",
                value=overhead,
                bar="< 20%",
                met=overhead < 0.20,
            ),
        ],
        steps={"cold": cold[1], "warm": warm[1], "direct": direct[1]},
    )


if __name__ == "__main__":
    main()
