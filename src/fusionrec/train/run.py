"""The training workflow, once: what the CLI, the KFP components and the tests all call.

A training run has the same steps wherever it runs: read the dataset and its embeddings (or the
training set from Feast), split, fit, measure on the test part, write a *candidate* artifact; then
judge it against the champion and, when it wins, register it and make it the champion. The CLI's
``fusionrec train`` runs :func:`train_and_register`; the pipeline runs :func:`train_candidate`,
:func:`evaluate_candidate`, the gate (:func:`fusionrec.registry.judge`) and
:func:`fusionrec.registry.register` as separate steps.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fusionrec import metrics as metrics_file
from fusionrec.errors import ConfigError
from fusionrec.train.request import BASELINES, TrainSpec

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """A trained model written as an artifact folder that is not (yet) in a registry."""

    path: Path
    run_id: str
    test: dict[str, float]
    metrics: dict[str, Any]
    source: str  # where the training rows and item embeddings came from: "feast" or "embeddings"
    feast: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainOutcome:
    """``fusionrec train``'s result: the registered version and the gate's decision."""

    candidate: Candidate
    version: Path
    decision: Any  # registry.GateDecision

    def summary(self) -> dict[str, Any]:
        m = self.candidate.metrics
        return {
            "artifact": str(self.version),
            "run": self.candidate.run_id,
            "source": self.candidate.source,
            "test": {k: round(float(v), 4) for k, v in self.candidate.test.items()},
            "samples_per_second": round(m["samples_per_second"]),
            "promoted": self.decision.promoted,
            "gate": self.decision.reason,
        }


def train_candidate(
    dataset_dir: str | Path,
    embeddings_dir: str | Path,
    spec: TrainSpec,
    out: str | Path,
    *,
    device: str = "auto",
    checkpoints: str | Path | None = None,
    features_dir: str | Path | None = None,
    feature_settings=None,
    progress: bool = True,
) -> Candidate | None:
    """Train the fusion model on a split of a validated dataset and write the candidate artifact to ``out``.

    With ``features_dir`` (the Feast tables of ``fusionrec features build``) the training rows and every
    item's embeddings come from Feast's ``training`` feature service (point-in-time joins); otherwise from
    the embeddings folder. Checkpoints go under ``checkpoints/<run id>`` and an interrupted run resumes
    from them; they are removed once the candidate is written. Under ``torchrun`` (DDP) every rank
    trains its share and only rank 0 writes: the others return None.

    Raises:
        ConfigError: a named modality is missing, or a model setting is out of range.
        TrainingDiverged: the loss turned NaN (no artifact is written).
    """
    import tempfile

    import pandas as pd

    from fusionrec.artifact import write_artifact
    from fusionrec.data.dataset import Dataset
    from fusionrec.data.splits import make_split
    from fusionrec.encoders.pipeline import load_embeddings
    from fusionrec.train.compare import fit, fusion_config, model_card
    from fusionrec.train.loop import TrainConfig

    ds = Dataset.load(dataset_dir)
    emb = load_embeddings(embeddings_dir)
    cfg = fusion_config(
        ds,
        emb,
        list(spec.modalities) if spec.modalities else None,
        fusion=spec.fusion,
        dim=spec.dim,
        ranking_head=spec.ranking_head,
    )
    emb = {m: e for m, e in emb.items() if m in cfg.modalities}
    views = {m: e.views for m, e in emb.items() if e.views is not None}  # the search's (Feast's rows carry none)
    train_cfg = TrainConfig(epochs=spec.epochs, seed=spec.seed, device=device, softmax=spec.softmax)
    split = make_split(ds, spec.protocol, seed=spec.seed)
    run_id = spec.run_id(ds.name, list(cfg.modalities))
    source, feast_info = "embeddings", {}
    if features_dir is not None:
        from fusionrec.config import FeatureSettings
        from fusionrec.features.store import apply, feature_store, training_set

        with tempfile.TemporaryDirectory(prefix="fusionrec-feast-") as tmp:
            # a private registry: the features folder may be read-only (a pipeline's input artifact) and
            # the paths recorded in its own registry may be another machine's
            store = feature_store(
                feature_settings or FeatureSettings(), features_dir, registry=Path(tmp) / "registry.db"
            )
            apply(store, features_dir)
            fts = training_set(store, ds, split.train, emb)
        split, emb, source = replace(split, train=fts.train), fts.embeddings, "feast"
        feast_info = {
            "frame_rows": fts.frame_rows,
            "catalogue_rows": fts.catalogue_rows,
            "seconds": round(fts.seconds, 1),
        }
        log.info("training set from Feast: %s", feast_info)
    ckpt = Path(checkpoints) / run_id if checkpoints is not None else None
    with tempfile.TemporaryDirectory(prefix="fusionrec-curves-") as tmp:
        curves = Path(tmp) / "curves.png"
        result, test = fit(ds, emb, split, cfg, train_cfg, progress=progress, checkpoint_dir=ckpt, curves=curves)
        if _rank() != 0:  # under torchrun every rank trains; rank 0 alone writes the artifact
            return None
        encoders = {m: {"identity": e.identity, "dim": e.dim} for m, e in emb.items()}
        metrics = {
            "test": test,
            "valid": result.best_valid,
            "split": split.summary(),
            "best_epoch": result.best_epoch,
            "samples_per_second": result.samples_per_second,
            "train_seconds": result.seconds,
            "run": run_id,
            "source": source,
            **({"feast": feast_info} if feast_info else {}),
        }
        path = write_artifact(
            out,
            result.model,
            version="candidate",
            dataset=ds,
            encoders=encoders,
            training={
                "train": train_cfg.model_dump(),
                "spec": spec.model_dump(mode="json"),
                "split": split.summary(),
                "history": result.history,
            },
            history=result.user_history,
            history_mask=result.user_history_mask,
            metrics=metrics,
            card=model_card(ds.name, split, cfg, result, test, encoders),
            curves=curves,
            seen=pd.concat([split.train, split.valid, split.test]),
            views=views,
        )  # what serving excludes as seen
    if ckpt is not None:
        shutil.rmtree(ckpt, ignore_errors=True)  # the run finished: its checkpoints are no longer needed
    return Candidate(path, run_id, test, metrics_file.read(path).model_dump(exclude_none=True), source, feast_info)


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def train_and_register(
    dataset_dir: str | Path,
    embeddings_dir: str | Path,
    spec: TrainSpec,
    registry: str | Path,
    *,
    margin: float | None = None,
    device: str = "auto",
    features_dir: str | Path | None = None,
    feature_settings=None,
    progress: bool = True,
) -> TrainOutcome | None:
    """Train a candidate, register it as the next version, and promote it when the gate says so.

    Every trained model is kept as a version; only the gate moves the champion. ``margin``: the gate's
    (default :data:`MARGIN`).
    """
    from fusionrec.registry import register_judged

    registry = Path(registry)
    staging = registry / "staging"
    candidate = train_candidate(
        dataset_dir,
        embeddings_dir,
        spec,
        staging / "candidate",
        device=device,
        checkpoints=registry / "checkpoints",
        features_dir=features_dir,
        feature_settings=feature_settings,
        progress=progress,
    )
    if candidate is None:  # a rank other than 0 under torchrun
        return None
    try:
        version, decision = register_judged(
            registry, candidate.path, *([] if margin is None else [margin]), only_if_better=False
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TrainOutcome(candidate, version, decision)


def check_baselines(names) -> None:
    """Raises ConfigError naming the baselines that are not among :data:`fusionrec.train.models.PEERS`."""
    from fusionrec.train.models import PEERS

    bad = [b for b in names if b not in PEERS]
    if bad:
        raise ConfigError(f"baselines: {bad} unknown; choose from {list(PEERS)}")


@dataclass
class Evaluation:
    """Models compared on one split: test metrics by model name, and the comparison's title."""

    results: dict[str, dict[str, float]]
    title: str


def compare_on_split(
    dataset_dir: str | Path,
    embeddings_dir: str | Path,
    out: str | Path,
    *,
    spec: TrainSpec,
    models: tuple[str, ...],
    device: str = "auto",
    first: dict[str, dict[str, float]] | None = None,
    progress: bool = False,
) -> Evaluation:
    """Fit and measure ``models`` on the split ``spec`` names (its size, epochs and seed for each), after the
    rows of ``first``; write metrics.json, comparison.md and comparison.png to ``out``."""
    from fusionrec.data.dataset import Dataset
    from fusionrec.data.splits import make_split
    from fusionrec.encoders.pipeline import load_embeddings
    from fusionrec.train.compare import compare, write_comparison
    from fusionrec.train.loop import TrainConfig

    ds = Dataset.load(dataset_dir)
    split = make_split(ds, spec.protocol, seed=spec.seed)
    results = dict(first or {})
    results.update(
        compare(
            ds,
            load_embeddings(embeddings_dir),
            split,
            models=models,
            dim=spec.dim,
            train_cfg=TrainConfig(epochs=spec.epochs, seed=spec.seed, device=device),
            progress=progress,
        )
    )
    title = f"{ds.name}, {split.protocol} split, seed {split.seed}"
    write_comparison(results, Path(out), title)
    return Evaluation(results, title)


def evaluate_candidate(
    dataset_dir: str | Path,
    embeddings_dir: str | Path,
    candidate: str | Path,
    out: str | Path,
    *,
    baselines: tuple[str, ...] | None = None,
    device: str = "auto",
    progress: bool = False,
) -> Evaluation:
    """Measure the baselines (default :data:`fusionrec.train.request.BASELINES`) on the split the candidate was
    trained on and write the comparison to ``out``.

    The candidate's own test metrics come from its artifact (not retrained); each baseline is fitted on
    the same training rows and measured the same way (full ranking, seen items excluded), with the
    candidate's size, epochs and seed.
    """
    baselines = BASELINES if baselines is None else baselines
    check_baselines(baselines)
    candidate = Path(candidate)
    metrics = metrics_file.read(candidate)
    train = json.loads((candidate / "training.json").read_text(encoding="utf-8"))["train"]
    dim = json.loads((candidate / "config.json").read_text(encoding="utf-8"))["dim"]
    spec = TrainSpec(protocol=metrics.split.protocol, seed=metrics.split.seed, dim=dim, epochs=int(train["epochs"]))
    return compare_on_split(
        dataset_dir,
        embeddings_dir,
        out,
        spec=spec,
        models=tuple(baselines),
        device=device,
        first={"fusion (candidate)": dict(metrics.test)},
        progress=progress,
    )
