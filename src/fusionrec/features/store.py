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


def feature_store(cfg: FeatureSettings, data_dir: str | Path, repo: str | Path | None = None):
    """A Feast ``FeatureStore`` for the feature tables in ``data_dir``, configured by the profile's settings.

    The repository's YAML (``feature_store.yaml`` for SQLite, ``feature_store.production.yaml`` for
    Redis) gives the shape; the registry and the SQLite file go next to the tables, and the Redis
    address comes from ``cfg.redis_connection``.
    """
    from feast import FeatureStore, RepoConfig

    data_dir = Path(data_dir).resolve()
    repo = Path(repo or cfg.repo)
    yaml_name = "feature_store.yaml" if cfg.online_store == "sqlite" else "feature_store.production.yaml"
    raw = read_yaml(repo / yaml_name)
    manifest = FeatureManifest.load(data_dir)
    raw["project"] = project_name(manifest.dataset)
    raw["registry"] = str(data_dir / "registry.db")
    if cfg.online_store == "sqlite":
        raw["online_store"] = {**raw["online_store"], "path": str(data_dir / "online_store.db")}
    else:
        raw["online_store"] = {**raw["online_store"], "connection_string": cfg.redis_connection}
    try:
        config = RepoConfig(repo_path=repo.resolve(), **raw)
    except Exception as e:  # pydantic errors from Feast's own config model
        raise ConfigError(f"{repo / yaml_name}: invalid Feast configuration: {str(e).splitlines()[0]}") from e
    return FeatureStore(config=config)


def apply(store, data_dir: str | Path) -> list[str]:
    """Register every definition (idempotent); returns the names applied."""
    objects = definitions_for(data_dir)
    store.apply(list(objects.values()))
    return sorted(objects)


def materialize(store, end: datetime | None = None) -> datetime:
    """Load the latest value of every feature up to ``end`` (default now) into the online store."""
    end = end or datetime.now(timezone.utc)
    store.materialize(start_date=datetime(1970, 1, 1, tzinfo=timezone.utc), end_date=end)
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
    resp = store.get_online_features(features=service_features(store),
                                     entity_rows=[{"user_id": u} for u in ids]).to_dict()
    return _user_features(ids, resp)


async def online_user_features_async(store, user_ids: Sequence[object]) -> UserFeatures:
    """:func:`online_user_features` without blocking the event loop (for the KServe transformer).

    Redis reads natively asynchronously; an online store without async reads (SQLite) is read on a
    worker thread instead.
    """
    import asyncio

    ids = [str(u) for u in user_ids]
    try:
        resp = await store.get_online_features_async(features=service_features(store),
                                                     entity_rows=[{"user_id": u} for u in ids])
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
        rows.append({"user_id": user, "event_timestamp": mine["event_timestamp"].max() + pd.Timedelta(microseconds=1),
                     "history": merged, "history_len": len(merged)})
    store.push(HISTORY_PUSH_SOURCE, pd.DataFrame(rows), to=PushMode.ONLINE)
    return len(rows)
