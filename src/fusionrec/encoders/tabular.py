"""Tabular side features (the contract's ``items.roles.side_features``) as a modality of their own.

No pretrained model: each column becomes a few numbers, fitted on the catalogue (item content, never
interactions, so a cold item is encoded like any other):

- a numeric column (every present value, or 90% of them, parses as a number): standardised, after
  ``log1p`` when it is a non-negative count with a long tail (vote counts, budgets); a second number
  flags a missing value;
- any other column: one-hot over its most frequent values (at most :data:`MAX_LEVELS`, each held by
  at least :data:`MIN_ITEMS` items); rarer values are all zeros.

An item with no value in any column is masked. The identity names the columns and how each was
encoded, so a changed catalogue schema never passes for the same modality.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

MAX_LEVELS = 16
MIN_ITEMS = 5
CLIP = 5.0  # standardised values beyond this many deviations are clipped


@dataclass
class Column:
    """How one side-feature column is encoded."""

    name: str
    kind: str  # "numeric" or "categorical"
    log: bool = False
    mean: float = 0.0
    std: float = 1.0
    levels: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return 2 if self.kind == "numeric" else len(self.levels)


def _numeric(values: pd.Series) -> pd.Series | None:
    """The column as floats when at least 90% of its present values parse, else None."""
    present = values.notna()
    parsed = pd.to_numeric(values, errors="coerce")
    if present.sum() == 0 or parsed.notna().sum() < 0.9 * present.sum():
        return None
    return parsed.astype("float64")


def fit_columns(items: pd.DataFrame, columns: tuple[str, ...]) -> list[Column]:
    """Each column's encoding, fitted on the catalogue."""
    out = []
    for name in columns:
        raw = items[name]
        num = _numeric(raw)
        if num is not None and num.nunique() > 2 * MAX_LEVELS or (num is not None and raw.dtype.kind == "f"):
            x = num.dropna().to_numpy()
            log = bool(len(x) and x.min() >= 0 and np.quantile(x, 0.99) > 10 * (np.median(x) + 1))
            x = np.log1p(x) if log else x
            std = float(x.std()) if len(x) > 1 else 1.0
            out.append(Column(name, "numeric", log, float(x.mean()) if len(x) else 0.0, std if std > 1e-12 else 1.0))
        else:
            counts = raw.dropna().astype(str).value_counts()
            levels = tuple(counts[counts >= MIN_ITEMS].index[:MAX_LEVELS])
            if levels:
                out.append(Column(name, "categorical", levels=levels))
    return out


def encode(items: pd.DataFrame, spec: list[Column]) -> tuple[np.ndarray, np.ndarray]:
    """[n_items, width] float32 values and the [n_items] mask (some column present)."""
    blocks, present = [], np.zeros(len(items), dtype=bool)
    for c in spec:
        raw = items[c.name]
        if c.kind == "numeric":
            x = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
            have = np.isfinite(x)
            x = np.where(have, x, 0.0)
            x = np.log1p(np.maximum(x, 0.0)) if c.log else x
            z = np.clip((x - c.mean) / c.std, -CLIP, CLIP) * have
            blocks.append(np.stack([z, (~have).astype(np.float64)], axis=1))
        else:
            have = raw.notna().to_numpy()
            text = raw.astype(str).to_numpy()
            blocks.append(np.stack([(text == level) & have for level in c.levels], axis=1).astype(np.float64))
        present |= have
    values = np.concatenate(blocks, axis=1).astype(np.float32) if blocks else np.zeros((len(items), 0), np.float32)
    values[~present] = 0.0
    return values, present


def identity(spec: list[Column]) -> str:
    """``tabular/{width}/{hash of the columns and their encodings}``."""
    desc = json.dumps([[c.name, c.kind, c.log, c.levels] for c in spec])
    return f"tabular/{sum(c.width for c in spec)}/{hashlib.sha256(desc.encode()).hexdigest()[:12]}"
