"""What every benchmark leaves behind: its figures as ``build/bench/<name>.json``.

A benchmark calls :func:`write` once at the end with its figures. Each figure is what it measured,
its value, the peer or floor measured beside it in the same run, and the bar where there is one.
``benchmarks/summary.py`` turns those files into ``build/bench/summary.md``. With ``--publish``, it
also copies them into ``docs/figures/`` and regenerates the README's table from them. So a figure in
the README is always the one its command printed.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "bench"
STARTED = time.monotonic()  # a benchmark imports this module first: its run time counts from here


@dataclass(frozen=True)
class Figure:
    """One measured figure.

    ``readme`` is the line the README's table shows (None: only the summary shows it); ``figure`` the
    whole cell, with its conditions; ``beside`` the peer's or floor's figure from the same run.
    """

    key: str
    figure: str
    beside: str = ""
    readme: str | None = None
    value: float | None = None
    bar: str | None = None
    met: bool | None = None


def mean(runs: list[dict], key: str) -> float:
    """The mean of one metric over the seeds' runs."""
    return float(sum(r[key] for r in runs) / len(runs))


def std(runs: list[dict], key: str) -> float:
    """Its spread over the seeds' runs (the population standard deviation, as numpy's default)."""
    m = mean(runs, key)
    return float((sum((r[key] - m) ** 2 for r in runs) / len(runs)) ** 0.5)


def commit() -> str:
    """The checkout's commit, marked when the working tree has uncommitted changes."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    return (head.stdout.strip() or "unknown") + ("+changes" if dirty.stdout.strip() else "")


COMMIT = commit()  # the code the run started with, whatever is committed while it runs


def write(name: str, command: str, figures: list[Figure], out: Path = OUT, **details) -> Path:
    """Write ``<out>/<name>.json``: the command that printed the figures, when and where it ran, how long
    it took, and the figures; ``details`` are kept beside them (settings chosen, per-seed values)."""
    record = {
        "benchmark": name,
        "command": command,
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": COMMIT,
        "machine": f"{platform.machine()}, {_cores()} cores, Python {sys.version.split()[0]}",
        "seconds": round(time.monotonic() - STARTED),  # how long the command ran, for whoever plans a re-run
        "figures": [asdict(f) for f in figures],
        "details": details,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, default=float) + "\n", encoding="utf-8")
    print(f"figures: {path}")
    return path


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0
