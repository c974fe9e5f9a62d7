"""Catalogue-scale top-K: an approximate shortlist of the model's own score, rescored exactly.

Exact top-K scores every item for every request ([B, d] x [d, n]); at a million items that is the
whole cost of a request. Above ``serving.ann_above`` items the recommender asks a graph index (FAISS
``IndexHNSWFlat``, inner product, 32 links per item, ``serving.ann_ef`` candidates kept while searching)
for a shortlist instead, and scores only the shortlist. (An inverted-file index was tried first: on the
benchmark's development catalogue it needed a fifth of its lists searched for recall@20 0.98, where the
graph reaches 0.99 in a fraction of a millisecond.)

The towers' score and the content term's dense part are one inner product. With ``u`` the user's vector,
``v_i``, ``b_i``, ``c_i`` item i's vector, bias and content vector, ``p`` the unit mean of the user's
history content vectors, ``w`` the content weight and ``T`` the temperature::

    T * score_i = u . v_i + T b_i + T w cos(p, c_i) = [u, 1, T w p] . [v_i, T b_i, c_i]

so the index holds ``x_i = [v_i, T b_i, c_i]`` (the ``c`` block only where the model has the dense
content term) and a request asks with ``q = [u, 1, T w p]``. The taste term is one too: with ``k_i``
item i's taste cluster as a one-hot vector, ``a`` the history's taste shares and ``w_t`` its weight, it
adds ``T w_t a . k_i``, so ``k_i`` joins ``x_i`` and ``T w_t a`` joins ``q`` where the model has it.
The sparse history terms (the item-item term and the content neighbourhood: each history item's
neighbour lists) are not in the index: the ``pool`` items they score highest, among the history's
neighbours, join the shortlist. Every shortlisted item is scored with the same terms as the exact path,
so what the shortlist holds is ranked exactly; exclusions are removed from it (it is asked for ``pool``
items plus the excluded count), and a request with a candidate list scores its candidates exactly,
without the index.

The index is built with the model version (``index/topk.faiss``, for catalogues above
:data:`SHIP_ABOVE` items) and checked against the model at load; a version without one (or with one
that does not fit) has it built at load, with a warning. ``benchmarks/topk.py`` measures latency, memory
and recall@20 against exact search at 10^4 to 10^6 items.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

SHIP_ABOVE = 50_000  # model versions above this many items carry their top-K index (serving.ann_above's default)
INDEX_FILE = "topk.faiss"
META_FILE = "topk.json"
LINKS = 32  # HNSW links per item


def catalogue(model, parts=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The catalogue's item vectors [n, d] (unit) and score biases [n] (None without the item bias), as
    scoring takes them, from the model's item parts (``parts``: :meth:`FusionRecModel.item_parts`)."""
    if parts is None:
        with torch.inference_mode():
            parts = model.item_parts()
    vectors = F.normalize(parts.parts.sum(1), dim=-1)
    return vectors, (parts.bias.sum(1) if model.config.item_bias else None)


def index_vectors(model, item_vectors: torch.Tensor, item_bias: torch.Tensor | None) -> np.ndarray:
    """The catalogue as the index holds it: ``[v_i, T b_i, c_i]`` per item (module docstring)."""
    T = model.config.temperature
    parts = [item_vectors]
    parts.append((item_bias if item_bias is not None else torch.zeros(len(item_vectors)))[:, None] * T)
    if _dense_content(model):
        parts.append(model.content_vectors())
    if taste := _taste(model):
        parts.append(F.one_hot(model.tc_label, taste).float())
    with torch.inference_mode():
        return np.ascontiguousarray(torch.cat(parts, dim=1).float().numpy())


def _dense_content(model) -> bool:
    return bool(model.has_content_term and float(model.cc_weight) != 0.0)


def _taste(model) -> int:
    """The taste clusters the index holds one-hot (0: the model has no taste term)."""
    return int(model.tc_clusters) if model.has_content_term and model.has_taste_term else 0


def build_index(x: np.ndarray):
    """An HNSW inner-product index over the rows of ``x`` (32 links per item)."""
    import faiss

    index = faiss.IndexHNSWFlat(x.shape[1], LINKS, faiss.METRIC_INNER_PRODUCT)
    index.add(np.ascontiguousarray(x))
    return index


def save_index(model, item_vectors: torch.Tensor, item_bias: torch.Tensor | None, folder: str | Path) -> None:
    """Write the top-K index of a model (``topk.faiss`` and ``topk.json``: items, width, content block)."""
    import faiss

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x = index_vectors(model, item_vectors, item_bias)
    faiss.write_index(build_index(x), str(folder / INDEX_FILE))
    meta = {"items": int(x.shape[0]), "dim": int(x.shape[1]), "content": _dense_content(model)}
    if taste := _taste(model):
        meta["taste"] = taste
    (folder / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


@dataclass
class RowTerms:
    """One request's history terms: the sparse sums over the catalogue (the item-item term and the content
    neighbourhood, [n, T] in the recommender's history-term order) and the dense content term's query."""

    sparse: torch.Tensor  # [n, len(history_terms)]
    support: torch.Tensor  # item indices where ``sparse`` can be non-zero (the history's neighbours)
    pooled: torch.Tensor | None  # [D] the unit mean of the history's content vectors (None: no dense term)
    taste: torch.Tensor | None = None  # [K] the history's taste shares (None: no taste term)


class CatalogueTopK:
    """Approximate top-K over one model's catalogue (module docstring)."""

    def __init__(
        self,
        model,
        item_vectors: torch.Tensor,
        item_bias: torch.Tensor | None,
        history_terms: list[str],
        index,
        *,
        ef: int = 400,
        pool: int = 200,
    ) -> None:
        self.model, self.item_vectors, self.item_bias = model, item_vectors, item_bias
        self.history_terms = history_terms
        self.index, self.pool = index, pool
        self.index.hnsw.efSearch = ef
        self.dense_content = _dense_content(model)
        self.content = model.content_vectors() if self.dense_content else None
        self.taste = _taste(model)
        self.T = model.config.temperature
        self.n = len(item_vectors)

    @classmethod
    def load(
        cls,
        folder: str | Path,
        model,
        item_vectors: torch.Tensor,
        item_bias: torch.Tensor | None,
        history_terms: list[str],
        *,
        ef: int = 400,
        pool: int = 200,
    ) -> CatalogueTopK:
        """The index shipped in a version's ``index/`` folder; built here (with a warning) where there is
        none, or where it does not fit the model (its size, its width, its content block)."""
        import faiss

        folder = Path(folder)
        meta_file = folder / META_FILE
        meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.exists() else {}
        taste = _taste(model)
        want = {
            "items": len(item_vectors),
            "dim": item_vectors.shape[1]
            + 1
            + (model.content_vectors().shape[1] if _dense_content(model) else 0)
            + taste,
            "content": _dense_content(model),
            **({"taste": taste} if taste else {}),
        }
        if meta == want and (folder / INDEX_FILE).exists():
            index = faiss.read_index(str(folder / INDEX_FILE))
        else:
            log.warning("%s: no top-K index for this model's %d items; building it now", folder, len(item_vectors))
            index = build_index(index_vectors(model, item_vectors, item_bias))
        return cls(model, item_vectors, item_bias, history_terms, index, ef=ef, pool=pool)

    def row_terms(self, history: torch.Tensor, mask: torch.Tensor) -> RowTerms:
        """The history terms of one request (``history``, ``mask``: [1, H], as the model takes them)."""
        m = self.model
        window, used = m.history_window(history, mask)
        h = window[0][used[0]]
        parts, support = [], []
        with torch.inference_mode():
            if m.has_item_item:
                parts.append(m.item_item(history, mask)[0])
                support.append(m.ii_index[h].flatten())
            if m.has_content_term:
                parts.append(m.content_term(history, mask, weight=0.0)[0])
                if m.cn_index.shape[1] > 0 and float(m.cn_weight) != 0.0:
                    support.append(m.cn_index[h].flatten())
            pooled = None
            if self.dense_content and len(h):
                pooled = F.normalize(self.content[h].sum(0), dim=-1)
            taste = m.taste_shares(history, mask)[0] if self.taste else None
        sparse = torch.stack(parts, -1) if parts else torch.zeros(self.n, 0)
        support_items = torch.unique(torch.cat(support)) if support else torch.zeros(0, dtype=torch.long)
        return RowTerms(sparse, support_items, pooled, taste)

    def terms_at(self, row: RowTerms, items: np.ndarray) -> np.ndarray:
        """The history terms [len(items), len(history_terms)] at ``items``, the dense content part added to
        the content term's column."""
        t = torch.as_tensor(np.asarray(items, dtype=np.int64))
        out = row.sparse[t].clone()
        if row.pooled is not None:
            col = self.history_terms.index("content")
            out[:, col] += (self.content[t] @ row.pooled) * float(self.model.cc_weight)
        return out.numpy()

    def scores(self, user: torch.Tensor, row: RowTerms, items: np.ndarray) -> np.ndarray:
        """The exact score of ``items`` for one user vector and its history terms (the exact path's sum)."""
        t = torch.as_tensor(np.asarray(items, dtype=np.int64))
        with torch.inference_mode():
            s = self.item_vectors[t] @ user / self.T
            if self.item_bias is not None:
                s = s + self.item_bias[t]
        return s.numpy() + self.terms_at(row, items).sum(1)

    def shortlist(self, user: torch.Tensor, row: RowTerms, excluded: np.ndarray) -> np.ndarray:
        """Item indices worth scoring exactly, none of them ``excluded``: the index's ``pool`` best by the
        towers' score and the dense content term (it is asked for as many more as are excluded), and the
        ``pool`` best of the sparse history terms among the history's neighbours (a history's own items,
        excluded as seen, are often its strongest neighbours: they are left out before the best are taken)."""
        q = [user, torch.ones(1)]
        if self.dense_content:
            p = row.pooled if row.pooled is not None else torch.zeros(self.content.shape[1])
            q.append(p * self.T * float(self.model.cc_weight))
        if self.taste:
            q.append(row.taste * self.T * float(self.model.tc_weight))
        query = np.ascontiguousarray(torch.cat(q).float().numpy()[None])
        _, found = self.index.search(query, min(self.n, self.pool + len(excluded)))
        found = found[0][found[0] >= 0]
        support = row.support[torch.from_numpy(~np.isin(row.support.numpy(), excluded))]
        if len(support):
            s = row.sparse[support].sum(1)
            top = torch.topk(s, min(self.pool, len(s))).indices
            found = np.concatenate([found, support[top].numpy()])
        return np.setdiff1d(found, excluded)
