"""The README is the user's door: short, and its table of figures is the one the benchmarks' records
generate (benchmarks/summary.py), each figure with a command that exists."""

import json
import shlex
from pathlib import Path

import pytest

from tests.bench import benchmark_module

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _summary():
    return benchmark_module("summary")


def test_the_readme_table_is_the_one_the_kept_records_generate():
    summary = _summary()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = summary.readme_table(summary.records(summary.KEPT))
    assert summary.with_table(readme, table) == readme, "run: python benchmarks/summary.py --publish"
    assert len(table.splitlines()) > 2  # the table has rows


def test_every_kept_figure_names_a_command_that_exists_and_a_readme_line_is_in_its_record():
    summary = _summary()
    records = summary.records(summary.KEPT)
    assert records
    for r in records:
        words = shlex.split(r["command"])
        script = next((w for w in words if w.endswith(".py")), None)
        assert script is None or (ROOT / script).exists(), r["command"]
        assert words[0] in ("python", "pytest", "make", ".venv/bin/python"), r["command"]
        assert any(f.get("readme") for f in r["figures"]), r["benchmark"]
        json.dumps(r)  # plain JSON


def test_the_readme_is_a_door():
    assert len((ROOT / "README.md").read_bytes()) < 12_000


def test_a_record_says_how_long_its_benchmark_ran_and_the_summary_shows_it(tmp_path):
    import time

    record = benchmark_module("record")
    record.STARTED = time.monotonic() - 125  # a benchmark that started two minutes ago
    path = record.write("demo", "python benchmarks/demo.py", [record.Figure("k", "a figure")], out=tmp_path)
    written = json.loads(path.read_text(encoding="utf-8"))
    assert 125 <= written["seconds"] <= 135
    text = _summary().summary([written])
    assert "ran 2.1 min" in text or "ran 2.2 min" in text, text
