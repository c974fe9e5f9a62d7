"""The one normalised representation every format is read into, and its on-disk form.

Users and items get contiguous integer indices (``user_idx``, ``item_idx``); their original ids are
kept (``user_id``, ``item_id``: integers when every id is written as one without a leading zero, else
strings as written).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fusionrec.data.raw import LINE, ROW, RawTables
from fusionrec.errors import DatasetError

FORMAT_VERSION = 1


@dataclass
class Modality:
    """A precomputed modality aligned with ``item_idx``: vectors plus a mask of items that have one."""

    values: np.ndarray  # [n_items, dim] float32; rows of masked items are zero and must not be used
    mask: np.ndarray  # [n_items] bool, True where the item has this modality

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])


@dataclass
class Dataset:
    """A dataset in the normalised form.

    ``interactions``: user_idx, item_idx (int32), timestamp (int64 unix seconds, -1 when unknown),
    rating (float32, NaN when absent), label (float32, 1 positive / 0 negative), and split (int8:
    0 train, 1 valid, 2 test) when the dataset carries one.
    ``items``: item_idx, item_id, the text fields, ``image`` (absolute path or URI; None when missing
    or rejected), side features. ``users``: user_idx, user_id, side features.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    text_fields: tuple[str, ...] = ()
    item_features: tuple[str, ...] = ()
    user_features: tuple[str, ...] = ()
    modalities: dict[str, Modality] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def has_split(self) -> bool:
        return "split" in self.interactions

    def summary(self) -> dict[str, object]:
        """Counts a person wants to see first."""
        inter = self.interactions
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": len(inter),
            "positives": int((inter["label"] > 0).sum()),
            "density": round(len(inter) / max(1, self.n_users * self.n_items), 6),
            "text_fields": list(self.text_fields),
            "items_with_image": int(self.items["image"].notna().sum()) if "image" in self.items else 0,
            "modalities": {k: {"dim": m.dim, "present": int(m.mask.sum())} for k, m in self.modalities.items()},
        }

    # -- on disk -----------------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """Write into ``folder`` (which must exist): Parquet tables, .npy modalities, dataset.json."""
        folder = Path(folder)
        self.interactions.to_parquet(folder / "interactions.parquet", index=False)
        self.items.to_parquet(folder / "items.parquet", index=False)
        self.users.to_parquet(folder / "users.parquet", index=False)
        if self.modalities:
            (folder / "modalities").mkdir(exist_ok=True)
        for name, m in self.modalities.items():
            np.save(folder / "modalities" / f"{name}.npy", m.values)
            np.save(folder / "modalities" / f"{name}.mask.npy", m.mask)
        meta = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "text_fields": list(self.text_fields),
            "item_features": list(self.item_features),
            "user_features": list(self.user_features),
            "modalities": sorted(self.modalities),
            "summary": self.summary(),
        }
        (folder / "dataset.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> Dataset:
        """Read a dataset written by :meth:`save` (a validated dataset folder).

        Raises:
            DatasetError: the folder is not a saved dataset or was written by another format version.
        """
        folder = Path(folder)
        meta_path = folder / "dataset.json"
        if not meta_path.exists():
            raise DatasetError(f"{folder}: not a validated dataset (no dataset.json); run 'fusionrec data validate'")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"{meta_path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
        modalities = {
            n: Modality(np.load(folder / "modalities" / f"{n}.npy"), np.load(folder / "modalities" / f"{n}.mask.npy"))
            for n in meta["modalities"]
        }
        return cls(
            name=meta["name"],
            interactions=pd.read_parquet(folder / "interactions.parquet"),
            items=pd.read_parquet(folder / "items.parquet"),
            users=pd.read_parquet(folder / "users.parquet"),
            text_fields=tuple(meta["text_fields"]),
            item_features=tuple(meta["item_features"]),
            user_features=tuple(meta["user_features"]),
            modalities=modalities,
        )


# ---------------------------------------------------------------------------------------------------
# Normalisation


def _typed_ids(ids: pd.Series) -> np.ndarray:
    """Integers when every id is an integer written as Python writes it (``42``; so it comes back out as it
    went in), strings otherwise: ``0108775015``, ``+7`` or ``1e3`` keep the form the data wrote."""
    as_str = ids.astype(str).str.strip()
    canonical = as_str.str.fullmatch(r"0|-?[1-9][0-9]{0,17}")  # 18 digits at most: an int64 holds them all
    if canonical.all():
        return as_str.astype(np.int64).to_numpy()
    return as_str.to_numpy(dtype=object)


def _strict_number(df: pd.DataFrame, col: str, file: str) -> pd.Series:
    parsed = pd.to_numeric(df[col], errors="coerce")
    bad = df[col].notna() & parsed.isna()
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise DatasetError(
            f"{file}: column '{col}': value {df[col].iloc[i]!r} at line {df[LINE].iloc[i]} is not a number"
        )
    return parsed


def _side_features(df: pd.DataFrame, cols: tuple[str, ...]) -> pd.DataFrame:
    """Numeric where every present value parses as a number, strings otherwise."""
    out = {}
    for c in cols:
        num = pd.to_numeric(df[c], errors="coerce")
        out[c] = num.astype("float64") if (num.notna() == df[c].notna()).all() else df[c].astype("object")
    return pd.DataFrame(out, index=df.index)


def normalise(tables: RawTables) -> Dataset:
    """Turn (validated or raw) tables into a :class:`Dataset` with contiguous indices.

    Values are coerced strictly: a value that does not parse stops here with its file, column and
    line. After validation nothing can fail, since validation drops or masks such records.

    Raises:
        DatasetError: a value has the wrong type, or an interaction names an unknown user or item.
    """
    from fusionrec.validation.checks import as_id, parse_timestamp

    c = tables.contract
    files = tables.files
    inter = tables.interactions.copy()
    inter["user_id"] = as_id(inter["user_id"])
    inter["item_id"] = as_id(inter["item_id"])

    # Items: the catalogue table's order, or the MMRec item ids (row i of each .npy is itemID i).
    if tables.items is not None:
        items_raw = tables.items.copy()
        items_raw["item_id"] = as_id(items_raw["item_id"])
        if items_raw["item_id"].duplicated().any() or items_raw["item_id"].isna().any():
            bad = items_raw["item_id"][items_raw["item_id"].duplicated() | items_raw["item_id"].isna()].iloc[0]
            raise DatasetError(
                f"{files.get('items')}: column 'item_id': id {bad!r} is missing or repeated; "
                "run 'fusionrec data validate' to quarantine such records"
            )
        item_keys = items_raw["item_id"].astype(str)
    else:
        n = min(m.shape[0] for m, _ in tables.modalities.values())
        items_raw = pd.DataFrame({"item_id": [str(i) for i in range(n)], LINE: np.arange(n) + 1})
        item_keys = items_raw["item_id"]
    if tables.users is not None:
        users_raw = tables.users.copy()
        users_raw["user_id"] = as_id(users_raw["user_id"])
        user_keys = users_raw["user_id"].astype(str)
    else:
        uniq = pd.Series(inter["user_id"].dropna().unique())
        numeric = pd.to_numeric(uniq, errors="coerce")
        uniq = uniq.iloc[np.lexsort((uniq.to_numpy(dtype=str), numeric.fillna(np.inf).to_numpy()))]
        users_raw = pd.DataFrame({"user_id": uniq.to_numpy()})
        user_keys = users_raw["user_id"].astype(str)

    user_index = pd.Index(user_keys)
    item_index = pd.Index(item_keys)
    u = user_index.get_indexer(inter["user_id"].astype(str))
    i = item_index.get_indexer(inter["item_id"].astype(str))
    for name, idx, col in (("user", u, "user_id"), ("item", i, "item_id")):
        if (idx < 0).any():
            k = int(np.argmax(idx < 0))
            raise DatasetError(
                f"{files.get('interactions')}: column '{col}': unknown {name} {inter[col].iloc[k]!r} "
                f"at line {inter[LINE].iloc[k]}"
            )

    out = pd.DataFrame({"user_idx": u.astype(np.int32), "item_idx": i.astype(np.int32)})
    if "timestamp" in inter:
        ts, bad = parse_timestamp(inter["timestamp"], c.interactions.timestamp_unit)
        if bad.any():
            k = int(np.argmax(bad.to_numpy()))
            raise DatasetError(
                f"{files.get('interactions')}: column 'timestamp': value {inter['timestamp'].iloc[k]!r} "
                f"at line {inter[LINE].iloc[k]} does not parse as unit {c.interactions.timestamp_unit}"
            )
        out["timestamp"] = ts.fillna(-1).astype(np.int64).to_numpy()
    else:
        out["timestamp"] = np.full(len(inter), -1, dtype=np.int64)
    rating = _strict_number(inter, "rating", files.get("interactions", "")) if "rating" in inter else None
    out["rating"] = (
        (rating if rating is not None else pd.Series(np.nan, index=inter.index)).astype(np.float32).to_numpy()
    )
    if "label" in inter:
        out["label"] = _strict_number(inter, "label", files.get("interactions", "")).astype(np.float32).to_numpy()
    elif rating is not None and c.interactions.implicit.min_rating is not None:
        out["label"] = (rating >= c.interactions.implicit.min_rating).astype(np.float32).to_numpy()
    else:
        out["label"] = np.ones(len(inter), dtype=np.float32)
    if "split" in inter:
        out["split"] = _strict_number(inter, "split", files.get("interactions", "")).astype(np.int8).to_numpy()

    items = pd.DataFrame(
        {"item_idx": np.arange(len(items_raw), dtype=np.int32), "item_id": _typed_ids(items_raw["item_id"])}
    )
    if "title" in items_raw:
        items["title"] = items_raw["title"].to_numpy()
    for f in tables.text_fields:
        items[f] = items_raw[f].to_numpy()
    if "image" in items_raw:
        items["image"] = [
            None
            if p is None or (isinstance(p, float) and np.isnan(p))
            else (str(p) if "://" in str(p) else str(c.resolve(str(p))))
            for p in items_raw["image"]
        ]
    side_items = _side_features(items_raw, tables.side_item)
    for col in side_items:
        items[col] = side_items[col].to_numpy()

    users = pd.DataFrame(
        {"user_idx": np.arange(len(users_raw), dtype=np.int32), "user_id": _typed_ids(users_raw["user_id"])}
    )
    side_users = _side_features(users_raw, tables.side_user)
    for col in side_users:
        users[col] = side_users[col].to_numpy()

    modalities = {}
    for name, (matrix, ids) in tables.modalities.items():
        if ids is not None:
            rows = pd.Index([str(x) for x in ids]).get_indexer(item_keys)
        elif tables.items is not None:
            rows = items_raw[ROW].to_numpy()  # the item's row in the items file as read
        else:
            rows = np.arange(len(items_raw))
        values = np.zeros((len(items_raw), matrix.shape[1]), dtype=np.float32)
        have = rows >= 0
        values[have] = matrix[rows[have]]
        finite = np.isfinite(values).all(axis=1)
        mask = have & finite
        values[~mask] = 0.0
        modalities[name] = Modality(values, mask)

    return Dataset(
        c.name,
        out,
        items,
        users,
        tuple(tables.text_fields),
        tuple(side_items.columns),
        tuple(side_users.columns),
        modalities,
    )
