"""Similar-item search in each modality's own encoder space, with FAISS.

The fusion model's item vectors are trained for user preference and carry an ID embedding, so a photo
of an item does not land near that item there. Query by example therefore searches where the encoder
put the catalogue: one FAISS index per modality over the items' frozen embeddings (L2-normalised, inner
product = cosine), built once per model version when the artifact is written (``index/`` in the version
folder) and loaded with it.

A query names one or more modalities (a photo, a text, or an item's own embeddings for "more like this
item"). Each modality's index proposes its ``pool`` nearest items; the union is rescored exactly, the
score being the mean over the query's modalities of the cosine in that modality (an item without the
modality scores 0 there), so each modality's term is its cosine divided by the number of modalities.

Index kind: exact (``IndexFlatIP``) up to :data:`HNSW_ABOVE` items, HNSW (``IndexHNSWFlat``, M=32,
efSearch 128) above, where an exact scan per query would cost more than the model's own scoring.

A text query can also search the image space, and a photo the text space, through the bridge learned
from the catalogue's own text-photo pairs (:mod:`fusionrec.bridge`): :meth:`ItemSearch.in_spaces` puts
the query where the space it lacks can be searched, and the search goes on as above, a bridged space weighing
``serving.bridge_weight`` against 1 for each of the query's own (its share of the score is its weight over
the weights' sum). A photo is carried into the text space (the bridge's map of a photo query); a text
meets the photos in its own space, where the bridge has set each catalogue photo (the index
:data:`PHOTOS_BY_TEXT`, built with the version beside the others): the image space's term of a text
query is its cosine to each photo's place there. Each hit says which spaces' pools proposed it
(``found``: a photo found by the text counts as found in the image space). Where the image encoder is a
CLIP checkpoint with its text tower, a text query reaches the image space through CLIP's own joint space
instead (``joint`` in :meth:`ItemSearch.in_spaces`); a photo still reaches the text space by the bridge.

Where the version has a photo head (:mod:`fusionrec.photohead`, trained on camera-like views of the
catalogue's own photos), the image space searched is the encoder's vectors and the head's side by side
(:meth:`fusionrec.photohead.PhotoHead.extend`): a photo query, a bridged text and an item's own photo alike.
Where it has its items' titles alone (a text of two fields or more: ``index/text.titles.npy``), the text
index holds them after the whole texts, and an item's text similarity is the better of the two: a title
typed as a query is near the title, further from a title diluted by a long description.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionrec.bridge import PAIR, Bridge, train_bridge
from fusionrec.encoders.base import unit_rows
from fusionrec.photohead import PhotoHead, train_photo_head

log = logging.getLogger(__name__)

HNSW_ABOVE = 200_000
INDEX_DIR = "index"
TITLES_FILE = "text.titles.npy"  # the items' titles alone in the text space, searched beside the whole texts
SPACES = ("both", "text", "image")  # where a query by example searches: both spaces, or one of them
PHOTOS_BY_TEXT = "image@text"  # the catalogue's photos set in the text space by the bridge: a text query's image space


def column(key: str) -> str:
    """The modality a searched space's term counts for: ``image@text`` is the image space's."""
    return key.partition("@")[0]


def _new_index(dim: int, n: int):
    import faiss

    if n > HNSW_ABOVE:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
        return index
    return faiss.IndexFlatIP(dim)


def _features(model) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A fusion model's frozen item embeddings and their masks, per modality."""
    return (
        {m: getattr(model, f"feat_{m}").detach().cpu().numpy() for m in model.modality_names},
        {m: getattr(model, f"mask_{m}").detach().cpu().numpy() for m in model.modality_names},
    )


def _searched_photos(vectors: dict, masks: dict, head: PhotoHead | None) -> np.ndarray | None:
    """Every item's photo as the image space is searched (the head's side by side with the encoder's,
    zero rows where there is none), what the bridge sets in the text space; None without photos."""
    if "image" not in vectors:
        return None
    unit = unit_rows(vectors["image"]) * np.asarray(masks["image"], bool)[:, None]
    return head.extend(unit) if head is not None else unit


def _weight(weights: dict[str, float], key: str) -> float:
    """A searched space's weight: given by the space, or by the modality it counts for; 1 otherwise."""
    return weights.get(key, weights.get(column(key), 1.0))


def _shares(query: dict[str, np.ndarray], weights: dict[str, float] | None) -> dict[str, float]:
    """Each queried space's share of the score: its weight (1 unless given, by the space or by the modality
    it counts for) over the weights' sum."""
    w = {m: _weight(weights or {}, m) for m in query}
    total = sum(w.values()) or 1.0
    return {m: v / total for m, v in w.items()}


@dataclass
class SearchHits:
    """One query's candidates: catalogue indices and their score terms per queried modality."""

    items: np.ndarray  # [P] item indices
    terms: np.ndarray  # [P, n_modalities] (columns in ItemSearch.modalities order; 0 for modalities not queried)
    found: np.ndarray | None = None  # [P, n_modalities] bool: the spaces whose pool proposed each item

    @property
    def scores(self) -> np.ndarray:
        return self.terms.sum(1)


class ItemSearch:
    """Per-modality FAISS indexes over a catalogue's encoder embeddings (see the module docstring)."""

    def __init__(
        self,
        vectors: dict[str, np.ndarray],
        masks: dict[str, np.ndarray],
        indexes: dict | None = None,
        bridge: Bridge | None = None,
        head: PhotoHead | None = None,
        titles: np.ndarray | None = None,
    ) -> None:
        """``titles``: each item's title alone in the text space [n, d] (zero rows where it has none), searched
        beside its whole text: an item's text similarity is the better of the two."""
        self.bridge = bridge
        self.head = head if "image" in vectors else None
        self.modalities = sorted(vectors)
        self.vectors = {m: unit_rows(v) * masks[m][:, None] for m, v in vectors.items()}  # zeros where absent
        # what is indexed and scored: the encoder's vectors, the image space with the photo head beside them
        self.spaces = {m: self._space(m, v) for m, v in self.vectors.items()}
        self.masks = {m: np.asarray(masks[m], dtype=bool) for m in self.modalities}
        self.keys = list(self.modalities)  # the spaces searched, each with its index
        if (  # the photos set in the text space, where the bridge's map was fitted on this image space
            bridge is not None
            and all(m in vectors for m in PAIR)
            and bridge.photos.shape[0] == self.spaces["image"].shape[1]
        ):
            self.keys.append(PHOTOS_BY_TEXT)
            self.spaces[PHOTOS_BY_TEXT] = bridge.photos_in_text(self.spaces["image"]) * self.masks["image"][:, None]
            self.masks[PHOTOS_BY_TEXT] = self.masks["image"]
        self.titles = unit_rows(titles) if titles is not None and "text" in vectors else None
        self.rows = {m: np.flatnonzero(self.masks[m]) for m in self.keys}  # index row -> item index
        if self.titles is not None:  # the text index holds the titles after the texts
            self.rows["text"] = np.concatenate([self.rows["text"], np.flatnonzero(np.abs(self.titles).sum(1) > 0)])
        indexes = dict(indexes or {})
        self.indexes = {m: indexes[m] if m in indexes else self._build(m) for m in self.keys}

    def _space(self, m: str, unit: np.ndarray) -> np.ndarray:
        """Unit vectors [B, d] of modality ``m``'s encoder -> the space searched (unit, zero rows stay zero)."""
        return self.head.extend(unit) if m == "image" and self.head is not None else unit

    def _rows(self, m: str) -> np.ndarray:
        """The vectors modality ``m``'s index holds, in its row order (:attr:`rows`)."""
        own = self.spaces[m][self.masks[m]]
        if m == "text" and self.titles is not None:
            return np.concatenate([own, self.titles[self.rows[m][len(own) :]]])
        return own

    def _build(self, m: str):
        index = _new_index(self.spaces[m].shape[1], len(self.rows[m]))
        if len(self.rows[m]):
            index.add(np.ascontiguousarray(self._rows(m)))
        return index

    def _cosines(self, m: str, items: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Items' similarity to a query vector ``q`` in modality ``m``'s space searched (the better of the
        whole text and the title alone, where the version has titles)."""
        s = self.spaces[m][items] @ q
        if m == "text" and self.titles is not None:
            s = np.maximum(s, self.titles[items] @ q)
        return s

    @classmethod
    def from_model(
        cls, model, identities: dict[str, str] | None = None, views: dict[str, np.ndarray] | None = None
    ) -> ItemSearch:
        """The indexes over a fusion model's frozen item features (its ``feat_<m>`` / ``mask_<m>`` buffers),
        and the bridge between its text and image spaces trained on them (``identities``: each modality's
        encoder identity, which the bridge keeps; None: no bridge). ``views`` (per modality, the embedded
        other renderings of each item, [n_items, V, d]): the photos' camera-like views train the photo head,
        the texts' first view (the title alone) is searched beside the whole text."""
        vectors, masks = _features(model)
        views = views or {}
        head = None
        if views.get("image") is not None and "image" in vectors:
            head = train_photo_head(
                vectors["image"], masks["image"], views["image"], (identities or {}).get("image", "")
            )
        bridge = (
            train_bridge(vectors, masks, identities, photos=_searched_photos(vectors, masks, head))
            if identities is not None
            else None
        )
        titles = views["text"][:, 0] if views.get("text") is not None and "text" in vectors else None
        return cls(vectors, masks, bridge=bridge, head=head, titles=titles)

    def save(self, folder: str | Path) -> None:
        """Write ``<m>.faiss`` per modality and ``index.json`` (kind, size, dimension) into ``folder``."""
        import faiss

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {}
        for m in self.keys:
            faiss.write_index(self.indexes[m], str(folder / f"{m}.faiss"))
            meta[m] = {
                "kind": type(self.indexes[m]).__name__,
                "items": int(len(self.rows[m])),
                "dim": int(self.spaces[m].shape[1]),
            }
        (folder / "index.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if self.bridge is not None:
            self.bridge.save(folder)
        if self.head is not None:
            self.head.save(folder)
        if self.titles is not None:
            np.save(folder / TITLES_FILE, self.titles.astype(np.float32))

    @classmethod
    def load(cls, folder: str | Path, model, identities: dict[str, str] | None = None) -> ItemSearch:
        """The indexes shipped in an artifact's ``index/`` folder; built here (with a warning) for versions
        written before they were shipped, or when they do not match the model's features. Likewise the
        bridge, where ``identities`` (each modality's encoder identity) are given and the model has a
        text and an image modality."""
        import faiss

        folder = Path(folder)
        vectors, masks = _features(model)
        head = (
            PhotoHead.load(folder, (identities or {}).get("image"), vectors["image"].shape[1])
            if "image" in vectors
            else None
        )
        dims = {
            m: v.shape[1] + (head.weights.shape[1] if m == "image" and head is not None else 0)
            for m, v in vectors.items()
        }
        titles = np.load(folder / TITLES_FILE) if (folder / TITLES_FILE).exists() and "text" in vectors else None
        if titles is not None and titles.shape != vectors["text"].shape:
            titles = None  # titles of another catalogue or encoder: the whole texts alone
        extra = {"text": int((np.abs(titles).sum(1) > 0).sum())} if titles is not None else {}
        bridge, shipped = None, False
        if identities is not None and all(s in vectors for s in PAIR):
            bridge = Bridge.load(folder, identities, {m: v.shape[1] for m, v in vectors.items()}, dims["image"])
            shipped = bridge is not None
            if bridge is None:
                log.warning(
                    "%s: no bridge between the text and image spaces for these encoders; training it now", folder
                )
                bridge = train_bridge(vectors, masks, identities, photos=_searched_photos(vectors, masks, head))
        meta = (
            json.loads((folder / "index.json").read_text(encoding="utf-8")) if (folder / "index.json").exists() else {}
        )
        fits = set(vectors) <= set(meta) and all(
            meta[m]["items"] == int(masks[m].sum()) + extra.get(m, 0) and meta[m]["dim"] == dims[m] for m in vectors
        )
        if not fits:
            log.warning("%s: no search index for this model's modalities; building it now", folder)
            return cls(vectors, masks, bridge=bridge, head=head, titles=titles)
        indexes = {m: faiss.read_index(str(folder / f"{m}.faiss")) for m in vectors}
        # the photos' index in the text space, where the shipped bridge built it (otherwise built anew)
        by_text = meta.get(PHOTOS_BY_TEXT, {})
        if shipped and by_text.get("items") == int(masks["image"].sum()) and by_text.get("dim") == dims["text"]:
            indexes[PHOTOS_BY_TEXT] = faiss.read_index(str(folder / f"{PHOTOS_BY_TEXT}.faiss"))
        return cls(vectors, masks, indexes, bridge, head, titles)

    def in_spaces(
        self, query: dict[str, np.ndarray], space: str = "both", joint: dict[str, np.ndarray] | None = None
    ) -> tuple[dict[str, np.ndarray], dict]:
        """A query's vectors in the spaces ``space`` names (see :data:`SPACES`), the bridge carrying it into
        a space it has no vector of: (space -> vector, space -> the query modality carried from, for the
        spaces reached that way). ``joint``: the query's vectors already in such a space by a joint encoder
        (a CLIP checkpoint's text tower puts a text where its images are), used there in place of the
        bridge. Without either a query stays in its own spaces.

        Raises:
            BadRequest: the query has no vector in (and no way into) the space asked for.
        """
        from fusionrec.errors import BadRequest

        wanted = self.modalities if space == "both" else [space]
        out = {m: v for m, v in query.items() if m in wanted}
        via: dict[str, str] = {}
        for source, target in (PAIR, PAIR[::-1]):
            if target in wanted and target not in query and source in query:
                if joint and target in joint:
                    out[target] = joint[target]
                elif (source, target) == PAIR and PHOTOS_BY_TEXT in self.keys:
                    out[PHOTOS_BY_TEXT] = query[source]  # the text meets the photos in its own space
                elif (source, target) == PAIR[::-1] and self.bridge is not None:
                    out[target] = self.bridge.project(source, target, query[source][None])[0]
                else:
                    continue
                via[target] = source
        if not out:
            have = " and ".join(sorted(query)) or "nothing"
            raise BadRequest(
                f"this query has {have} and cannot search the {space} space"
                + ("" if self.bridge is not None else " (this model has no bridge between its text and image spaces)")
            )
        return out, via

    def score(
        self, query: dict[str, np.ndarray], items: np.ndarray, weights: dict[str, float] | None = None
    ) -> SearchHits:
        """One query's terms at the given items, exactly (no index): a search within a candidate list."""
        items = np.asarray(items, dtype=np.int64)
        terms = np.zeros((len(items), len(self.modalities)), dtype=np.float32)
        share = _shares(query, weights)
        for m in self.keys:
            if m in query:
                col = self.modalities.index(column(m))
                terms[:, col] = self._cosines(m, items, self._space(m, unit_rows(query[m][None]))[0]) * share[m]
        return SearchHits(items, terms, terms != 0)

    def item_queries(self, items: list[int]) -> list[dict[str, np.ndarray]]:
        """ "More like this item": each item's own normalised embedding in every modality it has."""
        return [{m: self.vectors[m][i] for m in self.modalities if self.masks[m][i]} for i in items]

    def search(
        self, queries: list[dict[str, np.ndarray]], pool: int, weights: list[dict[str, float]] | None = None
    ) -> list[SearchHits]:
        """For each query (modality -> vector in that encoder's space), the union of each modality's
        ``pool`` nearest items, rescored exactly (see the module docstring)."""
        proposals: list[list[tuple[np.ndarray, int]]] = [[] for _ in queries]
        normed: list[dict[str, np.ndarray]] = [{} for _ in queries]
        for m in self.keys:
            asked = [n for n, q in enumerate(queries) if m in q]
            if not asked or not len(self.rows[m]):
                continue
            col = self.modalities.index(column(m))
            block = self._space(m, unit_rows(np.stack([queries[n][m] for n in asked])))
            _, found = self.indexes[m].search(np.ascontiguousarray(block), min(pool, len(self.rows[m])))
            if weights:  # a space weighing less than 1 proposes its share of the pool (at least 10)
                cut = [max(10, round(pool * min(1.0, _weight(weights[n], m)))) for n in asked]
                found = [f[:c] for f, c in zip(found, cut)]
            for j, n in enumerate(asked):
                normed[n][m] = block[j]
                proposals[n].append((self.rows[m][found[j][found[j] >= 0]], col))
        hits = []
        for n, q in enumerate(normed):
            items = np.unique(np.concatenate([p for p, _ in proposals[n]])) if proposals[n] else np.zeros(0, np.int64)
            terms = np.zeros((len(items), len(self.modalities)), dtype=np.float32)
            found = np.zeros((len(items), len(self.modalities)), dtype=bool)
            share = _shares(q, weights[n] if weights else None)
            for m in q:
                col = self.modalities.index(column(m))
                terms[:, col] = self._cosines(m, items, q[m]) * share[m]
            for proposed, col in proposals[n]:
                found[:, col] = np.isin(items, proposed)
            hits.append(SearchHits(items, terms, found))
        return hits
