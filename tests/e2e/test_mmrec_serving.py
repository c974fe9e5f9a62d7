"""Every dataset that trains can be served: an MMRec dataset whose text and image vectors come
precomputed (.npy) and whose interactions carry no timestamps, taken through the CLI as a new user
would: validate, embed, train, features build, serve, recommend."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.e2e


def write_mmrec(folder, n_users=60, n_items=40, seed=0):
    """MMRec layout: <name>.inter (userID, itemID, rating, x_label; no timestamp), text_feat.npy (384-d, as
    MMRec ships sentence-transformer vectors) and image_feat.npy, row i for itemID i."""
    rng = np.random.default_rng(seed)
    rows = [(u, i) for u in range(n_users) for i in rng.choice(n_items, 12, replace=False)]
    inter = pd.DataFrame(rows, columns=["userID", "itemID"])
    inter["rating"] = 5
    inter["x_label"] = np.tile([0] * 10 + [1, 2], n_users)
    inter.to_csv(folder / "tiny.inter", sep="\t", index=False)
    np.save(folder / "text_feat.npy", rng.normal(size=(n_items, 384)).astype(np.float32))
    np.save(folder / "image_feat.npy", rng.normal(size=(n_items, 32)).astype(np.float32))
    contract = {
        "name": "tiny-mmrec",
        "format": "mmrec",
        "root": ".",
        "interactions": {
            "path": "tiny.inter",
            "roles": {"user_id": "userID", "item_id": "itemID", "rating": "rating", "split": "x_label"},
        },
        "modalities": [{"name": "text", "path": "text_feat.npy"}, {"name": "image", "path": "image_feat.npy"}],
    }
    (folder / "dataset.yaml").write_text(yaml.safe_dump(contract))
    return folder / "dataset.yaml"


def test_a_precomputed_dataset_without_timestamps_trains_builds_features_and_serves(tmp_path, free_port):
    contract = write_mmrec(tmp_path)
    env = {
        **os.environ,
        "FUSIONREC_PROFILE": "local",
        "FUSIONREC__PATHS__ARTIFACTS": str(tmp_path / "art"),
        "FUSIONREC__PATHS__CACHE": str(tmp_path / "cache"),
        "FUSIONREC__ENCODERS__DEVICE": "cpu",
        "FUSIONREC__SERVING__STORAGE_URI": str(tmp_path / "models"),
        "FUSIONREC__SERVING__PREDICTOR_PORT": str(free_port()),
        "FUSIONREC__SERVING__PREDICTOR_GRPC_PORT": str(free_port()),
        "FUSIONREC__SERVING__TRANSFORMER_PORT": str(free_port()),
    }

    def cli(*args, ok=True):
        r = subprocess.run(
            [sys.executable, "-m", "fusionrec", *args], capture_output=True, text=True, env=env, timeout=600
        )
        if ok:
            assert r.returncode == 0, (args, r.stderr[-3000:])
        return r

    cli("data", "validate", str(contract), "--out", str(tmp_path / "v"), "--no-progress")
    cli("embed", str(tmp_path / "v"), "--out", str(tmp_path / "e"), "--no-progress")
    cli(
        "train",
        str(tmp_path / "v"),
        "--embeddings",
        str(tmp_path / "e"),
        "--models",
        str(tmp_path / "models"),
        "--protocol",
        "given",
        "--epochs",
        "2",
        "--dim",
        "16",
        "--no-progress",
    )
    encoders = json.loads(next((tmp_path / "models" / "versions").glob("v*/encoders.json")).read_text())
    assert encoders["text"]["identity"] == "precomputed/text/384"
    # Feast features without timestamps: a documented default event time and a warning
    built = cli(
        "features", "build", str(tmp_path / "v"), "--embeddings", str(tmp_path / "e"), "--out", str(tmp_path / "f")
    )
    assert "no timestamps" in built.stderr and "2000-01-01" in built.stderr
    history = pd.read_parquet(tmp_path / "f" / "user_history.parquet")
    assert history["event_timestamp"].min() >= pd.Timestamp("2000-01-01", tz="UTC")
    assert json.loads((tmp_path / "f" / "features.json").read_text())["event_time"].startswith("default from 2000")

    cli("serve", "--no-feast", "--detach")
    try:
        user = json.loads(cli("recommend", "--user", "3", "--k", "5", "--json").stdout)["predictions"][0]
        assert len(user["items"]) == 5 and not user["fallback"]
        terms = {"image", "text", "id", "history", "bias"}  # and the content term where validation chose one
        assert all(terms <= set(i["explanation"]) <= terms | {"content"} for i in user["items"])
        hist = json.loads(cli("recommend", "--history", "1,2,3", "--k", "4", "--json").stdout)["predictions"][0]
        assert hist["cold"] and len(hist["items"]) == 4
        like = json.loads(cli("recommend", "--like", "7", "--k", "5", "--json").stdout)["predictions"][0]
        got = [i["item_id"] for i in like["items"]]
        # more like item 7 in the precomputed spaces: the mean cosine over text and image, by numpy
        mean = 0
        for m in ("text", "image"):
            v = np.load(tmp_path / f"{m}_feat.npy")
            v = v / np.linalg.norm(v, axis=1, keepdims=True)
            mean = mean + v @ v[7] / 2
        mean[7] = -np.inf
        assert got == [str(i) for i in np.argsort(-mean, kind="stable")[:5]]
        text = cli("recommend", "--text", "a quiet story", ok=False)
        assert text.returncode != 0 and "precomputed" in text.stderr and "'like'" in text.stderr, text.stderr
    finally:
        cli("serve", "--stop")
