"""Usage: python benchmarks/scale.py [--sizes 100000 1000000] [--work DIR] [--softmax auto]

Time and peak memory of every stage of the main job at growing sizes: synth, validate, embed, train
(to early stopping, with its own test evaluation) and evaluate (the pipeline's evaluate step: the
candidate beside MostPop on the same split). Each stage is the user's own command in a fresh process;
its peak memory is that process's maximum resident set (``wait4``). The synthetic set grows with the
interactions: 50 per user, one item per 100 interactions (10^6: 20,000 users, 10,000 items, the
README's set). Bar: a 10^6-interaction model trains to early stopping within 15 minutes on 2 cores.
With ``--softmax full`` the train stage takes the full softmax at every size (the peer: what training
cost before the sampled softmax).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import record

ROOT = Path(__file__).resolve().parents[1]
FUSIONREC = [sys.executable, "-m", "fusionrec"]
EVALUATE = """
import json, sys
from fusionrec.train.run import evaluate_candidate
e = evaluate_candidate(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], baselines=("mostpop",), progress=False)
print(json.dumps({k: {m: round(float(v), 4) for m, v in r.items() if m in ("recall@20", "ndcg@20")}
                  for k, r in e.results.items()}))
"""


def run(cmd: list[str], log: Path) -> tuple[float, float, str]:
    """Wall seconds, peak resident memory (GiB) of the process, and its stdout."""
    t0 = time.perf_counter()
    with open(log, "w") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
        out = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[2:6])} failed ({p.returncode}); see {log}")
    return seconds, usage.ru_maxrss / 2**20, out  # ru_maxrss is in KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--work", type=Path, default=ROOT / "artifacts" / "benchmarks" / "scale")
    ap.add_argument("--softmax", choices=("auto", "full", "sampled"), default="auto")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument(
        "--reuse",
        type=Path,
        help="take the validated dataset and embeddings from this folder (its "
        "validated/ and embeddings/) and time only train and evaluate (one size)",
    )
    args = ap.parse_args()

    rows = []
    for size in args.sizes:
        users, items = max(100, size // 50), max(50, size // 100)
        work = args.work / f"{size:.0e}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        data = args.reuse if args.reuse else work
        env = {"FUSIONREC__PATHS__CACHE": str(work / "cache")}  # a cold embedding cache: embed really embeds
        os.environ.update(env)
        stages = {
            "synth": FUSIONREC
            + [
                "data",
                "synth",
                "--users",
                str(users),
                "--items",
                str(items),
                "--interactions",
                str(size),
                "--seed",
                "0",
                "--out",
                str(work / "synth"),
                "--no-progress",
            ],
            "validate": FUSIONREC
            + ["data", "validate", str(work / "synth" / "dataset.yaml"), "--out", str(work / "validated")],
            "embed": FUSIONREC + ["embed", str(work / "validated"), "--out", str(work / "embeddings"), "--no-progress"],
            "train": FUSIONREC
            + [
                "train",
                str(data / "validated"),
                "--embeddings",
                str(data / "embeddings"),
                "--candidate",
                str(work / "candidate"),
                "--epochs",
                str(args.epochs),
                "--softmax",
                args.softmax,
                "--no-progress",
            ],
            "evaluate": [
                sys.executable,
                "-c",
                EVALUATE,
                str(data / "validated"),
                str(data / "embeddings"),
                str(work / "candidate"),
                str(work / "evaluation"),
            ],
        }
        print(f"\n{size:,} interactions ({users:,} users, {items:,} items)", flush=True)
        for stage, cmd in stages.items():
            if args.reuse and stage in ("synth", "validate", "embed"):
                print(f"  {stage:<9} reused from {args.reuse}", flush=True)
                continue
            seconds, gib, out = run(cmd, work / f"{stage}.log")
            note = ""
            if stage == "train":
                made = json.loads(out)
                note = f"test Recall@20 {made['test']['recall@20']:.4f}"
            elif stage == "evaluate":
                note = "; ".join(f"{k} Recall@20 {v['recall@20']:.4f}" for k, v in json.loads(out).items())
            rows.append((size, stage, seconds, gib, note))
            print(f"  {stage:<9}{seconds:>9.1f} s{gib:>8.2f} GiB  {note}", flush=True)
    print(f"\n{'interactions':>13} {'stage':<9}{'seconds':>10}{'peak GiB':>10}")
    for size, stage, seconds, gib, note in rows:
        print(f"{size:>13,} {stage:<9}{seconds:>10.1f}{gib:>10.2f}  {note}")
    stages_run = [
        {"interactions": s, "stage": st, "seconds": sec, "peak_gib": g, "note": n} for s, st, sec, g, n in rows
    ]
    (args.work / "summary.json").write_text(json.dumps(stages_run, indent=2))
    figures = []
    for size in args.sizes:
        at = {st: (sec, g) for s, st, sec, g, _ in rows if s == size}
        if "train" not in at:
            continue
        met = at["train"][0] <= 900 if size == 1_000_000 else None
        others = ", ".join(f"{st} {sec:.0f} s" for st, (sec, _) in at.items() if st != "train")
        figures.append(
            record.Figure(
                f"train_{size:.0e}".replace("+0", ""),
                f"the main job's stages at {size:,} interactions ({max(100, size // 50):,} users, "
                f"{max(50, size // 100):,} items), each the user's own command in a fresh process: train "
                f"({args.softmax} softmax, to early stopping, with the item-item fit and the test evaluation) "
                f"{at['train'][0]:.1f} s, {at['train'][1]:.2f} GiB peak",
                beside=others,
                readme=(
                    f"{size:,} interactions, training to early stopping: {at['train'][0]:.0f} s, "
                    f"{at['train'][1]:.2f} GiB peak"
                )
                if size == max(args.sizes)
                else None,
                value=at["train"][0],
                bar="15 min" if size == 1_000_000 else None,
                met=met,
            )
        )
        if size == 1_000_000:
            print(
                f"\n10^6 interactions: trained to early stopping in {at['train'][0] / 60:.1f} min "
                f"(bar 15 min: {'met' if met else 'NOT met'})"
            )
    sizes = " ".join(map(str, args.sizes))
    record.write("scale", f"python benchmarks/scale.py --sizes {sizes}", figures, stages=stages_run)


if __name__ == "__main__":
    main()
