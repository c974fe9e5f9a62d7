"""The retraining policy: from a window's drift to a decision, with a debounce, every decision recorded.

A window fires when any signal named in ``fire_on`` drifts (the embeddings of users and queries, and the
queries' match to the catalogue) or when the share of drifted signals reaches ``drift_share``, for
``consecutive`` evaluated windows in a row. A firing window within
``cooldown_h`` of the last retraining is debounced: recorded, not acted on. A window with too few records
is "not enough data" and never fires.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from fusionrec.config import MonitoringSettings
from fusionrec.monitoring.drift import DriftResult


@dataclass
class Decision:
    """One evaluated window and what was done about it (one line of ``decisions.jsonl``)."""

    at: str  # ISO time of the decision
    window_start: str
    window_end: str
    model_version: str | None
    records: int
    status: str  # "not enough data", "reference", "quiet", "drift"
    retrain: bool  # a retraining run was started
    debounced: bool  # drift, but within the cooldown of the last retraining
    reason: str
    drifted: list[str] = field(default_factory=list)
    share: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    run: str | None = None  # the retraining run, when one was started
    skipped_files: int = 0
    quality: dict[str, float] = field(default_factory=dict)  # recall@k, ndcg@k, ... where feedback exists


def load_decisions(path: str | Path) -> list[Decision]:
    """The recorded decisions, oldest first (a line that does not parse is skipped)."""
    p = Path(path)
    out = []
    for line in p.read_text().splitlines() if p.exists() else []:
        try:
            out.append(Decision(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return out


def record(path: str | Path, decision: Decision) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as f:
        f.write(json.dumps(asdict(decision)) + "\n")


def _drifting(result: DriftResult, settings: MonitoringSettings) -> bool:
    if any(s.name in settings.fire_on for s in result.drifted):
        return True
    return result.share is not None and result.share >= settings.drift_share


def decide(
    result: DriftResult,
    history: list[Decision],
    settings: MonitoringSettings,
    *,
    now: datetime,
    window: tuple[datetime, datetime],
    model_version: str | None,
    skipped_files: int = 0,
) -> Decision:
    """The decision for one window given the earlier ones (``history``, oldest first)."""
    base = dict(
        at=now.isoformat(),
        window_start=window[0].isoformat(),
        window_end=window[1].isoformat(),
        model_version=model_version,
        records=result.records,
        skipped_files=skipped_files,
        scores={s.name: round(s.score, 6) for s in result.evaluated},
        share=result.share,
        drifted=[s.name for s in result.drifted],
    )
    if not result.enough or not result.evaluated:
        return Decision(
            **base,
            status="not enough data",
            retrain=False,
            debounced=False,
            reason=f"not enough data: {result.records} records in the window, at least {settings.min_records} needed",
        )
    if not _drifting(result, settings):
        return Decision(
            **base,
            status="quiet",
            retrain=False,
            debounced=False,
            reason=f"no drift: {len(result.drifted)} of {len(result.evaluated)} signals drifted",
        )
    evaluated = [d for d in history if d.status in ("quiet", "drift")]
    earlier = evaluated[len(evaluated) - (settings.consecutive - 1) :] if settings.consecutive > 1 else []
    what = f"drift in {', '.join(base['drifted'])} ({len(result.drifted)} of {len(result.evaluated)} signals)"
    if len(earlier) < settings.consecutive - 1 or any(d.status != "drift" for d in earlier):
        return Decision(
            **base,
            status="drift",
            retrain=False,
            debounced=False,
            reason=f"{what}; waiting for {settings.consecutive} drifting windows in a row",
        )
    last = next((d for d in reversed(history) if d.retrain), None)
    if last is not None and now - datetime.fromisoformat(last.at) < timedelta(hours=settings.cooldown_h):
        return Decision(
            **base,
            status="drift",
            retrain=False,
            debounced=True,
            reason=f"{what}; debounced: the last retraining started at {last.at} (cooldown {settings.cooldown_h:g} h)",
        )
    return Decision(**base, status="drift", retrain=True, debounced=False, reason=f"{what}; retraining")
