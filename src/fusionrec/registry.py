"""The registry: numbered model versions, the champion among them, and the gate that decides which
version is in production.

Each version is an artifact folder (:mod:`fusionrec.artifact`, the one format) under ``versions/``;
``champion.json`` beside them names the one in production. A version number is allocated and the
champion changed under one file lock, so two runs that finish together never share a number or undo
each other's promotion.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fusionrec import metrics as metrics_file
from fusionrec.artifact import file_digests, write_artifact, write_checksums
from fusionrec.errors import ConfigError, DatasetError, FusionRecError
from fusionrec.io import atomic_write_text, file_lock, new_dir
from fusionrec.model import FusionRecModel
from fusionrec.train.request import MARGIN

PRIMARY = "ndcg@20"
VERSION = re.compile(r"v\d{4,9}")  # a version's name: the only form a logged or recorded version may take


def is_version(name: object) -> bool:
    """Whether ``name`` is a version's name (``vNNNN``): never a path, however it arrived."""
    return isinstance(name, str) and VERSION.fullmatch(name) is not None


SOURCE = "source.json"  # the digest of the candidate folder a version was registered from (a retry finds it)
LOCK = ".registry.lock"  # held while a version number is allocated or the champion changes


class ChampionChanged(FusionRecError):
    """The champion changed between a gate's decision and the promotion it was for (another run won)."""

    http_status = 409
    exit_code = 1


def _next_version(root: Path) -> str:
    versions = [int(m.group(1)) for p in (root / "versions").glob("v*") if (m := re.fullmatch(r"v(\d+)", p.name))]
    return f"v{(max(versions) + 1) if versions else 1:04d}"


def save_artifact(root: str | Path, model: FusionRecModel, **parts: Any) -> Path:
    """Write a new version folder under ``root/versions`` (atomically) and return its path.

    Takes the keyword arguments of :func:`fusionrec.artifact.write_artifact`.
    """
    root = Path(root)
    with file_lock(root / LOCK):
        version = _next_version(root)
        target = root / "versions" / version
        if target.exists():
            raise FileExistsError(str(target))
        return write_artifact(target, model, version=version, **parts)


@dataclass
class GateDecision:
    """What the champion/challenger gate decided and why."""

    promoted: bool
    challenger: str
    champion_before: str | None
    metric: str
    challenger_value: float
    champion_value: float | None
    margin: float
    reason: str


def champion(root: str | Path) -> Path | None:
    """The version in production, if any.

    Raises:
        DatasetError: champion.json is damaged or names something that is not a version.
    """
    f = Path(root) / "champion.json"
    if not f.exists():
        return None
    try:
        name = json.loads(f.read_text(encoding="utf-8"))["version"]
    except (ValueError, KeyError, TypeError):
        raise DatasetError(
            f"{f}: not a champion record (damaged?); make a version the champion again with "
            "'fusionrec deploy apply --model-version vNNNN --registry ...'"
        ) from None
    if not is_version(name):
        raise DatasetError(f"{f}: names {str(name)[:40]!r}, which is not a version (vNNNN)")
    return Path(root) / "versions" / name


def resolve_version(uri: str, cache_dir: str | Path) -> Path:
    """The version folder a storage URI names: a version folder itself, or a registry's champion.

    Raises:
        ConfigError: nothing servable there (no artifact, no champion).
    """
    from fusionrec.encoders.storage import resolve_checkpoint

    path = resolve_checkpoint(uri, cache_dir)
    if (path / "model.safetensors").exists():
        return path
    best = champion(path)
    if best is not None and best.exists():
        return best
    raise ConfigError(
        f"{uri}: neither a model version folder (model.safetensors) nor a registry with a champion "
        "(champion.json); train one with 'fusionrec train'"
    )


def judge(
    root: str | Path,
    challenger_metrics: dict[str, Any],
    margin: float = MARGIN,
    metric: str = PRIMARY,
    challenger: str = "candidate",
) -> GateDecision:
    """Decide, without writing anything, whether a challenger beats the champion of ``root`` by ``margin``.

    ``challenger_metrics`` is a version's ``metrics.json`` (``test`` holds ``metric``). The comparison is
    only fair on the same split protocol; a champion measured on another protocol is compared all the
    same but the reason says so.
    """
    root = Path(root)
    current = champion(root)
    new = metrics_file.of(challenger_metrics)
    value = new.figure(metric)
    if current is None or not current.exists():
        return GateDecision(True, challenger, None, metric, value, None, margin, "no champion yet")
    old = metrics_file.read(current)
    old_value = old.figure(metric)
    better = value >= old_value * (1 + margin)
    note = "" if old.same_protocol(new) else " (different split protocols)"
    reason = (
        f"{metric} {value:.4f} vs champion {old_value:.4f}: "
        f"{'beats' if better else 'does not beat'} it by the {margin:.0%} margin{note}"
    )
    return GateDecision(better, challenger, current.name, metric, value, old_value, margin, reason)


def promote(root: str | Path, version: Path, decision: GateDecision) -> None:
    """Make ``version`` the champion of ``root`` (one atomic write of champion.json), but only if the champion
    is still the one ``decision`` was made against (compare-and-swap, under the registry's lock).

    Raises:
        ChampionChanged: another version became the champion since the decision.
    """
    with file_lock(Path(root) / LOCK):
        _promote(Path(root), version, decision)


def _still_champion(root: Path, expected: str | None, what: str) -> None:
    """Raises: ChampionChanged: the champion of ``root`` is no longer ``expected`` (the lock is held)."""
    current = champion(root)
    if (current.name if current else None) != expected:
        raise ChampionChanged(
            f"the champion of {root} is now {current.name if current else None}, not {expected} as when {what}"
        )


def _promote(root: Path, version: Path, decision: GateDecision) -> None:
    _still_champion(root, decision.champion_before, f"{version.name} was judged; nothing was promoted")
    atomic_write_text(
        Path(root) / "champion.json",
        json.dumps(
            {
                "version": version.name,
                "metric": decision.metric,
                "value": decision.challenger_value,
                "previous": decision.champion_before,
                "promoted": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
            indent=2,
        ),
    )


def demote(root: str | Path, version: str) -> str | None:
    """Undo the promotion of ``version`` (its canary was rolled back): the champion it replaced is the
    champion again (none, if it was the first). Nothing changes when ``version`` is not the champion
    (another run has moved on). Returns the champion after.
    """
    root = Path(root)
    with file_lock(root / LOCK):
        current = champion(root)
        if current is None or current.name != version:
            return current.name if current else None
        previous = json.loads((root / "champion.json").read_text(encoding="utf-8")).get("previous")
        if previous and (root / "versions" / str(previous) / "model.safetensors").exists():
            value = metrics_file.read(root / "versions" / previous).figure(PRIMARY)
            _promote(
                root,
                root / "versions" / previous,
                GateDecision(True, previous, version, PRIMARY, value, None, 0.0, f"{version} rolled back"),
            )
            return previous
        (root / "champion.json").unlink()
        return None


def version_uri(registry: str | Path, version: str) -> str:
    """Where a version lives in a registry given as a folder or as a URI (``pvc://fusionrec-models``, the
    form KServe's storage initializer reads)."""
    return f"{str(registry).rstrip('/')}/versions/{version}"


def version_folder(root: str | Path, version: str) -> Path:
    """A complete version folder of the registry folder ``root``.

    Raises:
        ConfigError: no such version (or one without its model file).
    """
    folder = Path(version_uri(root, version))
    if not (folder / "model.safetensors").exists():
        raise ConfigError(f"{folder}: no such model version")
    return folder


def reinstate(root: str | Path, version: str) -> GateDecision:
    """Make an earlier version the champion again (a rollback), so that the next run's gate compares
    with the model in production.

    Raises:
        ConfigError: ``version`` is not a complete version of ``root``.
    """
    folder = version_folder(root, version)
    if not (folder / "metrics.json").exists():  # the gate needs its figure
        raise ConfigError(f"{folder}: no such model version (no metrics.json)")
    before = champion(root)
    value = metrics_file.read(folder).figure(PRIMARY)
    decision = GateDecision(
        True, version, before.name if before else None, PRIMARY, value, None, 0.0, f"rolled back to {version}"
    )
    promote(root, folder, decision)
    return decision


def gate(root: str | Path, challenger: Path, margin: float = MARGIN, metric: str = PRIMARY) -> GateDecision:
    """Promote ``challenger`` (a version of ``root``) only when :func:`judge` says it beats the champion.

    Otherwise the champion stays, untouched.
    """
    new = metrics_file.read(challenger)
    with file_lock(Path(root) / LOCK):  # judged and promoted without another promotion in between
        decision = judge(root, new, margin, metric, challenger=challenger.name)
        if decision.promoted:
            _promote(Path(root), challenger, decision)
    return decision


def register(
    root: str | Path, candidate: str | Path, *, champion_too: bool = False, decision: GateDecision | None = None
) -> Path:
    """Copy a candidate artifact folder into ``root/versions`` under the next version number.

    Under the registry's lock: the number is allocated and its folder made once (never replacing one); a
    candidate registered before (the same files, e.g. a retried step) gets its existing version back.
    With ``champion_too`` (and the gate's ``decision``) the new version also becomes the champion, only if
    the champion is still the one the decision was made against; the version folder is complete before
    champion.json names it, so serving never sees half a model.

    Raises:
        DatasetError: ``candidate`` is not a model artifact.
        ChampionChanged: ``champion_too`` and another version became the champion since the decision
            (nothing is registered then).
    """
    root, candidate = Path(root), Path(candidate)
    _check_candidate(candidate)
    if champion_too and decision is None:
        raise ConfigError("register(champion_too=True) needs the gate's decision")
    with file_lock(root / LOCK):
        if champion_too:
            _still_champion(root, decision.champion_before, "the candidate was judged; not registered")
        target = _copy_in(root, candidate)
        if champion_too:
            _promote(root, target, decision)
    return target


def register_judged(
    root: str | Path, candidate: str | Path, margin: float = MARGIN, *, only_if_better: bool = True
) -> tuple[Path | None, GateDecision]:
    """Judge a candidate against the champion and register it, under one hold of the registry's lock (no
    other run can promote in between): the new version becomes the champion when it beats the champion.
    With ``only_if_better`` a candidate that does not is not registered at all (``None``).

    Raises:
        DatasetError: ``candidate`` is not a model artifact.
    """
    root, candidate = Path(root), Path(candidate)
    _check_candidate(candidate)
    with file_lock(root / LOCK):
        decision = judge(root, metrics_file.read(candidate), margin)
        if only_if_better and not decision.promoted:
            return None, decision
        target = _copy_in(root, candidate)
        decision.challenger = target.name
        if decision.promoted:
            _promote(root, target, decision)
    return target, decision


def _check_candidate(candidate: Path) -> None:
    if not (candidate / "model.safetensors").exists() or not (candidate / "metrics.json").exists():
        raise DatasetError(f"{candidate}: not a model artifact (no model.safetensors / metrics.json)")


def _copy_in(root: Path, candidate: Path) -> Path:
    """The candidate as a new version folder of ``root`` (or the version it already is); the lock is held."""
    import hashlib
    import shutil

    digest = hashlib.sha256(json.dumps(file_digests(candidate), sort_keys=True).encode()).hexdigest()
    target = _registered(root, digest)
    if target is not None:
        return target
    version = _next_version(root)
    target = root / "versions" / version
    with new_dir(target) as tmp:
        shutil.copytree(candidate, tmp, dirs_exist_ok=True)
        metrics = metrics_file.read(tmp)
        label = metrics.version or ""
        metrics_file.write(tmp, metrics.model_copy(update={"version": version}))
        card = tmp / "model_card.md"
        if card.exists() and label:
            card.write_text(
                card.read_text(encoding="utf-8").replace(f"model {label} on", f"model {version} on", 1),
                encoding="utf-8",
            )
        (tmp / SOURCE).write_text(json.dumps({"candidate_sha256": digest}), encoding="utf-8")
        write_checksums(tmp)
    return target


def _registered(root: Path, digest: str) -> Path | None:
    """The version registered from the candidate folder whose files digest to ``digest``, if any."""
    for folder in sorted((root / "versions").glob("v*")):
        try:
            if json.loads((folder / SOURCE).read_text(encoding="utf-8")).get("candidate_sha256") == digest:
                return folder
        except (OSError, ValueError, AttributeError):
            continue
    return None
