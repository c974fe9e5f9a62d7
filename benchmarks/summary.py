"""Usage: python benchmarks/summary.py [--publish] [--check]

Collects the benchmarks' records and writes them as one table.

- Without options, it reads the records in ``build/bench/*.json`` (what ``make bench`` wrote). It writes
  ``build/bench/summary.md``: every figure, the peer or floor beside it, and the command that printed it.
- ``--publish`` copies those records into ``docs/figures/``, beside the ones already kept there. It then
  regenerates the README's table (between its ``bench:start`` and ``bench:end`` markers) from
  ``docs/figures/``.
- ``--check`` exits 1 when the README's table is not the one ``docs/figures/`` generates.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "bench"
KEPT = ROOT / "docs" / "figures"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
# the README's order: the benchmarks a user meets first at the top
ORDER = (
    "accuracy",
    "accuracy_sparse",
    "accuracy_synthetic",
    "scale",
    "pipeline",
    "retrieval",
    "retrieval_shop",
    "image_encoders",
    "serving",
    "topk",
    "online_lookup",
    "drift",
    "abuse",
    "fuzzing",
    "privacy_filter",
    "encoders",
    "synth_speed",
    "item_item",
    "item_item_scale",
    "bundle_scan",
    "mutants",
    "suite",
)


def records(folder: Path) -> list[dict]:
    """Every record in ``folder``, in the README's order."""
    found = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]
    rank = {n: k for k, n in enumerate(ORDER)}
    return sorted(found, key=lambda r: (rank.get(r["benchmark"], len(ORDER)), r["benchmark"]))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def readme_table(recs: list[dict]) -> str:
    """The README's table: one line per figure that has a ``readme`` line, with its command and date."""
    lines = ["| figure | command | measured |", "|---|---|---|"]
    for r in recs:
        when = r["measured"][:10] if r["measured"][:4].isdigit() else "before `make bench`"
        for f in r["figures"]:
            if f.get("readme"):
                lines.append(f"| {_cell(f['readme'])} | `{r['command']}` | {when} |")
    return "\n".join(lines)


def summary(recs: list[dict]) -> str:
    """Every figure of every record, with the conditions, the peer or floor and the bar."""
    out = ["# Benchmarks", ""]
    for r in recs:
        out += [
            f"## {r['benchmark']}",
            "",
            f"`{r['command']}` at {r['commit']}, {r['measured']} ({r['machine']}"
            + (f"; ran {r['seconds'] / 60:.1f} min)" if "seconds" in r else ")"),
            "",
            "| figure | beside it | bar |",
            "|---|---|---|",
        ]
        for f in r["figures"]:
            bar = "" if not f.get("bar") else f"{f['bar']}: {'met' if f.get('met') else 'not met'}"
            out.append(f"| {_cell(f['figure'])} | {_cell(f.get('beside') or '')} | {_cell(bar)} |")
        out.append("")
    return "\n".join(out)


def with_table(readme: str, table: str) -> str:
    """``readme`` with the text between the markers replaced by ``table``."""
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no {START} ... {END} block")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--publish",
        action="store_true",
        help="Keep build/bench's records in docs/figures and regenerate the README's table.",
    )
    ap.add_argument("--check", action="store_true", help="Exit 1 when the README's table is stale.")
    args = ap.parse_args()
    if args.check:
        want = with_table(README.read_text(encoding="utf-8"), readme_table(records(KEPT)))
        if want != README.read_text(encoding="utf-8"):
            print("README.md's table is not the one docs/figures/ generates: run benchmarks/summary.py --publish")
            return 1
        print("README.md's table matches docs/figures/")
        return 0
    built = records(BUILD)
    if built:
        (BUILD / "summary.md").write_text(summary(built), encoding="utf-8")
        print(f"summary: {BUILD / 'summary.md'} ({len(built)} benchmarks)")
    if args.publish:
        KEPT.mkdir(parents=True, exist_ok=True)
        for r in built:
            shutil.copyfile(BUILD / f"{r['benchmark']}.json", KEPT / f"{r['benchmark']}.json")
        README.write_text(with_table(README.read_text(encoding="utf-8"), readme_table(records(KEPT))), encoding="utf-8")
        print(f"README.md's table regenerated from {KEPT} ({len(records(KEPT))} benchmarks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
