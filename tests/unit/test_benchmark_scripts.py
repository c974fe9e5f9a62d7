"""Every benchmark a user can run starts: each script answers ``--help`` (so it imports, and its options
parse), and so does every command a published figure names, with its own options. The benchmarks
themselves take minutes to hours and run by hand (``make bench``); this catches the script that no
longer starts before a stranger finds it."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench import benchmark_module

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _scripts() -> list[str]:
    run = benchmark_module("run")
    named = {run.SCRIPTS.get(n, n) for n in run.BENCHES}
    return sorted(named | {"run", "suite", "summary"})


def _help(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("name", _scripts())
def test_a_benchmark_script_answers_help_without_running(name):
    done = _help([f"benchmarks/{name}.py"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: {name}.py"), done.stdout[:300]


def test_every_published_command_parses_its_options():
    summary = benchmark_module("summary")
    commands = sorted({r["command"] for r in summary.records(summary.KEPT)})
    assert commands
    for command in commands:
        words = shlex.split(command)
        if words[0] != "python":
            continue  # make and pytest commands are the suite's own
        done = _help(words[1:])
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert done.stdout.startswith("usage:"), (command, done.stdout[:300])
