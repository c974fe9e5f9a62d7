"""The items' other renderings through the real steps and a running server: the embed step embeds
camera-like views of each photo and each title alone, the train step ships the photo head it trains on
the views and the titles; a photo query's image term is the blended cosine of the encoder's space and the
head's, a title query's text term the better of the whole text's cosine and the title's (numpy over the
shipped files)."""

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from fusionrec.config import load_settings
from fusionrec.encoders.pipeline import embed_to_folder, load_embeddings
from fusionrec.registry import gate, register
from fusionrec.train.request import TrainSpec
from fusionrec.train.run import train_candidate
from tests.integration.test_serving import MODEL, _post, _unit
from tests.stack import serve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def head_stack(tmp_path_factory, synth_validated_dir, synth_validated, free_port):
    root = tmp_path_factory.mktemp("photo-head")
    env = {
        "FUSIONREC__PATHS__CACHE": str(root / "cache"),
        "FUSIONREC__ENCODERS__DEVICE": "cpu",
        "FUSIONREC__ENCODERS__IMAGE__VIEWS": "2",
    }
    settings = load_settings(env={**env})
    embed_to_folder(synth_validated_dir, root / "embeddings", settings, progress=False)
    candidate = train_candidate(
        synth_validated_dir,
        root / "embeddings",
        TrainSpec(modalities=("text", "image"), dim=16, epochs=2),
        root / "candidate",
        device="cpu",
        progress=False,
    )
    models = root / "models"
    path = register(models, candidate.path)
    gate(models, path)
    emb = load_embeddings(root / "embeddings")
    servers = serve(root, models, synth_validated, emb, free_port, env)
    yield {"servers": servers, "emb": emb, "ds": synth_validated, "path": Path(path), "root": root}
    servers.stop()


def test_the_embed_step_keeps_camera_like_views_of_every_photo(head_stack):
    image = head_stack["emb"]["image"]
    meta = json.loads((head_stack["root"] / "embeddings" / "embeddings.json").read_text())["modalities"]["image"]
    assert meta["views"] == 2 and image.views.shape == (len(image.mask), 2, image.dim)
    have = image.mask
    assert np.abs(image.views[have]).sum(2).min() > 0 and not image.views[~have].any()
    # a view is another photo of the item: near its own photo, never the photo itself
    cos = np.einsum("nd,nvd->nv", _unit(image.values[have]), _unit(image.views[have]))
    assert 0.3 < cos.mean() < 0.999


def test_a_photo_query_searches_the_encoders_space_and_the_shipped_heads_side_by_side(head_stack):
    index = head_stack["path"] / "index"
    meta = json.loads((index / "photo_head.json").read_text())
    assert meta["identity"] == head_stack["emb"]["image"].identity and meta["figures"]["views"] == 2
    with np.load(index / "photo_head.npz") as z:
        w = z["weights"]
    share = meta["raw_share"]
    items, emb = head_stack["ds"].items, head_stack["emb"]["image"]
    row = items.dropna(subset=["image"]).iloc[3]
    photo = Path(row["image"]).read_bytes()
    pred = _post(
        f"{head_stack['servers'].transformer_url}/v1/models/{MODEL}:predict",
        {"instances": [{"image": base64.b64encode(photo).decode(), "k": 6, "space": "image"}]},
    ).json()["predictions"][0]
    q = _unit(emb.values[int(row["item_idx"])])  # the photo's own embedding, offline
    v = _unit(emb.values)
    blended = np.where(emb.mask, share * (v @ q) + (1 - share) * (_unit(v @ w) @ _unit(q @ w)), -np.inf)
    top = np.argsort(-blended, kind="stable")[:6]
    ids = items.set_index("item_idx")["item_id"].astype(str)
    assert [x["item_id"] for x in pred["items"]] == ids[top].tolist()
    np.testing.assert_allclose([x["score"] for x in pred["items"]], blended[top], atol=1e-3)
    plain = np.where(emb.mask, v @ q, -np.inf)
    assert not np.allclose(plain[top], blended[top], atol=1e-3)  # the head moved the scores


def test_a_title_query_finds_its_item_by_the_title_shipped_beside_the_whole_text(head_stack, text_encoder):
    text = head_stack["emb"]["text"]
    assert text.views.shape == (len(text.mask), 1, text.dim)
    titles = np.load(head_stack["path"] / "index" / "text.titles.npy")
    items = head_stack["ds"].items.set_index("item_idx")
    n = int(np.flatnonzero(text.mask)[5])
    title = str(items.loc[n, "title"])
    pred = _post(
        f"{head_stack['servers'].transformer_url}/v1/models/{MODEL}:predict",
        {"instances": [{"text": title, "k": 5, "space": "text"}]},
    ).json()["predictions"][0]
    q = _unit(np.asarray(text_encoder.encode([title]).values[0], dtype=np.float32))
    cos = np.where(text.mask, np.maximum(_unit(text.values) @ q, _unit(titles) @ q), -np.inf)
    top = np.argsort(-cos, kind="stable")[:5]
    assert [x["item_id"] for x in pred["items"]] == items["item_id"].astype(str)[top].tolist()
    np.testing.assert_allclose([x["score"] for x in pred["items"]], cos[top], atol=1e-3)
    assert pred["items"][0]["item_id"] == str(items.loc[n, "item_id"])
