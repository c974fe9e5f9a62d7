"""Every model a comparison can name, behind one interface, and the one registry of their names.

A compared model is made from a :class:`Context` (the dataset, its embeddings, the run's size, seed and
training settings) and answers ``fit(split) -> self`` and ``score(users) -> scores`` (user indices to
scores over the whole catalogue), the shape Cornac's models have. :data:`MODELS` names them all: the
fusion model's variants (:data:`VARIANTS`) and its peers (:data:`PEERS`, :mod:`fusionrec.train.peers`).
Every default, check and help text reads these names; a new model is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fusionrec.data.splits import Split
from fusionrec.evaluation import evaluate_ranking
from fusionrec.train import peers


class Compared(Protocol):
    """A model a comparison fits and measures."""

    def fit(self, split: Split) -> Compared: ...

    def score(self, users: np.ndarray) -> np.ndarray: ...

    def extra(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Context:
    """What every compared model is made with: the dataset and its item embeddings by modality, the run's
    embedding size and training settings (:class:`fusionrec.train.loop.TrainConfig`; its epochs are every
    trained peer's budget too), and whether to draw progress bars."""

    dataset: Any
    embeddings: dict
    dim: int
    train_cfg: Any
    progress: bool = False

    @property
    def seed(self) -> int:
        return self.train_cfg.seed


def valid_ndcg(split: Split) -> Callable:
    """Validation NDCG@20 of a score function: what the peers that tune choose by."""
    return lambda score: evaluate_ranking(
        score, split.valid, [split.train], split.n_users, split.n_items, ks=(20,)
    ).ndcg[20]


@dataclass
class Peer:
    """A peer: ``fit`` calls its function of (context, split), which returns a score function."""

    ctx: Context
    fit_fn: Callable[[Context, Split], Callable]
    _score: Callable | None = field(default=None, repr=False)

    def fit(self, split: Split) -> Peer:
        self._score = self.fit_fn(self.ctx, split)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return self._score(users)

    def extra(self) -> dict[str, Any]:
        chosen = getattr(self._score, "chosen", None)
        return {"chosen": chosen} if chosen else {}


@dataclass
class FusionVariant:
    """The fusion model over ``modalities`` with ``overrides`` of its FusionConfig and ``training`` ones of
    its TrainConfig."""

    ctx: Context
    modalities: list[str]
    overrides: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    _score: Callable | None = field(default=None, repr=False)
    _extra: dict = field(default_factory=dict, repr=False)

    def fit(self, split: Split) -> FusionVariant:
        from fusionrec.train.compare import fusion_config
        from fusionrec.train.loop import ranking_head_metrics, score_function, train

        ctx = self.ctx
        cfg = fusion_config(ctx.dataset, ctx.embeddings, self.modalities, dim=ctx.dim, **self.overrides)
        train_cfg = ctx.train_cfg.model_copy(update=self.training)
        r = train(split, ctx.embeddings, cfg, train_cfg, progress=ctx.progress)
        self._score = score_function(r.model, r.user_history, r.user_history_mask)
        self._extra = {"samples_per_second": r.samples_per_second}
        chosen = fusion_chosen(r.item_item, r.content)
        if chosen:  # what it chose on validation, as a tuned peer's settings are reported
            self._extra["chosen"] = chosen
        if cfg.ranking_head:  # AUC and log loss of the ranking head against sampled unseen items
            self._extra.update(
                ranking_head_metrics(r.model, r.user_history, r.user_history_mask, split, seed=train_cfg.seed)
            )
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return self._score(users)

    def extra(self) -> dict[str, float]:
        return dict(self._extra)


def fusion_chosen(item_item: dict, content: dict) -> dict[str, float]:
    """The settings the fusion model chose on validation (the item-item ridge and weight, the content
    term's weights and sharpness, its taste clusters and weight), keyed as in :func:`fusion_grids`; a
    ridge, a sharpness or a cluster count whose weight is 0 is left out (nothing depends on it)."""
    out = {}
    if item_item:
        out["ii_weight"] = content.get("item_item_weight", item_item["weight"])
        if out["ii_weight"]:
            out["ii_lambda"] = item_item["lambda"]
    if content:
        out.update(cc_weight=content["weight"], cn_weight=content["neighbour_weight"])
        if content["neighbour_weight"]:
            out["cn_power"] = content["neighbour_power"]
        if "taste_weight" in content:
            out["tc_weight"] = content["taste_weight"]
            if content["taste_weight"]:
                out["tc_clusters"] = content["taste_clusters"]
    return out


def fusion_grids() -> dict[str, tuple]:
    """The grids the fusion model's validation choices are made over (:mod:`fusionrec.itemitem`)."""
    from fusionrec.itemitem import (
        CONTENT_WEIGHTS,
        LAMBDAS,
        NEIGHBOUR_POWERS,
        NEIGHBOUR_WEIGHTS,
        TASTE_CLUSTERS,
        TASTE_WEIGHTS,
        WEIGHTS,
    )

    return {
        "ii_lambda": LAMBDAS,
        "ii_weight": WEIGHTS,
        "cc_weight": CONTENT_WEIGHTS,
        "cn_weight": NEIGHBOUR_WEIGHTS,
        "cn_power": NEIGHBOUR_POWERS,
        "tc_weight": TASTE_WEIGHTS,
        "tc_clusters": TASTE_CLUSTERS,
    }


def choice_grids() -> dict[str, dict[str, tuple]]:
    """Every model's validation grid by model name: the tuned peers' (:data:`GRIDS`), ours
    (:func:`fusion_grids`) and EASE's ridge (the item-item term's)."""
    ours = fusion_grids()
    return {**GRIDS, "fusion": ours, "ease": {"lambda": ours["ii_lambda"]}}


def at_edge(chosen: dict, grids: dict[str, tuple]) -> list[str]:
    """The settings in ``chosen`` that took the top of their grid (or its bottom where it is not 0 or the
    grid's only value): the search may have stopped short of the best."""
    edge = []
    for k, v in chosen.items():
        grid = grids.get(k)
        if grid and len(grid) > 1 and (v == max(grid) or (v == min(grid) and min(grid) != 0)):
            edge.append(f"{k}={v:g}")
    return edge


def _variant(modalities: Callable[[dict], list[str] | None], overrides=None, training=None):
    """A registry entry for a fusion variant; ``modalities`` of the embeddings (None: this data has not
    what the variant needs)."""

    def make(ctx: Context) -> FusionVariant | None:
        mods = modalities(ctx.embeddings)
        return None if mods is None else FusionVariant(ctx, mods, dict(overrides or {}), dict(training or {}))

    return make


def _peer(fit_fn: Callable[[Context, Split], Callable], needs: str | None = None):
    """A registry entry for a peer; ``needs``: a modality it cannot do without."""
    return lambda ctx: None if needs and needs not in ctx.embeddings else Peer(ctx, fit_fn)


def _only(*wanted: str) -> Callable[[dict], list[str] | None]:
    return lambda emb: list(wanted) if set(wanted) <= set(emb) else None


def _content(emb: dict) -> list[str] | None:
    """Text and image without the tabular features (None where that is every modality: nothing is left out)."""
    content = sorted(m for m in emb if m in ("text", "image"))
    return content if content and content != sorted(emb) else None


# name -> a factory of (context) -> the model, or None where this data cannot feed it (VBPR without images)
VARIANTS: dict[str, Callable[[Context], Compared | None]] = {
    "fusion": _variant(sorted),
    "concat": _variant(sorted, {"fusion": "concat"}),
    "text_only": _variant(_only("text")),
    "image_only": _variant(_only("image")),
    "no_tabular": _variant(_content),
    "no_item_item": _variant(sorted, {"item_item": 0}),
    "no_content": _variant(sorted, {"content_term": False}),
    "no_taste": _variant(sorted, {"taste_clusters": False}),
    # the sparse item-item form with the 64 most bought items in every row (FusionConfig.item_item_popular)
    "ii_popular": _variant(sorted, {"item_item_popular": 64}),
    "fusion_sampled": _variant(sorted, training={"softmax": "sampled"}),
}
# Each peer with settings gets a validation search over a grid of them (validation NDCG@20), as the fusion model
# searches its item-item ridge and weight on validation; the embedding size is every model's, the run's. Cornac
# VBPR costs minutes a fit on 2 cores, so it is not searched in a comparison: `benchmarks/accuracy.py
# --tune-vbpr` searches its grid on a development seed's validation, for its defaults.
GRIDS: dict[str, dict[str, tuple]] = {
    # widened where a grid's edge was chosen (Cornac BPR's 400 iterations and BPR-MF's 1e-3 on the development
    # seeds; BPR's 800 on 4 of the 5 reporting seeds of movielens-100k-mm, 2026-12-07; its lambda_reg 0.01 and
    # lr 0.005 on most seeds of movielens-100k-mm and of the synthetic 10k-item set, the same day)
    "cornac_bpr": {
        "lr": (0.0025, 0.005, 0.01, 0.05),
        "lambda_reg": (0.001, 0.01, 0.1),
        "max_iter": (100, 200, 400, 800, 1600),
    },
    "bpr_mf": {"lr": (3e-4, 1e-3, 5e-3, 2e-2), "reg": (1e-5, 1e-4)},
    "cornac_vbpr": {"lr": (0.001, 0.005, 0.02), "lambda_w": (0.001, 0.01)},
}


def _tuned(name: str, fit: Callable[..., Callable]):
    """A peer fitted at every setting of its grid, the best on validation kept; the score function carries
    the chosen setting (``chosen``) for the comparison to report."""

    def fit_tuned(c: Context, s: Split) -> Callable:
        score, chosen = peers.tuned(lambda **kw: fit(c, s, **kw), GRIDS[name], valid_ndcg(s))
        score.chosen = chosen  # what the comparison reports (each fit makes its own score function)
        return score

    return fit_tuned


PEERS: dict[str, Callable[[Context], Compared | None]] = {
    "mostpop": _peer(lambda c, s: peers.most_popular(s)),
    "bpr_mf": _peer(
        _tuned(
            "bpr_mf",
            lambda c, s, **kw: peers.bpr_mf(
                s, dim=c.dim, epochs=c.train_cfg.epochs, seed=c.seed, valid_fn=valid_ndcg(s), **kw
            ),
        )
    ),
    "cornac_bpr": _peer(_tuned("cornac_bpr", lambda c, s, **kw: peers.cornac_bpr(s, k=c.dim, seed=c.seed, **kw))),
    "cornac_vbpr": _peer(lambda c, s: peers.cornac_vbpr(s, c.embeddings["image"].values, seed=c.seed), needs="image"),
    "ease": _peer(lambda c, s: peers.ease(s, valid_fn=valid_ndcg(s))),
    "content_knn": _peer(lambda c, s: peers.content_knn(s, c.embeddings)),
    "random": _peer(lambda c, s: peers.random_scores(s, c.seed)),
}
MODELS = {**VARIANTS, **PEERS}
