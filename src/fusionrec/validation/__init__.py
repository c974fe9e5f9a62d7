"""Data validation with Great Expectations: checks, error budgets, quarantine and report."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from fusionrec.config import ValidationSettings
from fusionrec.errors import ValidationFailed
from fusionrec.validation.runner import CheckResult, ValidationOutcome, validate

__all__ = ["CheckResult", "ValidationOutcome", "validate", "validate_dataset"]
log = logging.getLogger(__name__)


def validate_dataset(
    contract_path: str | Path, out: str | Path, cfg: ValidationSettings, *, progress: bool = True
) -> ValidationOutcome:
    """Read a dataset, validate it, and write the clean dataset with its report to ``out``.

    On success ``out`` is replaced in one rename by a folder holding the normalised dataset
    (see :class:`fusionrec.data.dataset.Dataset`), ``report.json``, ``report.html`` and
    ``quarantine.csv``. When a check exceeds its budget nothing is written to ``out``: the report goes
    to ``<out>.rejected/`` and the last good ``out``, if any, stays as it was.

    Raises:
        ConfigError, DatasetError: the contract or a file cannot be read.
        ValidationFailed: a check exceeded its error budget (one line per failing check).
    """
    from fusionrec.data.contract import load_contract
    from fusionrec.data.dataset import normalise
    from fusionrec.data.raw import read_raw
    from fusionrec.io import atomic_dir
    from fusionrec.validation.report import write_report

    out = Path(out)
    contract = load_contract(contract_path)
    outcome = validate(read_raw(contract), cfg, progress=progress)
    rejected = out.with_name(out.name + ".rejected")
    if not outcome.passed:
        with atomic_dir(rejected) as tmp:
            write_report(outcome, tmp, None)
        lines = "\n".join(f"  {r.summary()}" for r in outcome.failures())
        raise ValidationFailed(
            f"dataset {contract.name!r}: {len(outcome.failures())} check(s) over budget; nothing written to {out}; "
            f"report: {rejected / 'report.html'}\n{lines}"
        )
    dataset = normalise(outcome.clean)
    with atomic_dir(out) as tmp:
        dataset.save(tmp)
        write_report(outcome, tmp, dataset.summary())
    if rejected.exists():
        shutil.rmtree(rejected)  # a stale rejection no longer describes the data in `out`
    log.info("validated %s into %s", contract.name, out)
    return outcome
