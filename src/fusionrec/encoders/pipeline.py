"""Embed a validated dataset: every modality, through the cache, with masks and reasons on disk."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusionrec.encoders.base import Encoded, Encoder
from fusionrec.encoders.cache import EmbeddingCache

log = logging.getLogger(__name__)
TABULAR = "tabular"  # the items' side features, encoded by fusionrec.encoders.tabular


@dataclass
class ModalityEmbeddings:
    """One modality's item embeddings aligned with ``item_idx``, and how they were made."""

    name: str
    values: np.ndarray  # [n_items, dim] float32, zero where masked
    mask: np.ndarray  # [n_items] bool
    reasons: list[str | None]
    identity: str
    stats: dict[str, Any] = field(default_factory=dict)
    # other renderings of each item in this space, [n_items, V, dim] (zero where it has none): an image's
    # camera-like views (which train fusionrec.photohead), a text's first field alone (its title)
    views: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])


def run_encoder(
    encoder: Encoder, inputs: list, cache: EmbeddingCache | None, *, chunk: int = 512, progress: bool = True
) -> tuple[Encoded, dict[str, Any]]:
    """Prepare, look up the cache, embed only the misses (in chunks, with a progress bar), store them.

    Returns:
        (the encoded batch, stats: items, cached, computed, masked, seconds).
    """
    from fusionrec.progress import progress as progress_bar

    t0 = time.perf_counter()
    prepared, reasons = encoder.prepare(inputs)
    enc = Encoded.empty(len(inputs), encoder.dim)
    enc.reasons = list(reasons)
    idx = np.array([i for i, p in enumerate(prepared) if p is not None], dtype=np.int64)
    keys = [encoder.key(prepared[i]) for i in idx]
    found = np.zeros(len(idx), dtype=bool)
    if cache is not None and len(idx):
        vals, found = cache.get_many(encoder.identity, keys, encoder.dim)
        enc.values[idx[found]] = vals[found]
        enc.mask[idx[found]] = True
    misses = idx[~found]
    miss_keys = [k for k, f in zip(keys, found) if not f]
    if hasattr(encoder, "cost") and len(misses):  # optional (Encoder's docstring): similar inputs share a batch
        order = np.argsort([encoder.cost(prepared[i]) for i in misses], kind="stable")
        misses, miss_keys = misses[order], [miss_keys[j] for j in order]
    with progress_bar(total=len(misses), desc=f"embed {encoder.modality}", unit="item", enabled=progress) as bar:
        for s in range(0, len(misses), chunk):
            part = misses[s : s + chunk]
            values, ok, why = encoder.embed([prepared[i] for i in part])
            enc.values[part[ok]] = values[ok]
            enc.mask[part] = ok
            for j, i in enumerate(part):
                if not ok[j]:
                    enc.reasons[i] = why[j]
            if cache is not None and ok.any():
                cache.put_many(encoder.identity, [miss_keys[s + j] for j in np.flatnonzero(ok)], values[ok])
            bar.update(len(part))
    stats = {
        "items": len(inputs),
        "cached": int(found.sum()),
        "computed": int(len(misses)),
        "masked": int((~enc.mask).sum()),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return enc, stats


def item_texts(items: pd.DataFrame, fields: tuple[str, ...]) -> list[str | None]:
    """Each item's text fields joined in contract order (". " between them); None when all are empty."""
    out = []
    for row in items[list(fields)].itertuples(index=False):
        parts = [
            str(v).strip()
            for v in row
            if v is not None and not (isinstance(v, float) and np.isnan(v)) and str(v).strip()
        ]
        out.append(". ".join(parts) if parts else None)
    return out


def build_encoders(settings, modalities: set[str]) -> dict[str, Encoder]:
    """The text and image encoders the settings describe, for the modalities a dataset has."""
    from fusionrec.encoders.storage import resolve_checkpoint
    from fusionrec.privacy import PiiFilter

    cfg = settings.encoders
    out: dict[str, Any] = {}
    if "text" in modalities and "text" in cfg.modalities:
        from fusionrec.encoders.text import TextEncoder

        ckpt = resolve_checkpoint(cfg.text.checkpoint, settings.paths.cache) if cfg.text.checkpoint else None
        out["text"] = TextEncoder(
            ckpt,
            max_length=cfg.text.max_length,
            batch_size=cfg.text.batch_size,
            device=cfg.device,
            pii=PiiFilter(settings.privacy),
        )
    if "image" in modalities and "image" in cfg.modalities:
        from fusionrec.encoders.image import ImageEncoder

        ckpt = resolve_checkpoint(cfg.image.checkpoint, settings.paths.cache) if cfg.image.checkpoint else None
        out["image"] = ImageEncoder(
            ckpt,
            kind=cfg.image.kind,
            batch_size=cfg.image.batch_size,
            device=cfg.device,
            max_pixels=settings.validation.max_image_pixels,
        )
    return out


def dataset_modalities(dataset) -> list[str]:
    """The modalities a dataset can be embedded in: text, image (pretrained encoders), tabular (its item
    side features), its precomputed ones."""
    have = (["text"] if dataset.text_fields else []) + (["image"] if "image" in dataset.items else [])
    have += ["tabular"] if dataset.item_features and TABULAR not in dataset.modalities else []
    return have + sorted(dataset.modalities)


def encode_dataset(
    dataset,
    settings,
    *,
    encoders: dict[str, Any] | None = None,
    progress: bool = True,
    modalities: set[str] | None = None,
    views: int = 0,
) -> dict[str, ModalityEmbeddings]:
    """Embed every modality of a dataset (or those in ``modalities``): text and images with pretrained
    encoders, precomputed vectors as given.

    Args:
        dataset: a :class:`fusionrec.data.dataset.Dataset` (validated).
        settings: the run's settings (encoders, privacy, cache path).
        encoders: ready encoders by modality (default: built from the settings).
        modalities: embed only these (one pipeline task per modality).
        views: camera-like views of each photo to embed as well (:func:`fusionrec.photohead.view`), kept
            as the image embeddings' ``views``; with any, a text of two fields or more also keeps its first
            field alone (a title) as the text embeddings' ``views`` [n, 1, dim], which query by example
            searches beside the whole text.

    Raises:
        ConfigError: a modality the dataset does not have.
    """
    from fusionrec.errors import ConfigError

    available = dataset_modalities(dataset)
    wanted = set(available) if modalities is None else set(modalities)
    if wanted - set(available):
        raise ConfigError(
            f"dataset {dataset.name!r} has no modality {sorted(wanted - set(available))}; it has {available}"
        )
    # pretrained encoders for the items' own text and image columns; a precomputed modality named text or
    # image (MMRec's text_feat.npy) is taken as given
    have = (wanted & {"text", "image"}) - set(dataset.modalities)
    encoders = encoders if encoders is not None else build_encoders(settings, have)
    encoders = {m: e for m, e in encoders.items() if m in wanted}
    cache = EmbeddingCache(Path(settings.paths.cache) / "embeddings.sqlite")
    out: dict[str, ModalityEmbeddings] = {}
    try:
        inputs = {
            "text": lambda: item_texts(dataset.items, dataset.text_fields),
            "image": lambda: dataset.items["image"].tolist(),
        }
        for name, encoder in encoders.items():
            enc, stats = run_encoder(encoder, inputs[name](), cache, progress=progress)
            out[name] = ModalityEmbeddings(name, enc.values, enc.mask, enc.reasons, encoder.identity, stats)
            log.info("%s: %s", name, stats)
            if name == "image" and views > 0:
                out[name].views = _views(encoder, inputs[name](), views, cache, progress)
            if name == "text" and views > 0 and len(dataset.text_fields) > 1:
                first, _ = run_encoder(
                    encoder, item_texts(dataset.items, dataset.text_fields[:1]), cache, progress=progress
                )
                out[name].views = (first.values * first.mask[:, None])[:, None].astype(np.float32)
    finally:
        cache.close()
    if TABULAR in wanted and TABULAR not in dataset.modalities:
        out[TABULAR] = _tabular(dataset)
    for name, m in dataset.modalities.items():
        if name not in wanted:
            continue
        reasons = [None if ok else "no vector given" for ok in m.mask]
        out[name] = ModalityEmbeddings(
            name,
            m.values,
            m.mask,
            reasons,
            f"precomputed/{name}/{m.dim}",
            {"items": len(m.mask), "cached": 0, "computed": 0, "masked": int((~m.mask).sum()), "seconds": 0.0},
        )
    return out


def _views(encoder, images: list, n: int, cache, progress: bool) -> np.ndarray:
    """[len(images), n, dim]: each photo's ``n`` camera-like views embedded (zero where a photo is missing
    or does not decode), through the cache like the photos themselves."""
    from fusionrec.photohead import view

    prepared, _ = encoder.prepare(images)
    out = np.zeros((len(images), n, encoder.dim), dtype=np.float32)
    for k in range(n):
        shots = []
        for data in prepared:
            try:
                shots.append(view(data, k) if data is not None else None)
            except ValueError:
                shots.append(None)
        enc, stats = run_encoder(encoder, shots, cache, progress=progress)
        out[enc.mask, k] = enc.values[enc.mask]
        log.info("image view %d: %s", k, stats)
    return out


def _tabular(dataset) -> ModalityEmbeddings:
    from fusionrec.encoders import tabular

    t0 = time.perf_counter()
    spec = tabular.fit_columns(dataset.items, dataset.item_features)
    values, mask = tabular.encode(dataset.items, spec)
    reasons = [None if ok else "no side feature present" for ok in mask]
    stats = {
        "items": len(mask),
        "cached": 0,
        "computed": int(mask.sum()),
        "masked": int((~mask).sum()),
        "seconds": time.perf_counter() - t0,
        "columns": {c.name: c.kind + (" (log1p)" if c.log else "") for c in spec},
    }
    log.info("tabular: %d columns -> %d numbers", len(spec), values.shape[1])
    return ModalityEmbeddings(TABULAR, values, mask, reasons, tabular.identity(spec), stats)


def save_embeddings(embeddings: dict[str, ModalityEmbeddings], item_ids: np.ndarray, folder: Path) -> None:
    """Write ``{name}.npy``, ``{name}.mask.npy``, ``masked.csv`` (item, modality, reason) and ``embeddings.json``."""
    folder = Path(folder)
    rows = []
    meta = {}
    for name, m in embeddings.items():
        np.save(folder / f"{name}.npy", m.values)
        np.save(folder / f"{name}.mask.npy", m.mask)
        if m.views is not None:
            np.save(folder / f"{name}.views.npy", m.views.astype(np.float16))
        for i in np.flatnonzero(~m.mask):
            rows.append({"item_id": item_ids[i], "modality": name, "reason": m.reasons[i]})
        meta[name] = {
            "identity": m.identity,
            "dim": m.dim,
            "present": int(m.mask.sum()),
            **m.stats,
            "reasons": dict(Counter(r for r in m.reasons if r)),
            **({"views": int(m.views.shape[1])} if m.views is not None else {}),
        }
    pd.DataFrame(rows, columns=["item_id", "modality", "reason"]).to_csv(folder / "masked.csv", index=False)
    (folder / "embeddings.json").write_text(json.dumps({"modalities": meta}, indent=2), encoding="utf-8")


def load_embeddings(folder: str | Path) -> dict[str, ModalityEmbeddings]:
    """Read what :func:`save_embeddings` wrote (reasons are kept in masked.csv, not reloaded)."""
    from fusionrec.errors import DatasetError

    folder = Path(folder)
    meta_path = folder / "embeddings.json"
    if not meta_path.exists():
        raise DatasetError(f"{folder}: no embeddings.json; run 'fusionrec embed' first")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))["modalities"]
    out = {}
    for name, m in meta.items():
        values = np.load(folder / f"{name}.npy")
        mask = np.load(folder / f"{name}.mask.npy")
        views = folder / f"{name}.views.npy"
        out[name] = ModalityEmbeddings(
            name,
            values,
            mask,
            [None] * len(mask),
            m["identity"],
            {k: m[k] for k in ("items", "cached", "computed", "masked", "seconds") if k in m},
            np.load(views).astype(np.float32) if m.get("views") and views.exists() else None,
        )
    return out


def embed_to_folder(
    dataset_dir: str | Path, out: str | Path, settings, *, modalities: set[str] | None = None, progress: bool = True
) -> dict[str, ModalityEmbeddings]:
    """Embed a validated dataset folder and write the embeddings folder ``out`` (replaced atomically)."""
    from fusionrec.data.dataset import Dataset
    from fusionrec.io import atomic_dir

    ds = Dataset.load(dataset_dir)
    embeddings = encode_dataset(
        ds, settings, progress=progress, modalities=modalities, views=settings.encoders.image.views
    )
    with atomic_dir(Path(out)) as tmp:
        save_embeddings(embeddings, ds.items["item_id"].to_numpy(), tmp)
    return embeddings


def merge_embeddings(folders: list[str | Path], out: str | Path) -> list[str]:
    """Combine embeddings folders that each hold some modalities (one per pipeline task) into one folder.

    Raises:
        DatasetError: two folders hold the same modality, or they cover different items.
    """
    import shutil

    from fusionrec.errors import DatasetError
    from fusionrec.io import atomic_dir

    meta: dict[str, Any] = {}
    masked, n_items = [], None
    with atomic_dir(Path(out)) as tmp:
        for folder in map(Path, folders):
            part = json.loads((folder / "embeddings.json").read_text(encoding="utf-8"))["modalities"]
            for name, m in part.items():
                if name in meta:
                    raise DatasetError(f"modality {name!r} is in more than one embeddings folder ({folder})")
                rows = len(np.load(folder / f"{name}.mask.npy"))
                if n_items is not None and rows != n_items:
                    raise DatasetError(f"{folder}: {name} covers {rows} items, another modality {n_items}")
                n_items = rows
                meta[name] = m
                for suffix in (".npy", ".mask.npy", *((".views.npy",) if m.get("views") else ())):
                    shutil.copyfile(folder / f"{name}{suffix}", tmp / f"{name}{suffix}")
            masked.append(pd.read_csv(folder / "masked.csv", dtype=str))
        frame = (
            pd.concat(masked, ignore_index=True) if masked else pd.DataFrame(columns=["item_id", "modality", "reason"])
        )
        frame.to_csv(tmp / "masked.csv", index=False)
        (tmp / "embeddings.json").write_text(json.dumps({"modalities": meta}, indent=2), encoding="utf-8")
    return sorted(meta)
