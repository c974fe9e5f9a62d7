"""A model artifact: one folder per trained model, the only format serving and evaluation read.

A folder holds ``model.safetensors`` (weights and the frozen item features, so the item matrix can be
rebuilt at load), ``config.json`` (the FusionConfig), ``training.json`` (TrainConfig, split, history),
``encoders.json`` (encoder identities and dimensions), ``items.parquet`` and ``users.parquet`` (ids and
indices), ``user_history.npz``, ``seen.npz`` (every item each user interacted with, CSR: what serving
excludes as already seen, and item popularity), ``metrics.json`` (:mod:`fusionrec.metrics`),
``model_card.md`` and ``curves.png``, ``index/`` (one FAISS index per modality over the items' encoder
embeddings, for query by example: :mod:`fusionrec.search`) and ``checksums.json`` (sha256 of every other
file, verified at load). The registry (:mod:`fusionrec.registry`) numbers them and picks the champion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fusionrec import metrics as metrics_file
from fusionrec import topk
from fusionrec.errors import DatasetError
from fusionrec.io import atomic_dir, sha256_file
from fusionrec.model import FusionConfig, FusionRecModel
from fusionrec.search import INDEX_DIR, ItemSearch

CHECKSUMS = "checksums.json"  # sha256 of every other file of a version, verified at load


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (by relative path), but the checksum file itself."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS):
        out[path.relative_to(folder).as_posix()] = sha256_file(path)
    return out


def write_checksums(folder: Path) -> None:
    (folder / CHECKSUMS).write_text(json.dumps(file_digests(folder), indent=2), encoding="utf-8")


def verify_checksums(folder: Path) -> None:
    """Raises: DatasetError: a file of the version changed, went missing or was added since it was written."""
    listed = folder / CHECKSUMS
    if not listed.exists():
        return  # versions written before checksums
    try:
        want = json.loads(listed.read_text(encoding="utf-8"))
    except ValueError:
        raise DatasetError(f"{folder}: {CHECKSUMS} is not JSON; the version is damaged") from None
    got = file_digests(folder)
    changed = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    if changed:
        raise DatasetError(
            f"{folder}: files changed since the version was written: {changed[:5]}; refusing to load "
            "it (restore the version from the registry's storage, or train again)"
        )


@dataclass
class Artifact:
    """A loaded model version."""

    path: Path
    model: FusionRecModel
    config: FusionConfig
    items: pd.DataFrame
    users: pd.DataFrame
    history: torch.Tensor
    history_mask: torch.Tensor
    metrics: dict[str, Any]
    encoders: dict[str, Any]
    seen_indptr: np.ndarray  # CSR over users: seen_indices[seen_indptr[u]:seen_indptr[u + 1]] are u's items
    seen_indices: np.ndarray

    def seen(self, user_idx: int) -> np.ndarray:
        """The items user ``user_idx`` interacted with (the ``seen`` rows given at save time)."""
        return self.seen_indices[self.seen_indptr[user_idx] : self.seen_indptr[user_idx + 1]]

    @property
    def popularity(self) -> np.ndarray:
        """Interactions per item (from the ``seen`` rows)."""
        return np.bincount(self.seen_indices, minlength=self.config.n_items)

    @property
    def version(self) -> str:
        return self.path.name


def identities(encoders: dict[str, Any]) -> dict[str, str]:
    """Each modality's encoder identity, from an artifact's ``encoders.json`` content."""
    return {m: str(e.get("identity", "")) for m, e in encoders.items()}


def write_artifact(
    target: str | Path,
    model: FusionRecModel,
    *,
    version: str,
    dataset,
    encoders: dict[str, Any],
    training: dict[str, Any],
    history: torch.Tensor,
    history_mask: torch.Tensor,
    metrics: dict[str, Any],
    card: str,
    curves: Path | None = None,
    seen: pd.DataFrame | None = None,
    views: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a model artifact into the folder ``target`` (replaced atomically), labelled ``version``.

    A candidate that is not yet in a registry is written with its own label (e.g. ``candidate``) and
    numbered when :func:`fusionrec.registry.register` copies it in.
    ``seen``: the (user_idx, item_idx) rows serving excludes as already seen; default: the items of ``history``.
    ``views``: per modality, the embedded other renderings of each item ([n_items, V, d]): the photos'
    camera-like views, which train the photo head shipped in ``index/`` (:mod:`fusionrec.photohead`), and
    the texts' titles, shipped there to be searched beside the whole texts; None: neither.
    """
    from safetensors.torch import save_file

    target = Path(target)
    with atomic_dir(target) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors")
        )
        (tmp / "config.json").write_text(model.config.model_dump_json(indent=2), encoding="utf-8")
        (tmp / "training.json").write_text(json.dumps(training, indent=2, default=str), encoding="utf-8")
        (tmp / "encoders.json").write_text(json.dumps(encoders, indent=2), encoding="utf-8")
        items = pd.DataFrame({"item_idx": dataset.items["item_idx"], "item_id": dataset.items["item_id"].astype(str)})
        for col in ("title", "image"):
            if col in dataset.items:
                items[col] = dataset.items[col]
        items.to_parquet(tmp / "items.parquet", index=False)
        pd.DataFrame(
            {"user_idx": dataset.users["user_idx"], "user_id": dataset.users["user_id"].astype(str)}
        ).to_parquet(tmp / "users.parquet", index=False)
        np.savez_compressed(tmp / "user_history.npz", history=history.numpy(), mask=history_mask.numpy())
        if seen is None:
            rows, cols = np.nonzero(history_mask.numpy())
            seen = pd.DataFrame({"user_idx": rows, "item_idx": history.numpy()[rows, cols]})
        indptr, indices = _csr(seen, dataset.n_users)
        np.savez_compressed(tmp / "seen.npz", indptr=indptr, indices=indices)
        metrics_file.write(
            tmp, {**metrics, "version": version, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        )
        (tmp / "model_card.md").write_text(card.replace("{version}", version), encoding="utf-8")
        if curves is not None and curves.exists():
            (tmp / "curves.png").write_bytes(curves.read_bytes())
        ItemSearch.from_model(model, identities(encoders), views).save(tmp / INDEX_DIR)
        if model.config.n_items > topk.SHIP_ABOVE:
            topk.save_index(model, *topk.catalogue(model), tmp / INDEX_DIR)
        write_checksums(tmp)
    return target


def _csr(rows: pd.DataFrame, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = rows[["user_idx", "item_idx"]].drop_duplicates().sort_values(["user_idx", "item_idx"])
    counts = np.bincount(pairs["user_idx"].to_numpy(), minlength=n_users)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), pairs["item_idx"].to_numpy(np.int64)


def load_artifact(path: str | Path, device: str = "cpu") -> Artifact:
    """Read a version folder (a local path, or the /mnt/models folder KServe's storage initializer fills).

    Raises:
        DatasetError: the folder is not a fusionrec model artifact.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "model.safetensors").exists() or not (path / "config.json").exists():
        raise DatasetError(f"{path}: not a fusionrec model artifact (model.safetensors and config.json expected)")
    verify_checksums(path)
    raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    raw.setdefault("item_bias", False)  # versions written before the item bias existed
    raw.setdefault("item_item", 0)  # and before the item-item term
    raw.setdefault("content_term", False)  # and before the content term
    raw.setdefault("content_neighbours", 0)  # and before its neighbourhood
    raw.setdefault("taste_clusters", False)  # and before its taste term
    above, n = raw.pop("item_item_max_items", None), raw.get("n_items")
    if isinstance(above, int) and isinstance(n, int) and n > above:
        raw["item_item"] = 0  # versions before the sparse form had no item-item term above that size
    config = FusionConfig.model_validate(raw)
    model = FusionRecModel(config)
    state = load_file(str(path / "model.safetensors"), device=device)
    if config.item_item == 0:  # versions written before the item-item term have none of its (empty) buffers
        for name in ("ii_index", "ii_value", "ii_weight"):
            state.setdefault(name, model.state_dict()[name])
    for name in ("cc_weight", "cn_index", "cn_value", "cn_weight", "tc_label", "tc_clusters", "tc_weight"):
        state.setdefault(name, model.state_dict()[name])  # versions before the content term (its neighbourhood,
        # its taste term): weight 0, no neighbours, no clusters
    model.load_state_dict(state)
    model.to(device).eval()
    h = np.load(path / "user_history.npz")
    if (path / "seen.npz").exists():
        seen = np.load(path / "seen.npz")
        indptr, indices = seen["indptr"], seen["indices"]
    else:  # versions written before seen.npz: the stored histories
        rows, cols = np.nonzero(h["mask"])
        indptr, indices = _csr(pd.DataFrame({"user_idx": rows, "item_idx": h["history"][rows, cols]}), config.n_users)
    return Artifact(
        path,
        model,
        config,
        pd.read_parquet(path / "items.parquet"),
        pd.read_parquet(path / "users.parquet"),
        torch.from_numpy(h["history"]),
        torch.from_numpy(h["mask"]),
        metrics_file.read(path).model_dump(exclude_none=True),
        json.loads((path / "encoders.json").read_text(encoding="utf-8")),
        indptr,
        indices,
    )
