"""Fit and measure: the fusion model trained and measured on a split (:func:`fit`), its model card, and
every compared model (:mod:`fusionrec.train.models`) on the same split, written as metrics JSON, a
comparison table and a bar chart. The run from files to the registry is :mod:`fusionrec.train.run`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from fusionrec.data.splits import Split
from fusionrec.errors import ConfigError
from fusionrec.evaluation import evaluate_ranking
from fusionrec.model import FusionConfig
from fusionrec.train.loop import TrainConfig, TrainResult, evaluate_model, ranking_head_metrics, train

log = logging.getLogger(__name__)
COMPARED = (
    "fusion",
    "concat",
    "text_only",
    "image_only",
    "mostpop",
    "bpr_mf",
    "cornac_bpr",
    "cornac_vbpr",
    "ease",
    "content_knn",
)


def fusion_config(dataset, embeddings: dict, modalities: list[str] | None, **overrides) -> FusionConfig:
    """A FusionConfig for a dataset; fails before any computation when a named modality is missing.

    Raises:
        ConfigError: a modality not in the embeddings, or a setting out of its range (named, with its value).
    """
    modalities = list(modalities) if modalities else sorted(embeddings)
    missing = [m for m in modalities if m not in embeddings]
    if missing:
        raise ConfigError(f"modalities {missing} are not in the embeddings (have {sorted(embeddings)})")
    from pydantic import ValidationError

    from fusionrec.config import describe_pydantic_errors

    try:
        return FusionConfig(
            n_users=dataset.n_users,
            n_items=dataset.n_items,
            modalities={m: embeddings[m].dim for m in modalities},
            **overrides,
        )
    except ValidationError as e:
        raise ConfigError(f"model config: {describe_pydantic_errors(e)}") from None


def fit(
    dataset,
    embeddings: dict,
    split: Split,
    cfg: FusionConfig,
    train_cfg: TrainConfig,
    *,
    progress: bool = True,
    checkpoint_dir: Path | None = None,
    curves: Path | None = None,
) -> tuple[TrainResult, dict[str, float]]:
    """Train, then measure on the test part. Returns (result, test metrics)."""
    result = train(
        split, embeddings, cfg, train_cfg, progress=progress, checkpoint_dir=checkpoint_dir, curves_png=curves
    )
    metrics = evaluate_model(result.model, result.user_history, result.user_history_mask, split).flat()
    if cfg.ranking_head:  # AUC and log loss of the ranking head against sampled unseen items
        metrics.update(
            ranking_head_metrics(
                result.model, result.user_history, result.user_history_mask, split, seed=train_cfg.seed
            )
        )
    return result, metrics


def model_card(
    dataset_name: str,
    split: Split,
    cfg: FusionConfig,
    result: TrainResult,
    test: dict[str, float],
    encoders: dict[str, Any],
    compared: dict[str, dict[str, float]] | None = None,
) -> str:
    """The model card, in Markdown."""
    lines = [
        f"# fusionrec model {{version}} on `{dataset_name}`",
        "",
        "Multimodal-fusion retrieval model: frozen pretrained item embeddings per modality, projected and fused "
        f"by {cfg.fusion} fusion, plus item and user ID embeddings and attention over the user's history; "
        "dot-product retrieval over the whole catalogue, plus an item-item term over the user's history.",
        "",
        "## Data and split",
        "",
        f"- split: {json.dumps(split.summary())}",
        "- modalities: "
        + ", ".join(f"{m} ({d}-d, {encoders.get(m, {}).get('identity', m)})" for m, d in cfg.modalities.items()),
        "",
        "## Training",
        "",
        f"- best epoch {result.best_epoch} ({len(result.history)} validation checks), {result.seconds:.0f} s, "
        f"{result.samples_per_second:,.0f} samples/s",
        f"- config: `{cfg.model_dump_json()}`",
        "",
        "## What moves the score",
        "",
        *_contributions(cfg, result),
        "",
        "## Test metrics (full ranking, training and validation items excluded)",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.4f} |" for k, v in test.items() if k != "users"]
    if compared:
        lines += ["", "## Compared on the same split", "", comparison_table(compared)]
    lines += [
        "",
        "## Use and limits",
        "",
        "- Intended for ranking catalogue items for known users, and for new items and users through their "
        "content and history.",
        "- Text passes the PII filter before it is embedded. Known data defects (mismatched posters or "
        "overviews) are kept as they are and blur the content signal.",
        "- Metrics come from one offline split; online behaviour is watched by the monitoring jobs.",
    ]
    return "\n".join(lines) + "\n"


def _contributions(cfg: FusionConfig, result: TrainResult) -> list[str]:
    """Per modality its mean fusion weight over the catalogue, and what the item-item term added on validation."""
    import torch

    lines = []
    model = result.model.eval()
    if model.modality_names:
        with torch.inference_mode():
            w = model.items().modality_weights.mean(0).tolist()
        lines.append(
            "- mean fusion weight per modality over the catalogue: "
            + ", ".join(f"{m} {v:.2f}" for m, v in zip(model.modality_names, w))
        )
    ii = result.item_item
    if ii:
        lines.append(
            f"- item-item term ({'sparse' if ii.get('sparse') else 'dense'} EASE over the user's last "
            f"{cfg.item_item_history} items, ridge {ii['lambda']:g}, weight {ii['weight']:g}): validation NDCG@20 "
            f"{ii['valid_ndcg@20_network']:.4f} from the two towers alone, {ii['valid_ndcg@20_with_item_item']:.4f} "
            "with it"
        )
    else:
        lines.append("- no item-item term (turned off)")
    c = result.content
    if c:
        lines.append(
            f"- content term (cosine of the user's history content to the item's, weight {c['weight']:g}): validation "
            f"NDCG@20 {c['valid_ndcg@20_before']:.4f} without it, {c['valid_ndcg@20_with_content']:.4f} with it, "
            f"{c['valid_ndcg@20_alone']:.4f} on its own"
        )
    if c.get("taste_weight"):
        lines.append(
            f"- taste term ({c['taste_clusters']:g} clusters of the item tower's content vectors, weight "
            f"{c['taste_weight']:g}): validation NDCG@20 {c['valid_ndcg@20_with_taste']:.4f} with it"
        )
    lines.append(
        "- what each change brought on movielens-100k-mm (mean of 3 seeds): docs/model.md, 'What moved the figures'"
    )
    return lines


def comparison_table(
    results: dict[str, dict[str, float]], keys=("recall@20", "ndcg@20", "hit@20", "recall@10", "ndcg@10", "coverage")
) -> str:
    """A Markdown table of models by metrics."""
    head = "| model | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys)
    rows = [
        f"| {name} | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in keys) + " |" for name, m in results.items()
    ]
    return head + "\n" + "\n".join(rows)


def compare(
    dataset,
    embeddings: dict,
    split: Split,
    *,
    models=COMPARED,
    train_cfg: TrainConfig,
    dim: int,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Every model in ``models`` (names of :data:`fusionrec.train.models.MODELS`) fitted and measured on the
    same split, test metrics by model name; a model this data cannot feed is left out."""
    from fusionrec.train.models import MODELS, Context

    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ConfigError(f"unknown model {unknown[0]!r}; choose from {list(MODELS)}")
    ctx = Context(dataset, embeddings, dim, train_cfg, progress)
    candidates = split.cold_items if len(split.cold_items) else None
    out: dict[str, dict[str, float]] = {}
    for name in models:
        t = time.perf_counter()
        model = MODELS[name](ctx)
        if model is None:  # this data cannot feed it (VBPR without images, text_only without text)
            continue
        model.fit(split)
        metrics = evaluate_ranking(
            model.score, split.test, [split.train, split.valid], split.n_users, split.n_items, candidates=candidates
        ).flat()
        metrics.update(model.extra())
        metrics["seconds"] = time.perf_counter() - t
        out[name] = metrics
        log.info(
            "%s: recall@20 %.4f ndcg@20 %.4f (%.0f s)",
            name,
            metrics["recall@20"],
            metrics["ndcg@20"],
            metrics["seconds"],
        )
    return out


def write_comparison(results: dict[str, dict[str, float]], out: Path, title: str) -> None:
    """metrics.json, comparison.md and comparison.png (Recall@20 and NDCG@20 by model) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(results, indent=2, default=float), encoding="utf-8")
    (out / "comparison.md").write_text(f"# {title}\n\n{comparison_table(results)}\n", encoding="utf-8")
    names = list(results)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 3.5))
    ax.bar(x - 0.2, [results[n]["recall@20"] for n in names], 0.4, label="Recall@20")
    ax.bar(x + 0.2, [results[n]["ndcg@20"] for n in names], 0.4, label="NDCG@20")
    ax.set_xticks(x, names, rotation=20)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "comparison.png", dpi=110)
    plt.close(fig)
