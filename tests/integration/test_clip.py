"""A CLIP checkpoint configured by local path: its joint space carries text queries to the photos, in place
of the bridge learned from the catalogue, through a running model server (a tiny random CLIP saved in the
test's folder; nothing is downloaded)."""

import io

import numpy as np
import pytest
from PIL import Image

from fusionrec.config import PathsSettings, Settings
from fusionrec.encoders.image import ImageEncoder
from fusionrec.encoders.pipeline import encode_dataset
from tests.champion import trained_champion
from tests.integration.test_serving import MODEL, _post, _unit
from tests.stack import serve
from tests.tiny_clip import tiny_clip

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clip_stack(tmp_path_factory, synth_validated, text_encoder, free_port):
    """The synthetic set embedded with the tiny CLIP's vision tower (text: the default encoder), a champion
    trained on it, and one collocated server configured with the same CLIP folder."""
    root = tmp_path_factory.mktemp("clip")
    folder = tiny_clip(root / "tiny-clip")
    image = ImageEncoder(folder, kind="hf", device="cpu")
    settings = Settings(paths=PathsSettings(artifacts=str(root), cache=str(root / "cache")))
    emb = encode_dataset(synth_validated, settings, encoders={"text": text_encoder, "image": image}, progress=False)
    models = root / "models"
    _, path = trained_champion(models, synth_validated, emb)
    servers = serve(
        root,
        models,
        synth_validated,
        emb,
        free_port,
        {"FUSIONREC__ENCODERS__IMAGE__KIND": "hf", "FUSIONREC__ENCODERS__IMAGE__CHECKPOINT": str(folder)},
    )
    yield {"servers": servers, "emb": emb, "ds": synth_validated, "folder": folder, "model_dir": path}
    servers.stop()


def _ask(stack, body: dict) -> dict:
    r = _post(f"{stack['servers'].transformer_url}/v1/models/{MODEL}:predict", {"instances": [body]})
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]


def _clip_text(folder, text: str) -> np.ndarray:
    """CLIP's own text embedding of ``text`` (its forward pass, beside a blank photo), unit length."""
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    clip = CLIPModel.from_pretrained(folder).eval()
    tokens = AutoTokenizer.from_pretrained(folder)([text], return_tensors="pt")
    pixels = AutoImageProcessor.from_pretrained(folder)(Image.new("RGB", (32, 32)), return_tensors="pt")
    with torch.no_grad():
        return _unit(clip(**tokens, **pixels).text_embeds.numpy()[0])


def test_a_text_query_reaches_the_photos_through_clips_joint_space(clip_stack):
    """space "image": the items are the nearest photos (cosine over the offline CLIP image embeddings) to
    CLIP's own embedding of the words, not to the bridge's projection of the text encoder's vector."""
    emb, items = clip_stack["emb"], clip_stack["ds"].items
    text = "a red striped star"
    pred = _ask(clip_stack, {"text": text, "k": 8, "space": "image"})
    query = _clip_text(clip_stack["folder"], text)
    sims = np.where(emb["image"].mask, _unit(emb["image"].values) @ query, -np.inf)
    top = np.argsort(-sims, kind="stable")[:8]
    ids = items.set_index("item_idx")["item_id"].astype(str)
    assert [x["item_id"] for x in pred["items"]] == ids[top].tolist()
    np.testing.assert_allclose([x["score"] for x in pred["items"]], sims[top], atol=1e-3)
    assert pred["bridged"] == {"image": "text"} and all(x["found_in"] == ["image"] for x in pred["items"])

    with np.load(clip_stack["model_dir"] / "index" / "bridge.npz") as z:  # the bridge would answer otherwise
        placed = _unit(_unit(emb["image"].values) @ z["photos_to_text"])  # the photos set in the text space
    from fusionrec.encoders.text import TextEncoder

    own = TextEncoder(device="cpu").encode([text]).values[0]
    bridged = np.where(emb["image"].mask, placed @ _unit(own), -np.inf)
    assert ids[np.argsort(-bridged, kind="stable")[:8]].tolist() != ids[top].tolist()


def test_a_photo_still_reaches_the_text_space_by_the_bridge(clip_stack):
    """CLIP has no way into the text encoder's space: a photo's text-space term comes from the bridge."""
    emb = clip_stack["emb"]
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")
    import base64

    pred = _ask(clip_stack, {"image": base64.b64encode(buf.getvalue()).decode(), "k": 5})
    assert pred["bridged"] == {"text": "image"}
    assert any("text" in x["found_in"] for x in pred["items"]) and emb["text"].mask.any()
