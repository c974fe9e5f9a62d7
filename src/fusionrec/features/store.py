"""The bridge to Feast: the store for a profile, apply, materialise, push, training frames, online lookups."""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from fusionrec.config import FeatureSettings, read_yaml
from fusionrec.errors import ConfigError
from fusionrec.features.definitions import HISTORY_PUSH_SOURCE, embedding_view_name, feature_definitions
from fusionrec.features.tables import FeatureManifest

log = logging.getLogger(__name__)


def definitions_for(data_dir: str | Path) -> dict[str, object]:
    """The Feast objects for the feature tables in ``data_dir`` (declared from its features.json)."""
    manifest = FeatureManifest.load(data_dir)
    return feature_definitions(data_dir, manifest.modalities, manifest.user_features)


def project_name(dataset: str) -> str:
    """One Feast project per dataset, so that datasets sharing a Redis never collide."""
    return "fusionrec_" + re.sub(r"[^A-Za-z0-9_]", "_", dataset).lower()


def feature_store(
    cfg: FeatureSettings, data_dir: str | Path, repo: str | Path | None = None, registry: str | Path | None = None
):
    """A Feast ``FeatureStore`` for the feature tables in ``data_dir``, configured by the profile's settings.

    The repository's YAML (``feature_store.yaml`` for SQLite, ``feature_store.production.yaml`` for
    Redis) gives the shape; the registry (unless ``registry`` names another file) and the SQLite file
    go next to the tables, and the Redis address comes from ``cfg.redis_connection``.
    """
    from feast import FeatureStore, RepoConfig

    data_dir = Path(data_dir).resolve()
    repo = Path(repo or cfg.repo)
    yaml_name = "feature_store.yaml" if cfg.online_store == "sqlite" else "feature_store.production.yaml"
    raw = read_yaml(repo / yaml_name)
    manifest = FeatureManifest.load(data_dir)
    raw["project"] = project_name(manifest.dataset)
    raw["registry"] = str(Path(registry).resolve() if registry else data_dir / "registry.db")
    if cfg.online_store == "sqlite":
        raw["online_store"] = {**raw["online_store"], "path": str(data_dir / "online_store.db")}
    else:
        raw["online_store"] = {**raw["online_store"], "connection_string": cfg.redis_connection}
    try:
        config = RepoConfig(repo_path=repo.resolve(), **raw)
    except Exception as e:  # pydantic errors from Feast's own config model
        raise ConfigError(f"{repo / yaml_name}: invalid Feast configuration: {str(e).splitlines()[0]}") from e
    return FeatureStore(config=config)


REGISTRY_DIGEST = "registry.db.sha256"  # beside Feast's registry.db: its sha256, verified before serving reads it


def apply(store, data_dir: str | Path) -> list[str]:
    """Register every definition (idempotent); returns the names applied. The registry file's sha256 is
    written beside it (:func:`seal_registry`; :func:`verify_registry` checks it before the transformer
    reads the registry)."""
    objects = definitions_for(data_dir)
    store.apply(list(objects.values()))
    seal_registry(store)
    return sorted(objects)


def seal_registry(store) -> None:
    """Write the sha256 of the store's registry file beside it. Feast rewrites the registry on apply and on
    materialize (it records the materialised intervals), so both seal it again."""
    from fusionrec.io import atomic_write_text, sha256_file

    registry = getattr(store.config.registry, "path", store.config.registry)
    registry = Path(str(registry))
    if registry.is_file():
        atomic_write_text(registry.with_name(REGISTRY_DIGEST), sha256_file(registry))


def verify_registry(data_dir: str | Path) -> None:
    """Refuse a Feast registry that changed since :func:`apply` wrote it (a registry without its digest,
    from before digests, is read as it is).

    Raises:
        ConfigError: the registry's sha256 differs from the one written beside it.
    """
    from fusionrec.errors import ConfigError
    from fusionrec.io import sha256_file

    registry = Path(data_dir) / "registry.db"
    digest = registry.with_name(REGISTRY_DIGEST)
    if not digest.exists() or not registry.exists():
        return
    if digest.read_text(encoding="utf-8").strip() != sha256_file(registry):
        raise ConfigError(
            f"{registry}: the Feast registry changed since it was applied (its sha256 differs from "
            f"{digest.name}); apply the feature repository again ('fusionrec features apply')"
        )


def materialize(store, end: datetime | None = None) -> datetime:
    """Load the latest value of every feature up to ``end`` (default now) into the online store."""
    end = end or datetime.now(timezone.utc)
    store.materialize(start_date=datetime(1970, 1, 1, tzinfo=timezone.utc), end_date=end)
    seal_registry(store)
    return end


def training_frame(store, entity_df: pd.DataFrame, service: str = "training") -> pd.DataFrame:
    """Point-in-time-correct features for (user_id, item_id, event_timestamp) rows.

    A feature value stamped after a row's ``event_timestamp`` is never visible to it.
    """
    needed = {"user_id", "item_id", "event_timestamp"}
    if not needed <= set(entity_df.columns):
        raise ConfigError(f"training_frame: entity rows need columns {sorted(needed)}, got {list(entity_df.columns)}")
    rows = entity_df.copy()
    rows["user_id"] = rows["user_id"].astype(str)
    rows["item_id"] = rows["item_id"].astype(str)
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True)
    job = store.get_historical_features(entity_df=rows, features=store.get_feature_service(service))
    return job.to_df()


@dataclass
class FeastTrainingSet:
    """What training reads from Feast: the training rows and every item's embeddings, by modality."""

    train: pd.DataFrame  # user_idx, item_idx, timestamp: the rows the training frame returned
    embeddings: dict  # modality -> ModalityEmbeddings aligned with item_idx (mask: Feast holds a vector)
    frame_rows: int
    catalogue_rows: int  # items with no training row, fetched as catalogue rows
    seconds: float


def training_set(store, dataset, train: pd.DataFrame, embeddings: dict, *, chunk: int = 50_000) -> FeastTrainingSet:
    """The training interactions and item embeddings, read from Feast through the ``training`` service.

    Every training interaction becomes an entity row at its own time (point-in-time join, in chunks to
    bound memory); each item's embedding comes from the first row that holds the item. Items without a
    training row (cold items, items seen only in validation or test) are asked for as catalogue rows
    (no user, at the latest training time): content is stamped at the epoch, so every row sees it.
    ``embeddings`` gives each modality's encoder identity and dimension (the embed step's record).

    Raises:
        DatasetError: the frame lost or added rows, or names items the dataset does not have.
    """
    import time

    from fusionrec.encoders.pipeline import ModalityEmbeddings
    from fusionrec.errors import DatasetError

    start = time.perf_counter()
    if (train["timestamp"] < 0).any():
        raise DatasetError(
            "training rows without timestamps cannot be joined point-in-time; train from the embeddings folder instead"
        )
    user_ids = dataset.users.sort_values("user_idx")["user_id"].astype(str).to_numpy()
    item_ids = dataset.items.sort_values("item_idx")["item_id"].astype(str).to_numpy()
    item_index = {i: n for n, i in enumerate(item_ids)}
    user_index = {u: n for n, u in enumerate(user_ids)}
    n = len(item_ids)
    values = {m: np.zeros((n, e.dim), dtype=np.float32) for m, e in embeddings.items()}
    masks = {m: np.zeros(n, dtype=bool) for m in embeddings}
    filled = np.zeros(n, dtype=bool)

    def take(frame: pd.DataFrame) -> np.ndarray:
        idx = frame["item_id"].map(item_index)
        if idx.isna().any():
            raise DatasetError(
                f"the training frame names unknown items: {frame.loc[idx.isna(), 'item_id'].unique()[:5]}"
            )
        idx = idx.to_numpy(np.int64)
        first = ~pd.Series(idx).duplicated().to_numpy() & ~filled[idx]
        for m in embeddings:
            for row, i in zip(frame[f"{m}_embedding"].to_numpy()[first], idx[first]):
                if row is not None and len(row):
                    values[m][i] = np.asarray(row, dtype=np.float32)
                    masks[m][i] = True
        filled[idx[first]] = True
        return idx

    rows = []
    for lo in range(0, len(train), chunk):
        part = train.iloc[lo : lo + chunk]
        entity = pd.DataFrame(
            {
                "user_id": user_ids[part["user_idx"].to_numpy()],
                "item_id": item_ids[part["item_idx"].to_numpy()],
                "event_timestamp": pd.to_datetime(part["timestamp"].to_numpy(), unit="s", utc=True),
            }
        )
        frame = training_frame(store, entity)
        idx = take(frame)
        users = frame["user_id"].map(user_index).to_numpy(np.int64)
        rows.append(
            pd.DataFrame(
                {
                    "user_idx": users,
                    "item_idx": idx,
                    "timestamp": (frame["event_timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1),
                }
            )
        )
    got = pd.concat(rows, ignore_index=True) if rows else train.iloc[:0][["user_idx", "item_idx", "timestamp"]]
    if len(got) != len(train):
        raise DatasetError(f"the Feast training frame has {len(got):,} rows for {len(train):,} training interactions")
    rest = np.flatnonzero(~filled)
    if len(rest):
        when = pd.to_datetime(int(train["timestamp"].max()) if len(train) else 0, unit="s", utc=True)
        take(training_frame(store, pd.DataFrame({"user_id": "", "item_id": item_ids[rest], "event_timestamp": when})))
    out = {
        m: ModalityEmbeddings(
            m,
            values[m],
            masks[m],
            [None if ok else "no vector in Feast" for ok in masks[m]],
            e.identity,
            {"items": n, "from_feast": int(masks[m].sum())},
        )
        for m, e in embeddings.items()
    }
    # the training rows in the split's own order, so that a seed gives the same batches either way
    keys = ["user_idx", "item_idx"]
    got = train[keys].astype(np.int64).merge(got.drop_duplicates(keys), on=keys, how="left", validate="many_to_one")
    return FeastTrainingSet(got, out, len(got), len(rest), time.perf_counter() - start)


@dataclass
class UserFeatures:
    """Online user features for a batch: history (item ids, oldest first) and the profile, per user."""

    user_ids: list[str]
    history: list[list[str]]  # [] for a user without history
    profile: pd.DataFrame  # one row per user, columns u_*


def _user_features(ids: list[str], resp: dict) -> UserFeatures:
    history = [list(h) if h is not None else [] for h in resp.get("history", [None] * len(ids))]
    profile = pd.DataFrame({k: v for k, v in resp.items() if k.startswith("u_")})
    return UserFeatures(ids, history, profile)


_SERVICE_REFS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def service_features(store, service: str = "serving") -> list[str]:
    """The feature references of a feature service, resolved from the registry once per store.

    Resolving the service on every call costs a registry read (about 6 ms here); online lookups sit on
    the request path, so they use the resolved list.
    """
    refs = _SERVICE_REFS.setdefault(store, {})
    if service not in refs:
        fsvc = store.get_feature_service(service)
        refs[service] = [f"{p.name_to_use()}:{f.name}" for p in fsvc.feature_view_projections for f in p.features]
    return refs[service]


def online_user_features(store, user_ids: Sequence[object]) -> UserFeatures:
    """Look up the ``serving`` features for a batch of users in one call."""
    ids = [str(u) for u in user_ids]
    resp = store.get_online_features(
        features=service_features(store), entity_rows=[{"user_id": u} for u in ids]
    ).to_dict()
    return _user_features(ids, resp)


async def online_user_features_async(store, user_ids: Sequence[object]) -> UserFeatures:
    """:func:`online_user_features` without blocking the event loop (for the KServe transformer).

    Redis reads natively asynchronously; an online store without async reads (SQLite) is read on a
    worker thread instead.
    """
    import asyncio

    ids = [str(u) for u in user_ids]
    try:
        resp = await store.get_online_features_async(
            features=service_features(store), entity_rows=[{"user_id": u} for u in ids]
        )
    except NotImplementedError:
        return await asyncio.to_thread(online_user_features, store, ids)
    return _user_features(ids, resp.to_dict())


def online_item_embeddings(store, item_ids: Sequence[object], modality: str) -> tuple[np.ndarray, np.ndarray]:
    """(vectors [n, dim], mask [n]) of one modality for a batch of items; absent items are masked."""
    ids = [str(i) for i in item_ids]
    feature = f"{embedding_view_name(modality)}:{modality}_embedding"
    resp = store.get_online_features(features=[feature], entity_rows=[{"item_id": i} for i in ids]).to_dict()
    vectors = resp[f"{modality}_embedding"]
    dim = next((len(v) for v in vectors if v is not None), 0)
    out = np.zeros((len(ids), dim), dtype=np.float32)
    mask = np.array([v is not None for v in vectors], dtype=bool)
    for k, v in enumerate(vectors):
        if v is not None:
            out[k] = v
    return out, mask


def push_interactions(store, new: pd.DataFrame, history_length: int) -> int:
    """Send new interactions to the online store: each user's history grows by the new items.

    Args:
        new: rows with user_id, item_id, timestamp (unix s) or event_timestamp.
        history_length: the length the history is cut to (as in the offline table).

    Returns:
        The number of users whose history was pushed.
    """
    from feast.data_source import PushMode

    if new.empty:
        return 0
    new = new.copy()
    if "event_timestamp" not in new:
        new["event_timestamp"] = pd.to_datetime(new["timestamp"].astype(np.int64), unit="s", utc=True)
    new["user_id"] = new["user_id"].astype(str)
    new["item_id"] = new["item_id"].astype(str)
    new = new.sort_values(["user_id", "event_timestamp"], kind="stable")
    users = new["user_id"].unique().tolist()
    current = online_user_features(store, users)
    rows = []
    for user, hist in zip(users, current.history):
        mine = new[new["user_id"] == user]
        merged = (hist + mine["item_id"].tolist())[-history_length:]
        rows.append(
            {
                "user_id": user,
                "event_timestamp": mine["event_timestamp"].max() + pd.Timedelta(microseconds=1),
                "history": merged,
                "history_len": len(merged),
            }
        )
    store.push(HISTORY_PUSH_SOURCE, pd.DataFrame(rows), to=PushMode.ONLINE)
    return len(rows)


@dataclass
class FeatureBuild:
    """What :func:`build_store` did."""

    dataset: str
    modalities: list[str]
    interactions: int
    applied: list[str]
    materialized_to: datetime | None


def write_tables(dataset_dir: str | Path, embeddings_dir: str | Path, out: str | Path, cfg: FeatureSettings):
    """The offline feature tables of a validated dataset and its embeddings, written to ``out`` (replaced
    atomically); returns their manifest."""
    from fusionrec.data.dataset import Dataset
    from fusionrec.encoders.pipeline import load_embeddings
    from fusionrec.features.tables import build_feature_tables
    from fusionrec.io import atomic_dir

    with atomic_dir(Path(out)) as tmp:
        return build_feature_tables(
            Dataset.load(dataset_dir), load_embeddings(embeddings_dir), tmp, cfg.history_length, cfg.default_event_time
        )


def build_store(
    dataset_dir: str | Path,
    embeddings_dir: str | Path,
    out: str | Path,
    cfg: FeatureSettings,
    *,
    materialize_online: bool = True,
) -> FeatureBuild:
    """The feature step in one call: write the offline tables to ``out`` (:func:`write_tables`), register
    the definitions, and load the latest values into the profile's online store (SQLite or Redis)."""
    out = Path(out)
    manifest = write_tables(dataset_dir, embeddings_dir, out, cfg)
    store = feature_store(cfg, out)
    names = apply(store, out)
    end = materialize(store) if materialize_online else None
    return FeatureBuild(manifest.dataset, list(manifest.modalities), manifest.interactions, names, end)
