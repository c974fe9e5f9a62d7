"""The training pipeline's steps as KFP components: validate, embed (per modality), collect, features,
train, evaluate, gate, register, deploy.

Each function parses its inputs, calls one core function of ``fusionrec`` and returns; data moves as
KFP artifacts (folders for datasets and models), reports as HTML/Markdown artifacts that render in the
Kubeflow UI. KFP copies each function's source into the component, so every import is inside it.
``settings`` is a step's settings overrides (``{"profile": "cluster", "encoders": {...}}``); secrets
(object storage, Redis) come from the environment, never from parameters.
"""

from typing import Callable, List

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output


def validate(contract: str, settings: dict, clean: Output[Dataset], report: Output[HTML], checks: Output[Metrics]):
    """Check the dataset against its contract (Great Expectations); fail the run when a check is over budget."""
    import shutil
    from pathlib import Path

    from fusionrec.config import settings_from
    from fusionrec.errors import ValidationFailed
    from fusionrec.io import log_metrics
    from fusionrec.validation import validate_dataset

    out = Path(clean.path)
    try:
        outcome = validate_dataset(contract, out, settings_from(settings).validation, progress=False)
    except ValidationFailed:
        rejected = out.with_name(out.name + ".rejected") / "report.html"
        if rejected.exists():
            shutil.copyfile(rejected, report.path)
        raise
    shutil.copyfile(out / "report.html", report.path)
    log_metrics(checks, {f"failed/{r.key}": r.failed for r in outcome.results})
    clean.metadata["dataset"] = outcome.clean.contract.name


def embed(dataset: Input[Dataset], modality: str, settings: dict, embeddings: Output[Dataset]):
    """Embed one modality of the items with its pretrained encoder (cached by content hash)."""
    from fusionrec.config import settings_from
    from fusionrec.encoders.pipeline import embed_to_folder

    done = embed_to_folder(
        dataset.path, embeddings.path, settings_from(settings), modalities={modality}, progress=False
    )
    embeddings.metadata.update(
        {m: {"identity": e.identity, "present": int(e.mask.sum()), **e.stats} for m, e in done.items()}
    )


def collect(parts: Input[List[Dataset]], embeddings: Output[Dataset]):
    """Combine the per-modality embeddings into one folder."""
    from fusionrec.encoders.pipeline import merge_embeddings

    embeddings.metadata["modalities"] = merge_embeddings([p.path for p in parts], embeddings.path)


def features(dataset: Input[Dataset], embeddings: Input[Dataset], settings: dict, tables: Output[Dataset]):
    """Write the Feast offline tables, apply the definitions, materialise the online store."""
    from fusionrec.config import settings_from
    from fusionrec.features.store import build_store

    done = build_store(dataset.path, embeddings.path, tables.path, settings_from(settings).features)
    tables.metadata.update({"dataset": done.dataset, "modalities": done.modalities, "interactions": done.interactions})


def train(
    dataset: Input[Dataset],
    embeddings: Input[Dataset],
    tables: Input[Dataset],
    spec: dict,
    settings: dict,
    checkpoints: str,
    model: Output[Model],
    card: Output[Markdown],
    metrics: Output[Metrics],
):
    """Train the fusion model on the training set read from Feast; write the candidate artifact."""
    import shutil
    from pathlib import Path

    from fusionrec.config import settings_from
    from fusionrec.io import log_metrics
    from fusionrec.train.request import TrainSpec
    from fusionrec.train.run import train_candidate

    s = settings_from(settings)
    c = train_candidate(
        dataset.path,
        embeddings.path,
        TrainSpec.parse(**spec),
        model.path,
        device=s.encoders.device,
        checkpoints=checkpoints or None,
        features_dir=tables.path,
        feature_settings=s.features,
        progress=False,
    )
    shutil.copyfile(Path(c.path) / "model_card.md", card.path)
    log_metrics(metrics, {f"test/{k}": v for k, v in c.test.items()})
    model.metadata.update({"run": c.run_id, "source": c.source, "framework": "pytorch", **c.feast})


def train_distributed(
    dataset: Input[Dataset],
    embeddings: Input[Dataset],
    tables: Input[Dataset],
    spec: dict,
    image: str,
    nodes: int,
    gpus_per_node: int,
    model: Output[Model],
    card: Output[Markdown],
    metrics: Output[Metrics],
):
    """Train across nodes and GPUs as a Kubeflow Trainer TrainJob (torchrun); its candidate becomes this
    step's Model."""
    import shutil
    from pathlib import Path

    from fusionrec.io import log_metrics
    from fusionrec.platform.trainjob import train_on_cluster

    done = train_on_cluster(
        dataset.path,
        embeddings.path,
        tables.path,
        spec,
        model.path,
        image=image,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
    )
    shutil.copyfile(Path(model.path) / "model_card.md", card.path)
    log_metrics(metrics, {f"test/{k}": v for k, v in done.test.items()})
    extra = done.model_extra or {}
    model.metadata.update({"run": extra.get("run", ""), "source": extra.get("source", ""), "trainjob_nodes": nodes})


def evaluate(
    dataset: Input[Dataset],
    embeddings: Input[Dataset],
    model: Input[Model],
    baselines: List[str],
    settings: dict,
    comparison: Output[Markdown],
    metrics: Output[Metrics],
):
    """The candidate beside the baselines, each fitted and measured on the candidate's own split."""
    import shutil
    import tempfile
    from pathlib import Path

    from fusionrec.config import settings_from
    from fusionrec.io import log_metrics
    from fusionrec.train.run import evaluate_candidate

    with tempfile.TemporaryDirectory() as out:
        result = evaluate_candidate(
            dataset.path,
            embeddings.path,
            model.path,
            out,
            baselines=tuple(baselines),
            device=settings_from(settings).encoders.device,
        )
        shutil.copyfile(Path(out) / "comparison.md", comparison.path)
    log_metrics(metrics, {f"{name}/{k}": m[k] for name, m in result.results.items() for k in ("recall@20", "ndcg@20")})


def gate(
    dataset: Input[Dataset],
    model: Input[Model],
    registry: str,
    margin: float,
    decision: Output[Markdown],
    gallery: Output[HTML],
) -> bool:
    """Does the candidate beat the champion by the margin? Writes nothing to the registry; shows sample users'
    history beside the top 10 of the candidate and of the champion. The reason is the decision's text.

    One output only: the local runner resolves a condition on a task's single ``Output``."""
    from pathlib import Path

    from fusionrec import metrics as metrics_file
    from fusionrec.data.dataset import Dataset as Data
    from fusionrec.registry import champion, judge
    from fusionrec.reports import gallery_html, sample_rows

    d = judge(registry, metrics_file.read(model.path), margin)
    verdict = "promote: register and deploy" if d.promoted else "keep the champion: nothing is registered or deployed"
    Path(decision.path).write_text(f"# Gate: {verdict}\n\n{d.reason}\n", encoding="utf-8")
    data, current = Data.load(dataset.path), champion(registry)
    rows = sample_rows(data, Path(model.path), current if current is not None and current.exists() else None)
    Path(gallery.path).write_text(
        gallery_html(data, rows, title=f"candidate vs champion {d.champion_before or '(none yet)'}: {verdict}"),
        encoding="utf-8",
    )
    decision.metadata.update({"promoted": d.promoted, "reason": d.reason})
    return d.promoted


def register(model: Input[Model], registry: str, margin: float) -> str:
    """Copy the candidate into the registry as the next version and make it the champion, judged again
    under the registry's lock (another run may have promoted a better model since this run's gate); when
    it no longer wins nothing is registered and the answer is "" (the deploy step then does nothing).
    A retried step gets the version it registered the first time."""
    from fusionrec.registry import register_judged

    version, d = register_judged(registry, model.path, margin, only_if_better=True)
    print(f"registered {version.name} as the champion" if version else f"not registered: {d.reason}")
    return version.name if version else ""


def deploy(version: str, registry: str, registry_uri: str, tables: Input[Dataset], target: str, settings: dict) -> str:
    """Serve the new champion: local model servers on loopback, or the bundle's KServe InferenceService
    (its features published for the transformer, then the new version rolled out as a canary). Nothing
    when the register step registered nothing."""
    from fusionrec.config import settings_from
    from fusionrec.platform.deploy import deploy_version

    if not version:
        print("not deployed: the register step's re-check kept the champion")
        return "not deployed"
    return deploy_version(
        settings_from(settings),
        registry=registry,
        registry_uri=registry_uri or None,
        version=version,
        target=target,
        features_dir=tables.path,
    )


STEPS: dict[str, Callable] = {
    f.__name__: f
    for f in (validate, embed, collect, features, train, train_distributed, evaluate, gate, register, deploy)
}


def build(image: str) -> dict[str, Callable]:
    """The steps as KFP components running on ``image`` (which has fusionrec and kfp installed)."""
    return {name: dsl.component(f, base_image=image, install_kfp_package=False) for name, f in STEPS.items()}
