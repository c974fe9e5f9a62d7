"""Usage: python benchmarks/suite.py

What `make test` runs, timed: `ruff format --check`, `ruff check`, then the whole pytest suite with a
JUnit report. Records how many tests passed, failed and were skipped, and how long the run took, as
build/bench/suite.json. Exits with pytest's status.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import record

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    for step in (["format", "--check", "."], ["check", "."]):
        if subprocess.run([str(BIN / "ruff"), *step], cwd=ROOT).returncode:
            return 1
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        t = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", "pytest", f"--junitxml={report}"], cwd=ROOT).returncode
        seconds = time.perf_counter() - t
        suite = ET.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests, failed = int(suite.get("tests")), int(suite.get("failures")) + int(suite.get("errors"))
    skipped = int(suite.get("skipped"))
    passed = tests - failed - skipped
    shared = (ROOT.parent / "shared").is_dir()
    where = "beside ../shared" if shared else "without ../shared"
    record.write(
        "suite",
        "make test",
        [
            record.Figure(
                "suite",
                f"the whole suite, {where}: ruff format and lint clean, then {passed} passed, {failed} failed, "
                f"{skipped} skipped in {seconds:.0f} s ({seconds / 60:.1f} min)",
                readme=f"the whole suite: {passed} passed, "
                f"{failed} failed, {skipped} skipped in {seconds / 60:.1f} min ({where})",
                value=seconds,
                bar="< 20 min",
                met=seconds < 1200 and failed == 0,
            )
        ],
        passed=passed,
        failed=failed,
        skipped=skipped,
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
