"""Every deliberate breakage in tests/mutants.py still names code that exists, once: a refactor that moves
an anchor makes its mutant STALE, which a full run reports only after an hour; this says so at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import mutants as MUTANTS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mutant", MUTANTS.MUTANTS, ids=lambda m: m.name)
def test_each_mutants_anchor_is_in_its_file_once_and_the_breakage_changes_it(mutant):
    text = (REPO / mutant.file).read_text(encoding="utf-8")
    assert text.count(mutant.old) == 1, f"{mutant.file}: the anchor is there {text.count(mutant.old)} times"
    assert mutant.old != mutant.new


def test_the_ci_subset_names_mutants_that_exist():
    assert set(MUTANTS.CI_SUBSET) <= {m.name for m in MUTANTS.MUTANTS}
