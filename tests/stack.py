"""One served champion for the tests that need their own: the key file, the settings by environment, a
materialised Feast store over the given tables and the layout's servers on free ports."""

from __future__ import annotations

from pathlib import Path

from fusionrec.config import load_settings
from fusionrec.features import store as fs
from fusionrec.platform import local

KEY = "test-service-key-0123456789abcdefghijklmnop"  # the service key every such stack's key file holds
AUTH = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}


def serving_env(root: Path, models: Path, features: Path, free_port, env: dict | None = None) -> dict:
    """The settings (as environment) of a stack serving the champion of ``models`` with the Feast tables in
    ``features``, on free ports, its key file written under ``root`` (``env``: more settings)."""
    (root / "api.key").write_text(KEY)
    return {
        "FUSIONREC__SERVING__AUTH__KEY_FILE": str(root / "api.key"),
        "FUSIONREC__SERVING__STORAGE_URI": str(models),
        "FUSIONREC__FEATURES__DATA_DIR": str(features),
        "FUSIONREC__PATHS__CACHE": str(root / "cache"),
        "FUSIONREC__ENCODERS__DEVICE": "cpu",
        "FUSIONREC__MONITORING__FOLDER": str(root / "monitoring"),
        "FUSIONREC__SERVING__PREDICTOR_PORT": str(free_port()),
        "FUSIONREC__SERVING__PREDICTOR_GRPC_PORT": str(free_port()),
        "FUSIONREC__SERVING__TRANSFORMER_PORT": str(free_port()),
        "FUSIONREC__SERVING__FEATURE_TIMEOUT_S": "3",
        "FUSIONREC__SERVING__WORKERS": "1",
        **(env or {}),
    }


def serve(root: Path, models: Path, ds, emb, free_port, env: dict | None = None, layout: str = "collocated"):
    """Serve that stack (:func:`serving_env`) on a Feast store of the dataset ``ds`` and its embeddings
    ``emb``, written under ``root/features`` and materialised; returns the running servers (``.stop()``
    them)."""
    from fusionrec.features.tables import build_feature_tables

    features = root / "features"
    features.mkdir()
    build_feature_tables(ds, emb, features, 20)
    env = serving_env(root, models, features, free_port, env)
    settings = load_settings(env={**env})
    store = fs.feature_store(settings.features, features)
    fs.apply(store, features)
    fs.materialize(store)
    return local.serve(settings, log_dir=root / "logs", env=env, layout=layout)
