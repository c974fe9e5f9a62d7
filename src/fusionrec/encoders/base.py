"""The encoder interface: a batch in, a float32 matrix and a mask out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class Encoded:
    """Embeddings for a batch: ``values[i]`` is valid only where ``mask[i]``; ``reasons[i]`` says why not."""

    values: np.ndarray  # [n, dim] float32; zero rows where masked
    mask: np.ndarray  # [n] bool
    reasons: list[str | None] = field(default_factory=list)

    @classmethod
    def empty(cls, n: int, dim: int) -> Encoded:
        return cls(np.zeros((n, dim), dtype=np.float32), np.zeros(n, dtype=bool), [None] * n)


@runtime_checkable
class Encoder(Protocol):
    """One modality's encoder: what :func:`fusionrec.encoders.pipeline.run_encoder` calls.

    ``identity`` names the model and everything that changes its output (weights, preprocessing,
    pooling); the embedding cache is keyed by it, so a changed encoder never reuses stale vectors.
    An encoder may also have ``cost(prepared) -> int`` (e.g. a text's length): the misses are then
    embedded in that order, so similar inputs share a batch.
    """

    modality: str
    identity: str
    dim: int

    def prepare(self, inputs: list[Any]) -> tuple[list[Any | None], list[str | None]]:
        """Each input made ready to embed (filtered, read), None where it cannot be, with the reason."""

    def key(self, prepared: Any) -> str:
        """A content hash of one prepared input: its key in the embedding cache."""

    def embed(self, prepared: list[Any]) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Embed prepared inputs: values [n, dim] float32, ok [n] bool, and a reason where not ok."""

    def encode(self, batch: list[Any]) -> Encoded:
        """``prepare`` then ``embed`` a batch without the cache (a query's inputs); failures come back masked
        with a reason."""


def pick_device(requested: str = "auto") -> str:
    """``cuda`` when asked for or available under ``auto``, else ``cpu``."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        from fusionrec.errors import ConfigError

        raise ConfigError("encoders.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return requested


def hash_files(paths: list[Path], chunk: int = 1 << 20) -> str:
    """A sha256 over the names and bytes of files (the identity of a checkpoint)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()[:16]


def unit_rows(values) -> np.ndarray:
    """Row-wise unit length (numpy, float32; a zero row stays zero)."""
    values = np.asarray(values, dtype=np.float32)
    return values / np.maximum(np.linalg.norm(values, axis=-1, keepdims=True), 1e-12)


def l2_normalise(x):
    """Row-wise unit length (torch tensor in, tensor out)."""
    import torch

    return torch.nn.functional.normalize(x, p=2, dim=-1)
