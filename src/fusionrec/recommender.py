"""Recommendations from one trained model: top-K for users (known, new with a history, or anonymous)
and items like an example (a photo, a text, or a catalogue item), batched, with exclusions and
candidates, each item with its score split into terms that explain it.

Query by example searches each modality's own encoder space (:mod:`fusionrec.search`); a query that
also names a user or a history re-ranks the similar items by that user's taste:
``score = (1 - blend) * similarity + blend * T * model_score``, where ``T * model_score`` is the model's
score in cosine units (``u . v + T * bias``). Every score is explained by one term per modality, the
ID term and the bias, which add up to it (see :func:`fusionrec.model.modeling.explain`).

The serving adapters (the KServe predictor) parse requests into :class:`Row` and answer with
:class:`Result`; everything about scoring lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusionrec.artifact import Artifact, identities
from fusionrec.errors import BadRequest, ConfigError, NotFound
from fusionrec.model.modeling import ItemOutput, explain
from fusionrec.search import INDEX_DIR, ItemSearch
from fusionrec.topk import CatalogueTopK, catalogue

PRECOMPUTED = "precomputed/"


def encoder_modalities(artifact: Artifact) -> set[str]:
    """The modalities a query by example can be encoded in here: text and image, unless the model was
    trained on precomputed vectors for them (no encoder here makes those)."""
    return {
        m
        for m, e in artifact.encoders.items()
        if m in ("text", "image") and not str(e.get("identity", "")).startswith(PRECOMPUTED)
    }


@dataclass
class Row:
    """A validated instance, ids as strings, the image decoded."""

    kind: str  # "recommend", or "query" (text, image and/or like)
    k: int
    user_id: str | None = None
    history: list[str] = field(default_factory=list)
    recent: list[str] = field(default_factory=list)
    exclude_seen: bool = True
    exclude: list[str] = field(default_factory=list)
    candidates: list[str] | None = None
    text: str | None = None
    image: bytes | None = None
    like: str | None = None  # more like this catalogue item
    blend: float | None = None  # the weight of the user's taste in a query's re-rank (None: the default)
    space: str = "both"  # where a query by example searches (fusionrec.search.SPACES)

    @property
    def personal(self) -> bool:
        return self.user_id is not None or bool(self.history) or bool(self.recent)


@dataclass
class Result:
    """Top-K for one row: items by score, each score split into terms (one per modality, id, bias)."""

    item_ids: list[str]
    titles: list[str]
    images: list[str]
    scores: np.ndarray  # [k]
    terms: np.ndarray  # [k, len(Recommender.terms)]: in that order; each row adds up to the score
    fallback: bool = False  # popularity, not the model (no user and no history)
    cold: bool = False  # a user without an ID embedding, served from the given history
    embedding: np.ndarray | None = None  # the query's vector in the item tower (query by example)
    # for the inference log: the user's vector in the model's space (rows with a user or a history), and
    # a query's vectors in its encoders' spaces
    user_vector: np.ndarray | None = None
    query: dict[str, np.ndarray] = field(default_factory=dict)
    # a query by example: per item, the spaces whose search proposed it; and the spaces the query reached
    # through the bridge, with the query modality it was carried from (fusionrec.bridge)
    found: list[list[str]] | None = None
    bridged: dict[str, str] = field(default_factory=dict)


@dataclass
class Users:
    """A batch's users as the model sees them."""

    vectors: torch.Tensor  # [B, d] user vectors
    index: torch.Tensor  # [B] user indices (-1: no ID embedding)
    hist: torch.Tensor  # [B, H] history item indices, right-aligned
    mask: torch.Tensor  # [B, H] True where the history entry is real
    excluded: list[list[int]]  # per row, the items it excludes
    cold: list[bool]  # per row, a user served from a given history only


class Recommender:
    """The serving logic over one loaded artifact, independent of KServe (batched, thread-safe for reads)."""

    def __init__(
        self,
        artifact: Artifact,
        encoders: dict[str, Any] | None = None,
        *,
        search_pool: int = 100,
        blend: float = 0.1,
        bridge_weight: float = 0.2,
        ann_above: int | None = None,
        ann_ef: int = 400,
        ann_pool: int = 200,
    ) -> None:
        """``ann_above``: catalogues above this many items take their top-K from an approximate shortlist
        (:mod:`fusionrec.topk`: ``ann_ef`` candidates kept while searching its graph, ``ann_pool`` items
        shortlisted); None: exact at every size."""
        self.artifact = artifact
        self.model = artifact.model.eval()
        self.version = artifact.version
        self.modalities = list(self.model.modality_names)
        # the score's terms: one per modality, the item ID, the item-item term over the user's history (when
        # the model has one), the bias; the bias stays last
        # the terms a user's history adds beside the towers': the item-item and the content term, where the
        # model has them
        self.history_terms = [
            *(["history"] if self.model.has_item_item else []),
            *(["content"] if self.model.has_content_term else []),
        ]
        self.terms = [*self.modalities, "id", *self.history_terms, "bias"]
        self.search_pool, self.blend, self.bridge_weight = search_pool, blend, bridge_weight
        self.encoders = {}
        for m, enc in (encoders or {}).items():
            want = artifact.encoders.get(m, {}).get("identity")
            if want is None or str(want).startswith(PRECOMPUTED):
                continue  # the model has no such modality, or its vectors came precomputed: no query in it
            if want != enc.identity:
                raise ConfigError(
                    f"the {m} encoder here is {enc.identity!r} but the model was trained on {want!r}; "
                    f"configure the same checkpoint (encoders.{m}.checkpoint)"
                )
            self.encoders[m] = enc
        with torch.inference_mode():
            parts = self.model.item_parts()
        self.item_parts, self.item_part_bias = parts.parts, parts.bias  # [n, M + 2, d], [n, M + 2]
        self.item_vectors, self.item_bias = catalogue(self.model, parts)  # [n, d] unit vectors, [n]: built once
        self.search = ItemSearch.load(Path(artifact.path) / INDEX_DIR, self.model, identities(artifact.encoders))
        items = artifact.items.sort_values("item_idx")
        self.item_ids = items["item_id"].astype(str).to_numpy()
        self.item_index = {i: n for n, i in enumerate(self.item_ids)}
        self.titles = (
            items["title"].fillna("").astype(str).to_numpy()
            if "title" in items
            else np.full(len(items), "", dtype=object)
        )
        self.images = (
            items["image"].fillna("").astype(str).map(lambda p: Path(p).name if p else "").to_numpy()
            if "image" in items
            else np.full(len(items), "", dtype=object)
        )
        self.user_index = dict(zip(artifact.users["user_id"].astype(str), artifact.users["user_idx"].astype(int)))
        self.popularity = torch.from_numpy(artifact.popularity.astype(np.float32))
        self.n_items = len(self.item_ids)
        self.history_length = artifact.history.shape[1]
        self.topk = (
            CatalogueTopK.load(
                Path(artifact.path) / INDEX_DIR,
                self.model,
                self.item_vectors,
                self.item_bias,
                self.history_terms,
                ef=ann_ef,
                pool=ann_pool,
            )
            if ann_above is not None and self.n_items > ann_above
            else None
        )

    # -- helpers ---------------------------------------------------------------------------------

    def _items(self, ids: list[str], what: str) -> list[int]:
        unknown = [i for i in ids if i not in self.item_index]
        if unknown:
            raise NotFound(f"unknown item ids in {what}: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        return [self.item_index[i] for i in ids]

    def _result(self, idx: np.ndarray, scores: np.ndarray, terms: np.ndarray) -> Result:
        return Result(
            self.item_ids[idx].tolist(),
            self.titles[idx].tolist(),
            self.images[idx].tolist(),
            np.asarray(scores, dtype=np.float32),
            np.asarray(terms, dtype=np.float32),
        )

    def _explain(self, user: torch.Tensor, idx: np.ndarray, history_terms: np.ndarray) -> np.ndarray:
        """The model's score terms [len(idx), len(self.terms)] of catalogue items ``idx`` for one user vector
        and that user's history terms at those items (``history_terms``, [len(idx), len(self.history_terms)]:
        the item-item and the content term)."""
        t = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        with torch.inference_mode():
            terms = explain(
                user[None], self.item_parts[t][None], self.item_part_bias[t][None], self.model.config.temperature
            )[0].numpy()
        if self.history_terms:
            terms = np.concatenate([terms[:, :-1], np.asarray(history_terms, dtype=np.float32), terms[:, -1:]], axis=1)
        return terms

    def _allowed(self, row: Row, excluded: list[int]) -> torch.Tensor:
        if row.candidates is not None:
            allowed = torch.zeros(self.n_items, dtype=torch.bool)
            allowed[self._items(row.candidates, "candidates")] = True
        else:
            allowed = torch.ones(self.n_items, dtype=torch.bool)
        if excluded:
            allowed[excluded] = False
        return allowed

    def _user_vectors(self, rows: list[Row]) -> Users:
        """User vectors from IDs and histories, with what scoring them needs (:class:`Users`).

        Raises:
            NotFound: an unknown user without a history, or unknown item ids in a history or exclude list.
        """
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
                raise NotFound(
                    f"unknown user {row.user_id!r}: the model has no such user; send the user's history "
                    "('history': [item ids]) to be served as a new user, or omit user_id for popular items"
                )
            items = given
            if u is not None:
                users[n] = u
                stored = self.artifact.history[u][self.artifact.history_mask[u]].tolist()
                known = set(stored)
                items = stored + [i for i in given if i not in known]
            items = items[-H:]
            if items:  # right-aligned, the latest last, as in training: the tower reads the last columns
                hist[n, H - len(items) :] = torch.tensor(items, dtype=torch.long)
                mask[n, H - len(items) :] = True
            ex = self._items(row.exclude, "exclude")
            if row.exclude_seen:
                ex += given + (self.artifact.seen(u).tolist() if u is not None else [])
            excluded.append(ex)
        with torch.inference_mode():
            uv = self.model.users(users, hist, mask, self.item_vectors)
        cold = [bool(users[n] < 0 and mask[n].any()) for n in range(len(rows))]
        return Users(uv, users, hist, mask, excluded, cold)

    def _by_history(self, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The history terms over the whole catalogue [B, n, len(self.history_terms)] (the exact path)."""
        with torch.inference_mode():
            parts = [
                *([self.model.item_item(hist, mask)] if self.model.has_item_item else []),
                *([self.model.content_term(hist, mask)] if self.model.has_content_term else []),
            ]
        return torch.stack(parts, -1) if parts else torch.zeros(len(hist), self.n_items, 0)

    def _history_at(self, users: Users) -> list[Callable[[np.ndarray], np.ndarray]]:
        """Per row, its history terms at given items ([len(items), len(self.history_terms)])."""
        if self.topk is None:
            dense = self._by_history(users.hist, users.mask)
            return [
                lambda items, d=dense[n]: d[torch.as_tensor(items, dtype=torch.long)].numpy() for n in range(len(dense))
            ]
        rows = [self.topk.row_terms(users.hist[n : n + 1], users.mask[n : n + 1]) for n in range(len(users.hist))]
        return [lambda items, r=r: self.topk.terms_at(r, items) for r in rows]

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
        requests (no user, no history) by popularity with ``fallback`` set (its score is the item's
        interaction count, credited to the bias term)."""
        users = self._user_vectors(rows)
        uv = users.vectors
        if self.topk is None:
            by_history = self._by_history(users.hist, users.mask)
            with torch.inference_mode():
                scores = self.model.logits(uv, self.item_vectors, self.item_bias) + by_history.sum(-1)
        results = []
        for n, row in enumerate(rows):
            fallback = bool(users.index[n] < 0 and not users.mask[n].any())
            if fallback:
                idx, s = self._top(self.popularity, row, users.excluded[n])
                terms = np.zeros((len(idx), len(self.terms)), dtype=np.float32)
                terms[:, -1] = s
            elif self.topk is None:
                idx, s = self._top(scores[n], row, users.excluded[n])
                terms = self._explain(uv[n], idx, by_history[n][torch.from_numpy(idx)].numpy())
            else:
                idx, s, at = self._approximate(
                    uv[n], users.hist[n : n + 1], users.mask[n : n + 1], row, users.excluded[n]
                )
                terms = self._explain(uv[n], idx, at)
            res = self._result(idx, s, terms)
            res.fallback, res.cold = fallback, users.cold[n]
            res.user_vector = None if fallback else uv[n].numpy()
            results.append(res)
        return results

    def _top(self, scores: torch.Tensor, row: Row, excluded: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The row's top-K of scores over the whole catalogue: its candidates only, its exclusions out."""
        allowed = self._allowed(row, excluded)
        k = min(row.k, int(allowed.sum()))
        idx = torch.topk(scores.masked_fill(~allowed, float("-inf")), k).indices.numpy()
        return idx, scores[idx].numpy()

    def _approximate(
        self, user: torch.Tensor, hist: torch.Tensor, mask: torch.Tensor, row: Row, excluded: list[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-K from the catalogue index's shortlist, scored exactly (:mod:`fusionrec.topk`): the items,
        their scores and their history terms. A candidate list is scored whole; a shortlist that exclusions
        left shorter than K falls back to scoring every item."""
        terms = self.topk.row_terms(hist, mask)
        out = np.unique(np.asarray(excluded, dtype=np.int64))
        if row.candidates is not None:
            pool = np.setdiff1d(np.asarray(self._items(row.candidates, "candidates"), dtype=np.int64), out)
        else:
            pool = self.topk.shortlist(user, terms, out)
            if len(pool) < row.k:
                pool = np.setdiff1d(np.arange(self.n_items), out)
        s = self.topk.scores(user, terms, pool)
        top = np.argsort(-s, kind="stable")[: row.k]
        return pool[top], s[top], self.topk.terms_at(terms, pool[top])

    def encode(self, rows: list[Row]) -> list[dict[str, np.ndarray]]:
        """Each query row's vectors in its modalities' encoder spaces: the encoders' for text and image,
        the catalogue item's own for ``like`` (merged: a like plus a text queries both)."""
        queries: list[dict[str, np.ndarray]] = [{} for _ in rows]
        for m in ("text", "image"):
            asked = [i for i, r in enumerate(rows) if getattr(r, m) is not None]
            if not asked:
                continue
            if m not in self.encoders:
                raise BadRequest(self._no_encoder(m))
            enc = self.encoders[m].encode([getattr(rows[i], m) for i in asked])
            bad = [(i, enc.reasons[j]) for j, i in enumerate(asked) if not enc.mask[j]]
            if bad:
                raise BadRequest(f"row {bad[0][0]}: the {m} cannot be used: {bad[0][1]}")
            for j, i in enumerate(asked):
                queries[i][m] = np.asarray(enc.values[j], dtype=np.float32)
        liked = [i for i, r in enumerate(rows) if r.like is not None]
        if liked:
            own = self.search.item_queries(self._items([rows[i].like for i in liked], "like"))
            for i, q in zip(liked, own):
                if not q:
                    raise BadRequest(f"row {i}: item {rows[i].like!r} has no content in any modality to compare by")
                queries[i] = {**q, **queries[i]}
        return queries

    def _joint(self, rows: list[Row], queries: list[dict[str, np.ndarray]]) -> dict[int, dict[str, np.ndarray]]:
        """For the text queries that search the image space without a vector of their own there, the text in
        the image encoder's joint space where it has one (a CLIP checkpoint with its text tower), redacted
        as the text encoder redacts: row -> {"image": vector}. Empty otherwise (the bridge carries them)."""
        image = self.encoders.get("image")
        if image is None or getattr(image, "joint", None) is None or "text" not in self.encoders:
            return {}
        asked = [
            n
            for n, (r, q) in enumerate(zip(rows, queries))
            if r.text is not None and "image" not in q and r.space in ("both", "image")
        ]
        if not asked:
            return {}
        texts, _ = self.encoders["text"].prepare([rows[n].text for n in asked])
        vectors = image.encode_joint_text(texts)
        return {n: {"image": vectors[j]} for j, n in enumerate(asked)}

    def _no_encoder(self, m: str) -> str:
        identity = str(self.artifact.encoders.get(m, {}).get("identity", ""))
        can = sorted(self.encoders)
        alternatives = f"query by {' or '.join(can)}, or" if can else "query"
        if m in self.modalities and identity.startswith(PRECOMPUTED):
            return (
                f"this model's {m} vectors came precomputed ({identity}) and no encoder here makes them, so it "
                f"cannot be queried by {m}; {alternatives} by 'like': an item id"
            )
        return f"this model has no {m} modality; {alternatives} by 'like': an item id"

    def query(self, rows: list[Row]) -> list[Result]:
        """Items most like each query in the encoders' own spaces (see the module docstring), re-ranked by
        the user's taste when the row names a user or a history; with the query's item-tower vector."""
        queries = self.encode(rows)
        personal = [i for i, r in enumerate(rows) if r.personal]
        taste: dict[int, tuple[torch.Tensor, list[int], bool, Callable[[np.ndarray], np.ndarray]]] = {}
        if personal:
            users = self._user_vectors([rows[i] for i in personal])
            at = self._history_at(users)
            taste = {i: (users.vectors[j], users.excluded[j], users.cold[j], at[j]) for j, i in enumerate(personal)}
        with torch.inference_mode():
            vectors = self.tower(queries).vectors
        joint = self._joint(rows, queries)
        spaced = [self.search.in_spaces(q, r.space, joint.get(n)) for n, (q, r) in enumerate(zip(queries, rows))]
        weights = [{m: self.bridge_weight for m in via} for _, via in spaced]  # the query's own spaces weigh 1
        free = [n for n, r in enumerate(rows) if r.candidates is None]
        pool = max(self.search_pool, max(r.k for r in rows))
        hits = dict(zip(free, self.search.search([spaced[n][0] for n in free], pool, [weights[n] for n in free])))
        for n, row in enumerate(rows):  # a search within the row's own candidates: scored exactly
            if row.candidates is not None:
                items = np.unique(self._items(row.candidates, "candidates"))
                hits[n] = self.search.score(spaced[n][0], items, weights[n])
        T = self.model.config.temperature
        results = []
        for n, row in enumerate(rows):
            h = hits[n]
            excluded = set(taste[n][1] if n in taste else self._items(row.exclude, "exclude"))
            if row.like is not None:
                excluded.add(self.item_index[row.like])
            keep = np.array([i not in excluded for i in h.items], dtype=bool)
            items = h.items[keep]
            terms = np.zeros((len(items), len(self.terms)), dtype=np.float32)
            terms[:, : len(self.modalities)] = h.terms[keep]
            if n in taste:
                blend = self.blend if row.blend is None else row.blend
                terms = (1 - blend) * terms + blend * T * self._explain(taste[n][0], items, taste[n][3](items))
            scores = terms.sum(1)
            top = np.argsort(-scores, kind="stable")[: row.k]
            res = self._result(items[top], scores[top], terms[top])
            found = h.found[keep][top]
            res.found = [[m for m, f in zip(self.search.modalities, row_found) if f] for row_found in found]
            res.bridged = spaced[n][1]
            res.cold = n in taste and taste[n][2]
            res.embedding = vectors[n].numpy()
            res.user_vector = taste[n][0].numpy() if n in taste else None
            res.query = queries[n]
            results.append(res)
        return results

    def tower(self, queries: list[dict[str, np.ndarray]]) -> ItemOutput:
        """The item tower's output for queries given as encoder vectors (see :meth:`encode`)."""
        content = {}
        for m in self.modalities:
            asked = [i for i, q in enumerate(queries) if m in q]
            if asked:
                values = torch.zeros(len(queries), self.model.config.modalities[m])
                present = torch.zeros(len(queries), dtype=torch.bool)
                values[asked] = torch.from_numpy(np.stack([queries[i][m] for i in asked]))
                present[asked] = True
                content[m] = (values, present)
        return self.model.items(content=content)
