"""The Feast objects: entities, feature views, the push source and the feature services.

Declarative in spirit, built by a function because the embedding views depend on which modalities a
dataset has (text, image, audio, ...). Every id is a string in Feast, whatever the dataset uses.

Time semantics (what makes training frames point-in-time correct):

* item embeddings are content features: stamped at the epoch, visible to every interaction;
* item statistics are daily snapshots, each computed from interactions *before* the end of its day and
  stamped at that end: an interaction sees yesterday's statistics, never today's;
* user history rows are written when an interaction happens, holding the items up to and including
  it, stamped one microsecond *after* it: the interaction itself never sees its own item.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

PROJECT = "fusionrec"
HISTORY_PUSH_SOURCE = "user_history_push"


def embedding_view_name(modality: str) -> str:
    return f"item_{modality}_embedding"


def feature_definitions(
    data_dir: str | Path, modalities: list[str], user_features: dict[str, str]
) -> dict[str, object]:
    """Every Feast object of the repository, by name.

    Args:
        data_dir: the folder with the offline Parquet tables written by ``fusionrec features build``.
        modalities: the item-embedding modalities to declare (one feature view each).
        user_features: user side features, name -> ``float`` or ``string``.
    """
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
    from feast.types import Array, Float32, Float64, Int64, String

    data = Path(data_dir).resolve()
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="A user, by original id")
    item = Entity(
        name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="An item, by original id"
    )
    objects: dict[str, object] = {"user": user, "item": item}

    embedding_views = []
    for m in modalities:
        source = FileSource(
            name=f"{m}_embedding_source",
            path=str(data / f"item_{m}_embedding.parquet"),
            timestamp_field="event_timestamp",
        )
        view = FeatureView(
            name=embedding_view_name(m),
            entities=[item],
            ttl=timedelta(0),
            source=source,
            online=True,
            schema=[
                Field(
                    name=f"{m}_embedding",
                    dtype=Array(Float32),
                    description=f"{m} embedding from the pretrained encoder; absent when the item lacks {m}",
                )
            ],
            tags={"kind": "embedding", "modality": m},
        )
        objects[view.name] = view
        embedding_views.append(view)

    item_stats = FeatureView(
        name="item_stats",
        entities=[item],
        ttl=timedelta(0),
        online=True,
        source=FileSource(
            name="item_stats_source", path=str(data / "item_stats.parquet"), timestamp_field="event_timestamp"
        ),
        schema=[
            Field(name="popularity", dtype=Int64, description="interactions before this snapshot"),
            Field(name="mean_rating", dtype=Float64, description="mean rating before this snapshot (NaN: none)"),
            Field(name="last_interaction_ts", dtype=Int64, description="unix seconds of the latest interaction"),
        ],
        tags={"kind": "statistics"},
    )
    user_profile = FeatureView(
        name="user_profile",
        entities=[user],
        ttl=timedelta(0),
        online=True,
        source=FileSource(
            name="user_profile_source", path=str(data / "user_profile.parquet"), timestamp_field="event_timestamp"
        ),
        schema=[
            Field(name=f"u_{name}", dtype=Float64 if kind == "float" else String)
            for name, kind in user_features.items()
        ]
        or [Field(name="u_known", dtype=Int64)],
        tags={"kind": "profile"},
    )
    history_batch = FileSource(
        name="user_history_source", path=str(data / "user_history.parquet"), timestamp_field="event_timestamp"
    )
    history_push = PushSource(name=HISTORY_PUSH_SOURCE, batch_source=history_batch)
    user_history = FeatureView(
        name="user_history",
        entities=[user],
        ttl=timedelta(0),
        online=True,
        source=history_push,
        schema=[
            Field(name="history", dtype=Array(String), description="the latest item ids, oldest first"),
            Field(name="history_len", dtype=Int64),
        ],
        tags={"kind": "history"},
    )
    objects.update(
        {
            "item_stats": item_stats,
            "user_profile": user_profile,
            HISTORY_PUSH_SOURCE: history_push,
            "user_history": user_history,
        }
    )
    objects["training"] = FeatureService(
        name="training",
        features=[*embedding_views, item_stats, user_profile, user_history],
        description="What the fusion model trains on: per interaction, as of its time",
    )
    objects["serving"] = FeatureService(
        name="serving",
        features=[user_profile, user_history],
        description="What the transformer looks up per request (the predictor holds item embeddings)",
    )
    return objects
