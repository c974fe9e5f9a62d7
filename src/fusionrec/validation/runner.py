"""Run the checks with Great Expectations, apply the error budgets, split clean from quarantined."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fusionrec.config import ValidationSettings
from fusionrec.data.raw import LINE, RawTables
from fusionrec.errors import ConfigError
from fusionrec.validation.checks import (
    DEFAULT_BUDGETS,
    Check,
    Prepared,
    as_id,
    interactions_checks,
    items_checks,
    modality_checks,
    users_checks,
)

log = logging.getLogger(__name__)
EXAMPLES = 5


@dataclass
class CheckResult:
    """The outcome of one check: how many records failed it, against which budget."""

    key: str
    table: str
    column: str | None
    description: str
    action: str
    budget: float
    records: int
    failed: int
    passed: bool
    examples: list[dict[str, Any]] = field(default_factory=list)  # {line, value}
    file: str = ""

    @property
    def share(self) -> float:
        return self.failed / self.records if self.records else 0.0

    def summary(self) -> str:
        """One line that names the file, column and an offending value."""
        eg = ""
        if self.examples:
            e = self.examples[0]
            eg = f", e.g. value {e['value']!r} at line {e['line']}"
        where = f"{self.file}: " if self.file else ""
        col = f"column '{self.column}': " if self.column else ""
        return (
            f"{where}{col}{self.failed:,} of {self.records:,} records ({self.share:.2%}) fail "
            f"'{self.description}' [{self.key}]{eg}; budget {self.budget:.2%}"
        )


@dataclass
class ValidationOutcome:
    """Everything a validation run produced."""

    clean: RawTables
    quarantine: pd.DataFrame  # one row per rejected or masked record
    results: list[CheckResult]
    gx_results: dict[str, dict[str, Any]]  # table -> GX validation result (JSON-able)
    gx_suites: dict[str, dict[str, Any]]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def counts(self) -> dict[str, int]:
        """Failed-record count per check key."""
        return {r.key: r.failed for r in self.results}


def _budget_for(check: Check, overrides: dict[str, Any]) -> tuple[float, bool]:
    base = DEFAULT_BUDGETS.get(check.name, 0.0)
    for key in (f"{check.table}.{check.name}", check.key):
        o = overrides.get(key)
        if o is not None:
            if not o.enabled:
                return base, False
            if o.budget is not None:
                base = o.budget
    return base, True


def _known_keys(prepared: list[Prepared]) -> set[str]:
    keys = set()
    for p in prepared:
        for c in p.checks:
            keys |= {c.key, f"{c.table}.{c.name}"}
    return keys


class _GX:
    """A throwaway in-memory Great Expectations context (no files, no analytics, no progress bars)."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        self.gx = gx
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        self.source = self.context.data_sources.add_pandas("fusionrec")

    def run(
        self, prepared: Prepared, checks: list[Check]
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
        """Validate one table; returns (suite JSON, result JSON with one entry per check, in order, and the
        lines of the records that fail each check, by check key)."""
        gx = self.gx
        name = prepared.table.replace(":", "_")
        asset = self.source.add_dataframe_asset(name=name)
        batch_def = asset.add_batch_definition_whole_dataframe(f"{name}_all")
        suite = self.context.suites.add(gx.ExpectationSuite(name=f"{name}_suite"))
        for check in checks:
            kind, kwargs = check.expectation
            expectation = getattr(gx.expectations, kind)(
                **kwargs,
                mostly=max(0.0, 1.0 - check.budget),
                meta={"check": check.key},
            )
            suite.add_expectation(expectation)
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name}_validation", data=batch_def, suite=suite)
        )
        result = definition.run(
            batch_parameters={"dataframe": prepared.frame},
            # COMPLETE: every failing record, identified by its line in the file
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": [LINE],
                "return_unexpected_index_query": False,
            },
        )
        by_key = {(r.expectation_config.meta or {}).get("check"): r.to_json_dict() for r in result.results}
        ordered = [by_key[c.key] for c in checks]
        lines = {}
        for check, d in zip(checks, ordered):
            found = d["result"].pop("unexpected_index_list", None) or []
            lines[check.key] = np.array([int(row[LINE]) for row in found], dtype=np.int64)
            d["result"].pop("unexpected_list", None)  # the report keeps GX's partial lists, not every record
            if check.sensitive:  # free text stays out of reports: PII may hide in it
                for k in ("partial_unexpected_list", "partial_unexpected_counts", "partial_unexpected_index_list"):
                    d["result"].pop(k, None)
        return suite.to_json_dict(), {"success": bool(result.success), "results": ordered}, lines


def _run_table(
    gx: _GX,
    prepared: Prepared,
    overrides: dict[str, Any],
    file: str,
    results: list[CheckResult],
    gx_results: dict,
    gx_suites: dict,
) -> dict[int, list[tuple[Check, Any]]]:
    """Run one table's checks; return line -> [(check, offending value)] for its failing records."""
    active = []
    for c in prepared.checks:
        budget, enabled = _budget_for(c, overrides)
        if enabled:
            active.append(dataclasses.replace(c, budget=budget))
    if not active:
        return {}
    suite_json, result_json, failed_lines = gx.run(prepared, active)
    gx_suites[prepared.table] = suite_json
    gx_results[prepared.table] = result_json
    failing: dict[int, list[tuple[Check, Any]]] = {}
    frame = prepared.frame.set_index(LINE, drop=False)
    n = len(prepared.frame)
    for check in active:
        lines = failed_lines[check.key]
        shown = check.column if check.column in frame.columns else check.expectation[1]["column"]
        values = frame.loc[lines, shown] if len(lines) else pd.Series(dtype=object)
        if check.sensitive:
            values = values.map(lambda v: None if v is None or v != v else f"<{len(str(v))} characters>")
        for line, value in zip(lines, values):
            failing.setdefault(int(line), []).append((check, value))
        failed = len(lines)
        results.append(
            CheckResult(
                key=check.key,
                table=check.table,
                column=check.column,
                description=check.description,
                action=check.action,
                budget=check.budget,
                records=n,
                failed=failed,
                passed=(failed <= check.budget * n + 1e-9),
                file=file,
                examples=[{"line": int(n), "value": _short(v)} for n, v in list(zip(lines, values))[:EXAMPLES]],
            )
        )
    return failing


def _short(value: Any, limit: int = 80) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _apply(
    prepared: Prepared, failing: dict[int, list[tuple[Check, Any]]], original: pd.DataFrame, quarantine: list[dict]
) -> pd.DataFrame:
    """Drop or mask the failing records of a table; log each in the quarantine list."""
    if not failing:
        return original
    out = original.set_index(LINE, drop=False)
    drop_lines = []
    for line, hits in failing.items():
        dropped = any(c.action == "drop" for c, _ in hits)
        masked = sorted({m for c, _ in hits if c.action == "mask" for m in c.mask})
        if dropped:
            drop_lines.append(line)
        else:
            for m in masked:
                if m in out.columns:
                    out.at[line, m] = None
        row = out.loc[line]
        quarantine.append(
            {
                "table": prepared.table,
                "line": line,
                "record_id": str(
                    row.get("item_id")
                    if prepared.table == "items"
                    else row.get("user_id")
                    if prepared.table == "users"
                    else f"{row.get('user_id')}|{row.get('item_id')}"
                    if prepared.table == "interactions"
                    else row.get("item_id")
                ),
                "action": "dropped" if dropped else "masked",
                "masked": ",".join(masked) if not dropped else "",
                "checks": ",".join(c.key for c, _ in hits),
                "reason": "; ".join(f"{c.description} (value {_short(v)!r})" for c, v in hits),
            }
        )
    out = out.drop(index=drop_lines)
    return out.reset_index(drop=True)


def _normalised_ids(prepared: Prepared, original: pd.DataFrame) -> pd.DataFrame:
    """The original table with its id columns replaced by the normalised ones the checks ran on."""
    out = original.copy()
    for col in ("user_id", "item_id", "split"):
        if col in out and col in prepared.frame:
            out[col] = prepared.frame[col].to_numpy()
    return out


def validate(
    raw: RawTables, cfg: ValidationSettings, *, progress: bool = True, now: float | None = None
) -> ValidationOutcome:
    """Validate a dataset as read; return clean tables, the quarantine table and every check's result.

    Items and users are checked first, so that referential integrity of the interactions is checked
    against the records that survive.

    Raises:
        ConfigError: the contract overrides a check that does not exist for this dataset.
    """
    start = time.perf_counter()
    contract = raw.contract
    overrides = dict(contract.checks)
    gx = _GX()
    results: list[CheckResult] = []
    gx_results: dict[str, Any] = {}
    gx_suites: dict[str, Any] = {}
    quarantine: list[dict] = []
    prepared_all: list[Prepared] = []

    def run(prepared: Prepared, original: pd.DataFrame, file: str) -> pd.DataFrame:
        prepared_all.append(prepared)
        failing = _run_table(gx, prepared, overrides, file, results, gx_results, gx_suites)
        return _apply(prepared, failing, _normalised_ids(prepared, original), quarantine)

    items = users = None
    known_items = known_users = None
    modalities = dict(raw.modalities)
    if raw.items is not None:
        has_image = "image" in raw.items
        p = items_checks(raw.items, raw.text_fields, has_image, contract.root_dir, cfg, progress)
        items = run(p, raw.items, raw.files.get("items", ""))
        known_items = set(items["item_id"].dropna())
    if raw.users is not None:
        users = run(users_checks(raw.users), raw.users, raw.files.get("users", ""))
        known_users = set(users["user_id"].dropna())
    if contract.format == "mmrec":
        rows = min(m.shape[0] for m, _ in raw.modalities.values())
        known_items = {str(i) for i in range(rows)}
    for name, (matrix, ids) in raw.modalities.items():
        if ids is not None:
            item_ids = [str(i) for i in ids]
        elif raw.items is not None:
            item_ids = [str(v) for v in as_id(raw.items["item_id"])]
        else:
            item_ids = [str(i) for i in range(matrix.shape[0])]
        p = modality_checks(name, matrix, item_ids)
        failing = _run_table(gx, p, overrides, raw.files.get(f"modality:{name}", ""), results, gx_results, gx_suites)
        prepared_all.append(p)
        if failing:
            bad_rows = np.array(sorted(failing)) - 1
            matrix = matrix.copy()
            matrix[bad_rows] = np.nan  # normalise() turns non-finite rows into masked rows
            for line, hits in failing.items():
                quarantine.append(
                    {
                        "table": p.table,
                        "line": line,
                        "record_id": item_ids[line - 1],
                        "action": "masked",
                        "masked": name,
                        "checks": hits[0][0].key,
                        "reason": hits[0][0].description,
                    }
                )
        modalities[name] = (matrix, ids)

    ispec = contract.interactions
    p = interactions_checks(
        raw.interactions,
        timestamp_unit=ispec.timestamp_unit,
        rating_range=ispec.rating_range,
        known_users=known_users,
        known_items=known_items,
        cfg=cfg,
        now=now,
    )
    interactions = run(p, raw.interactions, raw.files.get("interactions", ""))

    unknown = set(overrides) - _known_keys(prepared_all)
    if unknown:
        raise ConfigError(
            f"dataset contract {contract.name!r}: unknown check(s) {sorted(unknown)} in 'checks'; "
            f"known: {sorted(_known_keys(prepared_all))}"
        )

    clean = RawTables(
        contract, interactions, items, users, raw.text_fields, raw.side_item, raw.side_user, modalities, raw.files
    )
    qcols = ["table", "line", "record_id", "action", "masked", "checks", "reason"]
    qframe = pd.DataFrame(quarantine, columns=qcols)
    return ValidationOutcome(clean, qframe, results, gx_results, gx_suites, time.perf_counter() - start)
