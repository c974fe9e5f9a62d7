"""Recommendations from one trained model: top-K for users (known, new with a history, or anonymous)
and items like an example (text and/or image), batched, with exclusions and candidates.

The serving adapters (the KServe predictor) parse requests into :class:`Row` and answer with
:class:`Result`; everything about scoring lives here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusionrec.errors import BadRequest, ConfigError, NotFound
from fusionrec.model.modeling import ItemOutput
from fusionrec.registry import Artifact


@dataclass
class Row:
    """A validated instance, ids as strings, the image decoded."""

    kind: str  # "recommend" or "query"
    k: int
    user_id: str | None = None
    history: list[str] = field(default_factory=list)
    recent: list[str] = field(default_factory=list)
    exclude_seen: bool = True
    exclude: list[str] = field(default_factory=list)
    candidates: list[str] | None = None
    text: str | None = None
    image: bytes | None = None


@dataclass
class Result:
    """Top-K for one row: items by score, each with the share each modality contributed."""

    item_ids: list[str]
    titles: list[str]
    images: list[str]
    scores: np.ndarray  # [k]
    shares: np.ndarray  # [k, n_modalities]
    fallback: bool = False  # popularity, not the model (no user and no history)
    cold: bool = False  # a user without an ID embedding, served from the given history
    embedding: np.ndarray | None = None  # the query's vector (query by example)


class Recommender:
    """The serving logic over one loaded artifact, independent of KServe (batched, thread-safe for reads)."""

    def __init__(self, artifact: Artifact, encoders: dict[str, Any] | None = None) -> None:
        self.artifact = artifact
        self.model = artifact.model.eval()
        self.version = artifact.version
        self.modalities = list(self.model.modality_names)
        self.encoders = encoders or {}
        for m, enc in self.encoders.items():
            want = artifact.encoders.get(m, {}).get("identity")
            if want != enc.identity:
                raise ConfigError(f"the {m} encoder here is {enc.identity!r} but the model was trained on {want!r}; "
                                  f"configure the same checkpoint (encoders.{m}.checkpoint)")
        with torch.inference_mode():
            out = self.model.items()
        self.item_vectors = out.vectors  # [n, d] unit vectors, built once
        self.item_bias = out.bias
        self.item_shares = out.modality_weights.numpy()
        items = artifact.items.sort_values("item_idx")
        self.item_ids = items["item_id"].astype(str).to_numpy()
        self.item_index = {i: n for n, i in enumerate(self.item_ids)}
        self.titles = (items["title"].fillna("").astype(str).to_numpy() if "title" in items
                       else np.full(len(items), "", dtype=object))
        self.images = (items["image"].fillna("").astype(str).map(lambda p: Path(p).name if p else "").to_numpy()
                       if "image" in items else np.full(len(items), "", dtype=object))
        self.user_index = dict(zip(artifact.users["user_id"].astype(str), artifact.users["user_idx"].astype(int)))
        self.popularity = torch.from_numpy(artifact.popularity.astype(np.float32))
        self.n_items = len(self.item_ids)
        self.history_length = artifact.history.shape[1]

    # -- helpers ---------------------------------------------------------------------------------

    def _items(self, ids: list[str], what: str) -> list[int]:
        unknown = [i for i in ids if i not in self.item_index]
        if unknown:
            raise NotFound(f"unknown item ids in {what}: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        return [self.item_index[i] for i in ids]

    def _top(self, scores: torch.Tensor, allowed: torch.Tensor, k: int) -> Result:
        scores = scores.masked_fill(~allowed, float("-inf"))
        k = min(k, int(allowed.sum()))
        top = torch.topk(scores, k) if k else None
        idx = top.indices.numpy() if top is not None else np.zeros(0, dtype=np.int64)
        return Result(self.item_ids[idx].tolist(), self.titles[idx].tolist(), self.images[idx].tolist(),
                      top.values.numpy() if top is not None else np.zeros(0, dtype=np.float32),
                      self.item_shares[idx])

    def _allowed(self, row: Row, excluded: list[int]) -> torch.Tensor:
        if row.candidates is not None:
            allowed = torch.zeros(self.n_items, dtype=torch.bool)
            allowed[self._items(row.candidates, "candidates")] = True
        else:
            allowed = torch.ones(self.n_items, dtype=torch.bool)
        if excluded:
            allowed[excluded] = False
        return allowed

    # -- the two requests ------------------------------------------------------------------------

    def run(self, rows: list[Row]) -> list[Result]:
        """Answer a batch of rows (recommendations and queries may be mixed), in order."""
        out: list[Result | None] = [None] * len(rows)
        rec = [i for i, r in enumerate(rows) if r.kind == "recommend"]
        qry = [i for i, r in enumerate(rows) if r.kind == "query"]
        if rec:
            for i, res in zip(rec, self.recommend([rows[i] for i in rec])):
                out[i] = res
        if qry:
            for i, res in zip(qry, self.query([rows[i] for i in qry])):
                out[i] = res
        return out  # type: ignore[return-value]

    def recommend(self, rows: list[Row]) -> list[Result]:
        """Top-K for users: known users by ID and history, cold users by the given history, anonymous
        requests (no user, no history) by popularity with ``fallback`` set."""
        H = self.history_length
        users = torch.full((len(rows),), -1, dtype=torch.long)
        hist = torch.zeros((len(rows), H), dtype=torch.long)
        mask = torch.zeros((len(rows), H), dtype=torch.bool)
        excluded: list[list[int]] = []
        for n, row in enumerate(rows):
            asked = self._items(row.history, "history")
            # the feature store's history, minus items the model does not know (added since it was trained)
            skip = set(asked)
            recent = [j for j in (self.item_index.get(i) for i in row.recent) if j is not None and j not in skip]
            given = recent + asked
            u = self.user_index.get(row.user_id) if row.user_id is not None else None
            if row.user_id is not None and u is None and not given:
                raise NotFound(f"unknown user {row.user_id!r}: the model has no such user; send the user's history "
                               "('history': [item ids]) to be served as a new user, or omit user_id for popular items")
            items = given
            if u is not None:
                users[n] = u
                stored = self.artifact.history[u][self.artifact.history_mask[u]].tolist()
                known = set(stored)
                items = stored + [i for i in given if i not in known]
            items = items[-H:]
            hist[n, : len(items)] = torch.tensor(items, dtype=torch.long)
            mask[n, : len(items)] = True
            ex = self._items(row.exclude, "exclude")
            if row.exclude_seen:
                ex += given + (self.artifact.seen(u).tolist() if u is not None else [])
            excluded.append(ex)
        with torch.inference_mode():
            uv = self.model.users(users, hist, mask, self.item_vectors)
            scores = self.model.logits(uv, self.item_vectors, self.item_bias)
        results = []
        for n, row in enumerate(rows):
            fallback = bool(users[n] < 0 and not mask[n].any())
            res = self._top(self.popularity if fallback else scores[n], self._allowed(row, excluded[n]), row.k)
            res.fallback, res.cold = fallback, bool(users[n] < 0 and mask[n].any())
            results.append(res)
        return results

    def embed(self, rows: list[Row]) -> ItemOutput:
        """The item tower's output (vectors [B, d], modality shares) for query rows' text and/or image."""
        content: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for m in ("text", "image"):
            asked = [i for i, r in enumerate(rows) if getattr(r, m) is not None]
            if not asked:
                continue
            if m not in self.modalities or m not in self.encoders:
                raise BadRequest(f"this model has no {m} encoder; query with {sorted(set(self.encoders) & set(self.modalities))}")
            enc = self.encoders[m].encode([getattr(rows[i], m) for i in asked])
            bad = [(i, enc.reasons[j]) for j, i in enumerate(asked) if not enc.mask[j]]
            if bad:
                raise BadRequest(f"row {bad[0][0]}: the {m} cannot be used: {bad[0][1]}")
            values = torch.zeros(len(rows), enc.values.shape[1])
            present = torch.zeros(len(rows), dtype=torch.bool)
            values[asked] = torch.from_numpy(np.asarray(enc.values, dtype=np.float32))
            present[asked] = True
            content[m] = (values, present)
        with torch.inference_mode():
            return self.model.items(content=content)

    def query(self, rows: list[Row]) -> list[Result]:
        """Items most like each query (cosine in the item space), with the query's embedding."""
        vectors = self.embed(rows).vectors
        with torch.inference_mode():
            scores = vectors @ self.item_vectors.T
        results = []
        for n, row in enumerate(rows):
            res = self._top(scores[n], self._allowed(row, self._items(row.exclude, "exclude")), row.k)
            res.embedding = vectors[n].numpy()
            results.append(res)
        return results
