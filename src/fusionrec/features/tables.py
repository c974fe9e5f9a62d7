"""The offline feature tables (Parquet) that Feast's file offline store reads.

See :mod:`fusionrec.features.definitions` for the time semantics that make them point-in-time correct.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
DAY = 86_400


@dataclass
class FeatureManifest:
    """What ``fusionrec features build`` wrote; the feature repository is declared from it."""

    dataset: str
    modalities: list[str]
    user_features: dict[str, str]  # name -> float | string
    history_length: int
    users: int
    items: int
    interactions: int
    # "given", or how missing timestamps were filled (see build_feature_tables)
    event_time: str = "given"

    def save(self, folder: Path) -> None:
        (Path(folder) / "features.json").write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> FeatureManifest:
        from fusionrec.errors import DatasetError

        path = Path(folder) / "features.json"
        if not path.exists():
            raise DatasetError(f"{folder}: no features.json; run 'fusionrec features build' first")
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def _ids(values) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=object)


def _stamp(seconds: np.ndarray, extra_us: int = 0) -> pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(seconds, dtype=np.int64) * 1_000_000 + extra_us, unit="us", utc=True)


def item_stats_table(inter: pd.DataFrame, item_ids: np.ndarray) -> pd.DataFrame:
    """Daily cumulative statistics per item, each row stamped at the end of its day.

    ``inter`` needs item_idx, timestamp (unix s) and rating (NaN when none).
    """
    day = inter["timestamp"].to_numpy() // DAY
    df = pd.DataFrame(
        {
            "item_idx": inter["item_idx"].to_numpy(),
            "day": day,
            "ts": inter["timestamp"].to_numpy(),
            "rating": inter["rating"].to_numpy(dtype=np.float64),
        }
    )
    df["rated"] = df["rating"].notna()
    g = (
        df.groupby(["item_idx", "day"], sort=True)
        .agg(n=("ts", "size"), s=("rating", "sum"), r=("rated", "sum"), last=("ts", "max"))
        .reset_index()
    )
    g["popularity"] = g.groupby("item_idx")["n"].cumsum()
    rating_sum = g.groupby("item_idx")["s"].cumsum()
    rated = g.groupby("item_idx")["r"].cumsum()
    g["mean_rating"] = np.where(rated > 0, rating_sum / rated.clip(lower=1), np.nan)
    g["last_interaction_ts"] = g.groupby("item_idx")["last"].cummax()
    return pd.DataFrame(
        {
            "item_id": item_ids[g["item_idx"].to_numpy()],
            "event_timestamp": _stamp((g["day"].to_numpy() + 1) * DAY),
            "popularity": g["popularity"].astype(np.int64).to_numpy(),
            "mean_rating": g["mean_rating"].astype(np.float64).to_numpy(),
            "last_interaction_ts": g["last_interaction_ts"].astype(np.int64).to_numpy(),
        }
    )


def user_history_table(inter: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray, length: int) -> pa.Table:
    """One row per interaction: the user's latest ``length`` items up to and including it, stamped 1 us after."""
    order = np.lexsort((np.arange(len(inter)), inter["timestamp"].to_numpy(), inter["user_idx"].to_numpy()))
    users = inter["user_idx"].to_numpy()[order]
    items = inter["item_idx"].to_numpy()[order]
    ts = inter["timestamp"].to_numpy()[order]
    n = len(order)
    first = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1] if n else np.zeros(0, dtype=np.int64)
    start_of_user = np.repeat(first, np.diff(np.r_[first, n]))
    starts = np.maximum(start_of_user, np.arange(n) - length + 1)
    sizes = np.arange(n) - starts + 1
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    take = np.repeat(starts - offsets[:-1], sizes) + np.arange(offsets[-1])  # flattened windows
    values = pa.array(item_ids[items[take]].astype(str) if n else np.zeros(0, dtype=str), type=pa.string())
    history = pa.LargeListArray.from_arrays(pa.array(offsets), values).cast(pa.list_(pa.string()))
    return pa.table(
        {
            "user_id": pa.array(user_ids[users].astype(str) if n else [], type=pa.string()),
            "event_timestamp": pa.array(_stamp(ts, extra_us=1)),
            "history": history,
            "history_len": pa.array(sizes.astype(np.int64)),
        }
    )


def default_timestamps(inter: pd.DataFrame, default_event_time: str) -> tuple[pd.DataFrame, str]:
    """Interactions without timestamps (all of them: an MMRec .inter file has none) stamped from
    ``default_event_time``, one second per row in file order, so that the file order is the history order.

    Returns the rows and what was done (``given`` when every row has a timestamp).

    Raises:
        DatasetError: only some rows lack a timestamp (a defect to fix, not a format to accept).
    """
    from fusionrec.errors import DatasetError

    missing = inter["timestamp"] < 0
    if not missing.any():
        return inter, "given"
    if not missing.all():
        raise DatasetError(
            f"{int(missing.sum()):,} of {len(inter):,} interactions have no timestamp; "
            "either every interaction has one or none does"
        )
    start = int(pd.Timestamp(default_event_time).timestamp())
    log.warning(
        "the interactions have no timestamps: feature rows are stamped from %s, one second per interaction "
        "in file order (features.default_event_time); point-in-time features follow the file order",
        default_event_time,
    )
    return inter.assign(timestamp=start + np.arange(len(inter), dtype=np.int64)), f"default from {default_event_time}"


def build_feature_tables(
    dataset, embeddings: dict, out: Path, history_length: int = 20, default_event_time: str = "2000-01-01T00:00:00Z"
) -> FeatureManifest:
    """Write every offline table for a dataset and its embeddings into ``out`` (which must exist).

    Args:
        dataset: the validated :class:`fusionrec.data.dataset.Dataset`.
        embeddings: modality -> :class:`fusionrec.encoders.pipeline.ModalityEmbeddings`.
        out: the folder for the Parquet tables and ``features.json``.
        history_length: how many of a user's latest items the history keeps.
        default_event_time: where the stamps of interactions without timestamps start (see
            :func:`default_timestamps`).
    """
    out = Path(out)
    item_ids = _ids(dataset.items["item_id"])
    user_ids = _ids(dataset.users["user_id"])
    inter, event_time = default_timestamps(dataset.interactions[dataset.interactions["label"] > 0], default_event_time)

    for name, emb in embeddings.items():
        present = np.flatnonzero(emb.mask)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(emb.values[present].reshape(-1)), emb.dim)
        pq.write_table(
            pa.table(
                {
                    "item_id": pa.array(item_ids[present].astype(str), type=pa.string()),
                    "event_timestamp": pa.array(pd.DatetimeIndex([EPOCH] * len(present))),
                    f"{name}_embedding": vectors.cast(pa.list_(pa.float32())),
                }
            ),
            out / f"item_{name}_embedding.parquet",
        )

    item_stats_table(inter, item_ids).to_parquet(out / "item_stats.parquet", index=False)

    kinds = {
        c: ("float" if pd.api.types.is_numeric_dtype(dataset.users[c]) else "string") for c in dataset.user_features
    }
    profile = pd.DataFrame({"user_id": user_ids.astype(str), "event_timestamp": EPOCH})
    for c, kind in kinds.items():
        col = dataset.users[c]
        profile[f"u_{c}"] = col.astype(np.float64) if kind == "float" else col.astype(object).where(col.notna(), None)
    if not kinds:
        profile["u_known"] = np.ones(len(profile), dtype=np.int64)
    profile.to_parquet(out / "user_profile.parquet", index=False)

    pq.write_table(user_history_table(inter, user_ids, item_ids, history_length), out / "user_history.parquet")

    manifest = FeatureManifest(
        dataset.name,
        sorted(embeddings),
        kinds,
        history_length,
        dataset.n_users,
        dataset.n_items,
        len(inter),
        event_time,
    )
    manifest.save(out)
    return manifest
