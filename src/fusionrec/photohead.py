"""The photo head: the image space made to tell a catalogue's own products apart in other photos of them.

A shopper's photo of an article is not its catalogue photo: it is cropped, tilted, lit and compressed
otherwise, and a pretrained encoder's pooled features move with all of that about as much as with what
tells one product from its neighbours (a family's print, a cut). The head is a linear map ``W``
[d, :data:`DIM`] trained on the catalogue itself: each item's photo and :data:`VIEWS` views of it as a
camera might take them (:func:`view`: a crop, a tilt, light, blur, a smaller size, JPEG) are a positive
pair, the other items of the batch the negatives (a symmetric InfoNCE, temperature :data:`TEMPERATURE`).
A seeded :data:`HELD_OUT` share of the items is never trained on; its views pick the step kept (top-1
among the whole catalogue) and give the figures in ``index/photo_head.json``.

The image space of query by example is then the two spaces side by side: a photo's similarity to an item
is ``RAW_SHARE * cosine + (1 - RAW_SHARE) * cosine in the head``, computed as the inner product of the
vectors ``[sqrt(RAW_SHARE) * v, sqrt(1 - RAW_SHARE) * unit(v W)]`` (:meth:`PhotoHead.extend`), so one
FAISS index holds it. The views are embedded in the embed step (``<embeddings>/image.views.npy``, through
the embedding cache: a view is a deterministic function of the photo's bytes) and the head is trained when
the artifact is written (``index/photo_head.npz`` and ``.json``, with the image encoder's identity). A
version without one searches the encoder's space as it is.

Co-purchases (items bought together) were tried as the positives first: on the long-tail shop they lower
both figures (another colour in the top 10 0.93 -> 0.78 at equal shares, the article itself 0.97 -> 0.84;
development seed 1), since what a shopper buys together shares their colour and their taste, not the
product; ``benchmarks/retrieval.py --catalogue shop`` measures the head that is kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusionrec.encoders.base import unit_rows

log = logging.getLogger(__name__)

VIEWS = 2  # camera-like views per catalogue photo (encoders.image.views sets it; 0: no head)
DIM = 512
TEMPERATURE = 0.05
RAW_SHARE = 0.75  # the encoder's own cosine's share of a photo's similarity (chosen on development seed 1)
HELD_OUT, MAX_HELD_OUT, MIN_ITEMS = 0.1, 1000, 50
STEPS, CHECK_EVERY, PATIENCE, BATCH = 3000, 20, 15, 512
LEARNING_RATE, WEIGHT_DECAY = 3e-3, 1e-4
FILES = ("photo_head.npz", "photo_head.json")
VIEWS_FILE = "image.views.npy"  # [n_items, VIEWS, d] float16 in the embeddings folder; zero rows where masked


def view(image: bytes, n: int) -> bytes:
    """The ``n``-th camera-like view of a photo (JPEG bytes), a deterministic function of its bytes and ``n``:
    a crop keeping 70-100 % of each side, a tilt of up to 8 degrees, brightness x0.7-1.3 and contrast
    x0.8-1.2, a blur in half the views, 40-100 % of the size, JPEG at quality 40-90.

    Raises:
        ValueError: the bytes do not decode as an image.
    """
    from PIL import Image, ImageEnhance, ImageFilter

    seed = int.from_bytes(hashlib.sha256(image + n.to_bytes(4, "little")).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    try:
        img = Image.open(io.BytesIO(image))
        img.draft("RGB", (512, 512))  # a large JPEG decodes at a reduced size
        img = img.convert("RGB")
    except Exception as e:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ...
        raise ValueError("image does not decode") from e
    if max(img.size) > 512:
        img.thumbnail((512, 512))
    w, h = img.size
    cw, ch = max(8, int(w * rng.uniform(0.7, 1.0))), max(8, int(h * rng.uniform(0.7, 1.0)))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    fill = tuple(int(c) for c in np.asarray(img, dtype=np.float32).reshape(-1, 3).mean(0))
    img = img.crop((x, y, x + cw, y + ch)).rotate(float(rng.uniform(-8, 8)), resample=Image.BILINEAR, fillcolor=fill)
    img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.7, 1.3)))
    img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.8, 1.2)))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    scale = float(rng.uniform(0.4, 1.0))
    img = img.resize((max(16, int(img.width * scale)), max(16, int(img.height * scale))), Image.BILINEAR)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=int(rng.integers(40, 91)))
    return out.getvalue()


@dataclass
class PhotoHead:
    """The map, the image encoder it was trained on, and how well it carries to held-out items."""

    weights: np.ndarray  # W [d, DIM]
    identity: str  # the image encoder's identity
    held_out: np.ndarray  # the item indices never trained on
    figures: dict[str, float] = field(default_factory=dict)
    raw_share: float = RAW_SHARE

    def extend(self, vectors: np.ndarray) -> np.ndarray:
        """Image-space vectors [B, d] -> [B, d + DIM]: the encoder's unit vector and the head's side by side,
        weighted so that their inner product is the blended similarity (zero rows stay zero)."""
        v = unit_rows(vectors)
        return np.concatenate(
            [np.sqrt(self.raw_share) * v, np.sqrt(1 - self.raw_share) * unit_rows(v @ self.weights)], axis=1
        ).astype(np.float32)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / FILES[0], weights=self.weights, held_out=self.held_out)
        meta = {
            "identity": self.identity,
            "dim": int(self.weights.shape[0]),
            "raw_share": self.raw_share,
            "held_out": int(len(self.held_out)),
            "figures": self.figures,
        }
        (folder / FILES[1]).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, identity: str | None, dim: int) -> PhotoHead | None:
        """The head shipped in ``folder``, or None when there is none or it was trained on another image
        encoder (another identity or dimension)."""
        folder = Path(folder)
        if not all((folder / f).exists() for f in FILES):
            return None
        meta = json.loads((folder / FILES[1]).read_text(encoding="utf-8"))
        if meta.get("identity") != identity or meta.get("dim") != dim:
            return None
        with np.load(folder / FILES[0], allow_pickle=False) as z:
            weights, held_out = z["weights"].astype(np.float32), z["held_out"].astype(np.int64)
        return cls(weights, identity, held_out, dict(meta.get("figures", {})), float(meta["raw_share"]))


def _top1(queries: np.ndarray, catalogue: np.ndarray, own: np.ndarray) -> float:
    s = queries @ catalogue.T
    return float((s.argmax(1) == own).mean())


def train_photo_head(
    vectors: np.ndarray, mask: np.ndarray, views: np.ndarray, identity: str, seed: int = 0
) -> PhotoHead | None:
    """The head for a catalogue's image embeddings ``vectors`` [n, d] (``mask``: the items with a photo) and
    their views' embeddings ``views`` [n, V, d]; None with fewer than :data:`MIN_ITEMS` photos."""
    import torch
    import torch.nn.functional as F

    from fusionrec.contrastive import Schedule, fit_map

    views = np.asarray(views, dtype=np.float32)
    have = np.flatnonzero(np.asarray(mask, bool) & (np.abs(views).sum((1, 2)) > 0))
    if len(have) < MIN_ITEMS or views.shape[:1] != vectors.shape[:1]:
        return None
    order = np.random.default_rng(seed).permutation(have)
    n_held = min(MAX_HELD_OUT, max(10, int(round(HELD_OUT * len(have)))))
    held, trained = np.sort(order[:n_held]), order[n_held:]
    base = unit_rows(np.asarray(vectors, dtype=np.float32))
    n_views = views.shape[1]
    flat = unit_rows(views.reshape(-1, views.shape[2])).reshape(views.shape)
    with torch.random.fork_rng():
        g = torch.Generator().manual_seed(seed)
        x, y = torch.from_numpy(base), torch.from_numpy(flat)
        w = torch.nn.Parameter(torch.randn(x.shape[1], DIM, generator=g) / x.shape[1] ** 0.5)
        rng = np.random.default_rng(seed)
        rows = np.flatnonzero(np.asarray(mask, bool))  # the catalogue searched: the items with a photo
        own = np.searchsorted(rows, held)  # each held-out item's row there; its first view is the query
        before = _top1(flat[held, 0], base[rows], own)

        def pairs():
            b = torch.from_numpy(rng.choice(trained, min(BATCH, len(trained)), replace=False))
            k = torch.from_numpy(rng.integers(0, n_views, len(b)))
            return F.normalize(y[b, k] @ w, dim=1), F.normalize(x[b] @ w, dim=1)

        def check() -> float:
            return _top1(F.normalize(y[held, 0] @ w, dim=1).numpy(), F.normalize(x[rows] @ w, dim=1).numpy(), own)

        kept, best, step_kept = fit_map(
            w,
            pairs,
            check,
            Schedule(TEMPERATURE, LEARNING_RATE, WEIGHT_DECAY, STEPS, CHECK_EVERY, PATIENCE),
        )
    figures = {
        "items": int(len(have)),
        "views": int(n_views),
        "held_out_view_top1_encoder": round(before, 4),
        "held_out_view_top1_head": round(best, 4),
        "step": int(step_kept),
    }
    log.info("photo head: %s", figures)
    return PhotoHead(kept.numpy().astype(np.float32), identity, held, figures)
