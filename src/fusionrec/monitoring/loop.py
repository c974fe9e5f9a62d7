"""One turn of the monitoring loop: read the latest window of the inference log, measure its drift against
the serving model's reference, decide, start retraining when the policy fires, and leave everything where
people look: the HTML reports, the snapshots on the dashboard, the decision in ``decisions.jsonl``.

The reference of a model version is its first ``reference_records`` logged records (kept under
``reference/<version>.parquet`` once there are that many); ``fusionrec monitor reference`` pins another
window. The caller passes ``retrain``, the function that starts a run (the KFP local runner here, a
``kfp.Client`` run on a cluster): the core does not know how pipelines are run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pandas as pd

from fusionrec.config import Settings, monitoring_dir
from fusionrec.errors import FusionRecError
from fusionrec.monitoring import drift, policy
from fusionrec.monitoring.log import read_window

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one turn found and did."""

    decision: policy.Decision
    result: drift.DriftResult | None
    reports: list[Path] = field(default_factory=list)


def reference_path(folder: Path, version: str) -> Path:
    return folder / "reference" / f"{version}.parquet"


def pin_reference(settings: Settings, version: str, start: datetime | None = None, end: datetime | None = None) -> Path:
    """Keep a window's records of ``version`` (default: its first ``reference_records``) as its reference.

    Raises:
        FusionRecError: fewer records than ``min_records`` for that version in the window.
    """
    folder = monitoring_dir(settings)
    frame = read_window(folder / "logs", start, end).frame
    frame = frame[frame["model_version"] == version].sort_values("time")
    if start is None and end is None:
        frame = frame.head(settings.monitoring.reference_records)
    if len(frame) < settings.monitoring.min_records:
        raise FusionRecError(f"not enough data for a reference of {version}: {len(frame)} records logged, "
                             f"at least {settings.monitoring.min_records} needed")
    path = reference_path(folder, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path.with_suffix(".tmp"), index=False)
    path.with_suffix(".tmp").replace(path)
    return path


def _popularity(settings: Settings, version: str | None) -> dict[str, float] | None:
    """Training interactions per item id of the served model (None when the registry cannot be read)."""
    try:
        from fusionrec.registry import load_artifact, resolve_version

        path = resolve_version(settings.serving.storage_uri, settings.paths.cache)
        if version and (Path(path).parent / version).is_dir():
            path = Path(path).parent / version
        art = load_artifact(path)
        ids = art.items.sort_values("item_idx")["item_id"].astype(str).to_numpy()
        return dict(zip(ids, art.popularity.astype(float)))
    except Exception as e:  # the popularity signal is then not evaluated; the rest is
        log.warning("monitor: no item popularity from %s (%s: %s)", settings.serving.storage_uri, type(e).__name__, e)
        return None


def run_once(settings: Settings, *, now: datetime | None = None, retrain: Callable[[policy.Decision], str] | None = None,
             dashboard: bool = True) -> Outcome:
    """Evaluate the window ending at ``now`` (default: the current time) and act on it."""
    from fusionrec.monitoring import dashboard as dash
    from fusionrec.monitoring.reports import write_reports

    mon = settings.monitoring
    folder = monitoring_dir(settings)
    now = now or datetime.now(timezone.utc)
    start = now - timedelta(hours=mon.window_hours)
    window = read_window(folder / "logs", start, now)
    frame = window.frame
    version = frame["model_version"].mode().iloc[0] if len(frame) else None
    if version is not None:
        frame = frame[frame["model_version"] == version]  # a window that spans a deploy: the newer model's traffic
    history = policy.load_decisions(folder / "decisions.jsonl")
    ref_path = reference_path(folder, version) if version else None
    if ref_path is not None and not ref_path.exists():
        try:
            pin_reference(settings, version)
        except FusionRecError:
            pass
    if ref_path is None or not ref_path.exists():
        result = drift.DriftResult(records=len(frame), enough=False)
        decision = policy.decide(result, history, mon, now=now, window=(start, now), model_version=version,
                                 skipped_files=len(window.skipped))
        if len(frame) >= mon.min_records:
            decision.reason = f"not enough data for a reference of {version} yet"
    else:
        reference = pd.read_parquet(ref_path)
        current = frame[~frame["request_id"].isin(set(reference["request_id"]))]  # the reference is not its own window
        result = drift.evaluate(current, reference, mon, popularity=_popularity(settings, version), timestamp=now)
        decision = policy.decide(result, history, mon, now=now, window=(start, now), model_version=version,
                                 skipped_files=len(window.skipped))
    if window.skipped:
        decision.reason += f"; {len(window.skipped)} unreadable log files skipped"
    if decision.retrain and retrain is not None:
        try:
            decision.run = retrain(decision)
        except Exception as e:  # recorded, so that the dashboard and the next turn see it; the caller exits non-zero
            decision.retrain = False
            decision.reason += f"; the retraining run failed to start: {type(e).__name__}: {str(e)[:300]}"
            policy.record(folder / "decisions.jsonl", decision)
            raise
    elif decision.retrain:
        decision.reason += " (no retraining runner given: recorded only)"
    policy.record(folder / "decisions.jsonl", decision)
    out = Outcome(decision, result)
    if result is not None and result.snapshots:
        out.reports = write_reports(folder / "reports", result, decision, now)
    if dashboard:
        dash.add_window(folder / "workspace", result, decision, now)
    return out
