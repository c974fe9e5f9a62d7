"""One turn of the monitoring loop: read the latest window of the inference log, measure its drift against
the serving model's reference, decide, start retraining when the policy fires, and leave everything where
people look: the HTML reports, the snapshots on the dashboard, the decision in ``decisions.jsonl``.

A window is compared with the served version's own answers to requests of the window's shapes about its
training users and, for what callers bring (new users' histories, queries by example), with the callers'
window an operator pinned (``fusionrec monitor reference``); never with the first traffic after a
deploy, so no caller decides what drift is
(``monitoring/reference.py``). The caller passes ``retrain``, the function that starts a run (the KFP
local runner here, a ``kfp.Client`` run on a cluster): the core does not know how pipelines are run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from fusionrec.config import Settings, monitoring_dir
from fusionrec.errors import FusionRecError
from fusionrec.monitoring import drift, policy, quality
from fusionrec.monitoring.log import read_window

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one turn found and did."""

    decision: policy.Decision
    result: drift.DriftResult | None
    reports: list[Path] = field(default_factory=list)


def expire(settings: Settings, now: datetime | None = None) -> list[Path]:
    """Delete the inference log's hour partitions and the pinned callers' window older than
    ``monitoring.retention_days`` (the model's own answers are drawn from its version); return what went."""
    import shutil

    from fusionrec.monitoring.log import hour_of

    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(days=settings.monitoring.retention_days)
    logs = monitoring_dir(settings) / "logs"
    gone = []
    for part in sorted(logs.glob("hour=*")) if logs.is_dir() else []:
        hour = hour_of(part.name)
        if hour is not None and hour + timedelta(hours=1) <= cutoff:
            shutil.rmtree(part, ignore_errors=True)
            gone.append(part)
    references = monitoring_dir(settings) / "reference"  # the pinned callers' window: as private as the log
    for ref in sorted(p for p in references.iterdir() if p.is_file()) if references.is_dir() else []:
        if datetime.fromtimestamp(ref.stat().st_mtime, timezone.utc) <= cutoff:
            ref.unlink(missing_ok=True)
            gone.append(ref)
    if gone:
        log.info(
            "monitor: %d inference-log hours and references older than %.0f days deleted",
            len(gone),
            settings.monitoring.retention_days,
        )
    return gone


def pin_reference(settings: Settings, start: datetime, end: datetime) -> Path:
    """Keep the new-user (history) and query records of a window of logged traffic (``start`` to ``end``, an
    operator's choice: the window is theirs to vouch for) as the callers' reference.

    Raises:
        FusionRecError: the served model cannot be read, or fewer than ``min_records`` such records.
    """
    from fusionrec.monitoring.reference import is_known, is_query, pin_callers, query_identities

    art = _served(settings, None)
    if art is None:
        raise FusionRecError(
            f"the served model at {settings.serving.storage_uri} cannot be read: its encoders "
            "name the callers' reference"
        )
    frame = read_window(monitoring_dir(settings) / "logs", start, end).frame
    identities = query_identities(art)
    same = frame["model_version"].map(_same_encoders(settings, identities)).astype(bool)
    frame = frame[~is_known(frame["kind"]) & (same | ~is_query(frame["kind"]))]
    if len(frame) < settings.monitoring.min_records:
        raise FusionRecError(
            f"not enough new-user and query requests for a reference between {start:%Y-%m-%dT%H:%M} "
            f"and {end:%Y-%m-%dT%H:%M}: {len(frame)} logged, at least "
            f"{settings.monitoring.min_records} needed"
        )
    return pin_callers(frame, identities, monitoring_dir(settings) / "reference", window=(start, end))


def _same_encoders(settings: Settings, identities: dict[str, str]) -> Callable[[object], bool]:
    """Whether a logged version's queries were made by the encoders ``identities`` (read once per version)."""
    from fusionrec.monitoring.reference import query_identities
    from fusionrec.registry import is_version

    known: dict[str, bool] = {}

    def same(version: object) -> bool:
        if not is_version(version):
            return False
        if version not in known:
            art = _served(settings, str(version))
            known[str(version)] = art is not None and art.version == version and query_identities(art) == identities
        return known[str(version)]

    return same


def _reference(folder: Path, version: str | None, art):
    """What a window of ``version`` is compared with: the model's own answers (from its artifact ``art``)
    with the callers' pinned rows that serve it; and where they came from (None and why, when there is no
    reference at all)."""
    from fusionrec.monitoring.reference import ModelReference, pinned_callers, query_identities

    if version is None:
        return None, "no traffic"
    if art is None or art.version != version:
        return None, f"version {version} is not in the registry at serving.storage_uri, so its reference cannot be read"
    callers, why = pinned_callers(folder / "reference", query_identities(art), version)
    return ModelReference(art, callers), why


def _served(settings: Settings, version: str | None):
    """The artifact of the logged model version in the served registry (the champion when that version is not
    there; None when the registry cannot be read)."""
    try:
        from fusionrec.artifact import load_artifact
        from fusionrec.registry import resolve_version

        path = Path(resolve_version(settings.serving.storage_uri, settings.paths.cache))
        if version and (path.parent / version).is_dir():
            path = path.parent / version
        return load_artifact(path)
    except Exception as e:  # the popularity and quality signals are then not evaluated; the rest is
        log.warning(
            "monitor: the served model at %s could not be read (%s: %s)",
            settings.serving.storage_uri,
            type(e).__name__,
            e,
        )
        return None


def _popularity(art) -> dict[str, float] | None:
    """Training interactions per item id of the served model."""
    if art is None:
        return None
    ids = art.items.sort_values("item_idx")["item_id"].astype(str).to_numpy()
    return dict(zip(ids, art.popularity.astype(float)))


def _quality(settings: Settings, art, frame: pd.DataFrame, timestamp) -> quality.Quality | None:
    """Recall, NDCG, popularity bias, novelty and personalisation against the feedback in Feast, when the
    feature store is there and enough served users have some."""
    mon = settings.monitoring
    if art is None or not (Path(settings.features.data_dir) / "registry.db").exists():
        return None
    try:
        from fusionrec.features.store import feature_store
        from fusionrec.monitoring.log import log_key, pseudonymise

        key = log_key(mon, monitoring_dir(settings), create=settings.profile == "local")
        users = art.users.sort_values("user_idx")["user_id"].astype(str).to_numpy()
        items = art.items.sort_values("item_idx")["item_id"].astype(str).to_numpy()
        pseudonyms = quality.served_users(frame, list(users), key)
        if len(pseudonyms) < mon.quality_min_users:
            return None
        index = {u: n for n, u in enumerate(users)}
        seen = {u: set(items[art.seen(index[u])]) for u in pseudonyms.values()}
        feedback = quality.feedback_from_feast(
            feature_store(settings.features, settings.features.data_dir), pseudonyms, seen
        )
        rows = np.repeat(np.arange(len(users)), np.diff(art.seen_indptr))
        train = pd.DataFrame({"user": [pseudonymise(users[r], key) for r in rows], "item": items[art.seen_indices]})
        return quality.evaluate(
            frame, feedback, train, k=mon.quality_k, min_users=mon.quality_min_users, timestamp=timestamp
        )
    except Exception as e:  # the feature store down: drift is still evaluated
        log.warning("monitor: no recommendation quality this window (%s: %s)", type(e).__name__, str(e)[:200])
        return None


def run_once(
    settings: Settings,
    *,
    now: datetime | None = None,
    retrain: Callable[[policy.Decision], str] | None = None,
    dashboard: bool = True,
) -> Outcome:
    """Evaluate the window ending at ``now`` (default: the current time) and act on it."""
    from fusionrec.monitoring import dashboard as dash
    from fusionrec.monitoring.reports import write_reports
    from fusionrec.registry import is_version

    mon = settings.monitoring
    folder = monitoring_dir(settings)
    now = now or datetime.now(timezone.utc)
    expire(settings, now)
    start = now - timedelta(hours=mon.window_hours)
    window = read_window(folder / "logs", start, now)
    frame = window.frame
    frame = frame[frame["model_version"].map(is_version).astype(bool)]  # never a path from a record
    version = frame["model_version"].mode().iloc[0] if len(frame) else None
    if version is not None:
        frame = frame[frame["model_version"] == version]  # a window that spans a deploy: the newer model's traffic
    history = policy.load_decisions(folder / "decisions.jsonl")
    art = _served(settings, version) if version else None
    reference, whence = _reference(folder, version, art)
    if reference is None:
        result = drift.DriftResult(records=len(frame), enough=False)
        decision = policy.decide(
            result, history, mon, now=now, window=(start, now), model_version=version, skipped_files=len(window.skipped)
        )
        if len(frame) >= mon.min_records:
            decision.reason = f"no reference for {version}: {whence}"
    else:
        covered = reference.covers(frame)
        current = frame[covered]
        if len(reference.callers):  # the pinned window is not its own window
            current = current[~current["request_id"].isin(set(reference.callers["request_id"]))]
        result = drift.evaluate(current, reference, mon, popularity=_popularity(art), timestamp=now)
        decision = policy.decide(
            result, history, mon, now=now, window=(start, now), model_version=version, skipped_files=len(window.skipped)
        )
        if not covered.all():
            left = frame.loc[~covered, "kind"].value_counts()
            decision.reason += (
                f"; {int(left.sum())} requests not compared ("
                f"{', '.join(f'{n} {k}' for k, n in left.items())}): {whence}"
            )
        measured = _quality(settings, art, current, now) if result.enough else None
        if measured is not None:
            result.snapshots["quality"] = measured.snapshot
            decision.quality = {
                f"{k}@{measured.k}" if k in ("recall", "ndcg") else k: round(v, 6) for k, v in measured.values.items()
            } | {"users": measured.users}
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
    elif decision.retrain:  # no runner (--no-retrain): nothing started, so nothing for the debounce to count
        decision.retrain = False
        decision.reason = decision.reason.replace("; retraining", "; would retrain (no runner given: recorded only)")
    policy.record(folder / "decisions.jsonl", decision)
    out = Outcome(decision, result)
    if result is not None and result.snapshots:
        out.reports = write_reports(folder / "reports", result, decision, now)
    if dashboard:
        dash.add_window(folder / "workspace", result, decision, now)
    return out
