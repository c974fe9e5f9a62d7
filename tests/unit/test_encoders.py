"""Encoders: masks with reasons, the PII filter before hashing, real model behaviour, the cache."""

import hashlib
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from fusionrec.encoders.base import Encoded, Encoder, pick_device
from fusionrec.encoders.cache import EmbeddingCache
from fusionrec.encoders.pipeline import item_texts, run_encoder
from fusionrec.encoders.storage import resolve_checkpoint
from fusionrec.errors import ConfigError

pytestmark = pytest.mark.unit


class CountingEncoder:
    """A fake encoder that counts what it embeds (vector = [len, vowels, identity salt, 1])."""

    modality = "fake"
    dim = 4

    def __init__(self, identity="fake/v1"):
        self.identity = identity
        self.embedded: list[str] = []

    def prepare(self, items):
        return [i or None for i in items], [None if i else "empty" for i in items]

    key = staticmethod(lambda s: hashlib.sha256(s.encode()).hexdigest())

    def embed(self, batch):
        self.embedded += batch
        v = np.array([[len(s), sum(c in "aeiou" for c in s), len(self.identity), 1] for s in batch], dtype=np.float32)
        ok = np.array([s != "poison" for s in batch])
        return v, ok, [None if o else "poisoned" for o in ok]


def test_cache_recomputes_exactly_what_changed(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    enc = CountingEncoder()
    items = ["alpha", "beta", "", "gamma", "poison"]
    first, stats = run_encoder(enc, items, cache, progress=False)
    assert stats["computed"] == 4 and stats["cached"] == 0
    assert first.mask.tolist() == [True, True, False, True, False]
    assert first.reasons[2] == "empty" and first.reasons[4] == "poisoned"
    enc.embedded.clear()
    again, stats = run_encoder(enc, items, cache, progress=False)
    assert stats["cached"] == 3 and enc.embedded == ["poison"]  # failures are not cached
    np.testing.assert_array_equal(again.values, first.values)
    enc.embedded.clear()
    _, stats = run_encoder(enc, ["alpha", "BETA", "", "gamma", "poison"], cache, progress=False)
    assert enc.embedded == ["BETA", "poison"]
    other = CountingEncoder("fake/v2")  # another encoder identity: nothing is reused
    _, stats = run_encoder(other, items, cache, progress=False)
    assert stats["cached"] == 0 and sorted(other.embedded) == ["alpha", "beta", "gamma", "poison"]


def test_text_masks_empty_and_filters_pii_before_hashing(text_encoder):
    enc = text_encoder.encode(["A detective follows the clues of a murder.", "", None, "   "])
    assert enc.mask.tolist() == [True, False, False, False]
    assert enc.reasons[1:] == ["empty text"] * 3
    assert np.allclose(np.linalg.norm(enc.values[0]), 1.0, atol=1e-5) and not enc.values[1:].any()
    a, _ = text_encoder.prepare(["Mail jane@example.com about the film"])
    b, _ = text_encoder.prepare(["Mail bob@example.org about the film"])
    assert a == b == ["Mail <EMAIL_ADDRESS> about the film"]
    assert text_encoder.key(a[0]) == text_encoder.key(b[0])


def test_text_embeddings_carry_meaning(text_encoder):
    v = text_encoder.encode(
        [
            "a detective solves a murder mystery",
            "an investigator hunts for clues to a killing",
            "football players win the championship",
        ]
    ).values
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def _tiny_bert(folder, seed):
    """A one-layer BERT with random weights (seeded) and the MiniLM tokenizer files, saved to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel

    from fusionrec.encoders.text import default_text_checkpoint

    torch.manual_seed(seed)
    BertModel(
        BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    ).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        src = default_text_checkpoint() / name
        if src.exists():
            shutil.copy(src, folder / name)
    return folder


def test_any_local_bert_checkpoint_loads(tmp_path, text_encoder):
    from fusionrec.encoders.text import TextEncoder

    tiny = TextEncoder(_tiny_bert(tmp_path / "tiny-bert", seed=0), device="cpu")
    assert tiny.dim == 32 and tiny.identity != text_encoder.identity
    assert tiny.encode(["hello world"]).values.shape == (1, 32)


def test_changed_weights_miss_the_cache_and_a_copy_of_the_same_weights_hits_it(tmp_path):
    from fusionrec.encoders.text import TextEncoder

    original = TextEncoder(_tiny_bert(tmp_path / "a", seed=0), device="cpu")
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    copy = TextEncoder(tmp_path / "copy", device="cpu")
    retrained = TextEncoder(_tiny_bert(tmp_path / "b", seed=1), device="cpu")  # same architecture, other weights
    assert original.identity == copy.identity != retrained.identity
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    texts = ["a detective story", "a love story", "a war story"]
    first, stats = run_encoder(original, texts, cache, progress=False)
    assert stats["computed"] == 3 and stats["cached"] == 0
    _, stats = run_encoder(copy, texts, cache, progress=False)
    assert stats["cached"] == 3 and stats["computed"] == 0  # the same weights elsewhere: the cache answers
    other, stats = run_encoder(retrained, texts, cache, progress=False)
    assert stats["cached"] == 0 and stats["computed"] == 3  # other weights: nothing stale is reused
    assert not np.allclose(other.values, first.values)


def _png(colour, shape="square"):
    img = Image.new("RGB", (96, 96), (235, 235, 235))
    from PIL import ImageDraw

    d = ImageDraw.Draw(img)
    (d.rectangle if shape == "square" else d.ellipse)([16, 16, 80, 80], fill=colour)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_both_encoders_are_the_protocol_run_encoder_calls(text_encoder, image_encoder):
    for enc in (text_encoder, image_encoder):
        assert isinstance(enc, Encoder), type(enc).__name__
        assert enc.encode(enc.prepare([None])[0]).mask.tolist() == [False]  # nothing to embed: masked
    assert not isinstance(object(), Encoder)


def test_image_masks_missing_and_corrupt_with_reasons(image_encoder, tmp_path):
    enc = image_encoder.encode([_png((200, 30, 30)), None, str(tmp_path / "absent.jpg"), b"\xff\xd8garbage"])
    assert enc.mask.tolist() == [True, False, False, False]
    assert enc.reasons[1] == "no image" and "unreadable" in enc.reasons[2] and "does not decode" in enc.reasons[3]
    assert enc.values.shape == (4, 1280) and not enc.values[1:].any()


def test_image_embeddings_see_shape_and_colour(image_encoder):
    red, red_again, blue, red_circle = image_encoder.encode(
        [_png((200, 30, 30)), _png((205, 35, 30)), _png((30, 60, 210)), _png((200, 30, 30), "circle")]
    ).values
    assert red @ red_again > red @ blue + 0.05  # colour moves the embedding
    assert red @ blue > red @ red_circle  # and shape moves it more (ImageNet features are shape-heavy)


def test_hf_vision_checkpoint_loads(tmp_path):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    from fusionrec.encoders.image import ImageEncoder

    folder = tmp_path / "tiny-vit"
    ViTModel(
        ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=30,
        )
    ).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    enc = ImageEncoder(folder, kind="hf", device="cpu").encode([_png((10, 200, 10))])
    assert enc.mask.all() and enc.values.shape == (1, 24)


def test_a_clip_checkpoint_puts_texts_where_its_images_are(tmp_path):
    """A CLIP folder with its tokenizer: images through the vision tower and projection, texts through the
    text tower into the same joint space, each equal to what CLIP's own forward pass gives (a tiny random
    CLIP); the same folder without its tokenizer has no joint text space, and another identity."""
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    from fusionrec.encoders.image import ImageEncoder
    from tests.tiny_clip import tiny_clip

    folder = tiny_clip(tmp_path / "tiny-clip")
    enc = ImageEncoder(folder, kind="hf", device="cpu")
    photo = _png((200, 30, 30), "circle")
    image = enc.encode([photo]).values[0]
    texts = enc.encode_joint_text(["a red circle", "blue striped dress"])
    clip = CLIPModel.from_pretrained(folder).eval()
    tokens = AutoTokenizer.from_pretrained(folder)(["a red circle"], return_tensors="pt")
    pixels = AutoImageProcessor.from_pretrained(folder)(Image.open(io.BytesIO(photo)), return_tensors="pt")
    with torch.no_grad():
        out = clip(**tokens, **pixels)
    unit = lambda t: (t / t.norm(dim=-1, keepdim=True)).numpy()[0]  # noqa: E731
    assert enc.dim == 16 and texts.shape == (2, 16)
    assert np.allclose(texts[0], unit(out.text_embeds), atol=1e-5)
    assert np.allclose(image, unit(out.image_embeds), atol=1e-3)  # the one preprocessing path: PIL's resize
    assert not np.allclose(texts[0], texts[1], atol=1e-3)

    bare = tmp_path / "vision-only"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns("tokenizer*", "vocab*", "merges*", "special*"))
    vision = ImageEncoder(bare, kind="hf", device="cpu")
    assert vision.joint is None and vision.identity != enc.identity
    assert np.allclose(vision.encode([photo]).values[0], image, atol=1e-6)
    with pytest.raises(ValueError, match="no joint text space"):
        vision.encode_joint_text(["a red circle"])


def test_item_texts_join_fields_and_skip_missing():
    import pandas as pd

    items = pd.DataFrame({"title": ["Heat (1995)", None, None], "overview": ["A heist.", "Only text", None]})
    assert item_texts(items, ("title", "overview")) == ["Heat (1995). A heist.", "Only text", None]


def test_checkpoint_resolution(tmp_path):
    (tmp_path / "ckpt").mkdir()
    assert resolve_checkpoint(f"file://{tmp_path / 'ckpt'}", tmp_path) == tmp_path / "ckpt"
    with pytest.raises(ConfigError, match="no such file or folder"):
        resolve_checkpoint(str(tmp_path / "absent"), tmp_path)
    with pytest.raises(ConfigError, match="model hubs are not reached"):
        resolve_checkpoint("hf://sentence-transformers/all-MiniLM-L6-v2", tmp_path)


def test_cuda_asked_for_without_cuda_is_a_config_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert pick_device("auto") == "cpu"
    with pytest.raises(ConfigError, match="no CUDA device"):
        pick_device("cuda")


def test_dataset_embeddings_are_aligned_and_masked(synth_validated, synth_embeddings):
    n = synth_validated.n_items
    assert set(synth_embeddings) == {"text", "image", "audio", "tabular"}  # tabular: the side features price, year
    for name, m in synth_embeddings.items():
        assert m.values.shape[0] == n and m.mask.shape == (n,) and m.values.dtype == np.float32
        assert not m.values[~m.mask].any()
    assert synth_embeddings["text"].dim == 384 and synth_embeddings["image"].dim == 1280
    assert synth_embeddings["audio"].dim == 16 and synth_embeddings["image"].mask.all()


def test_encoded_empty_is_all_masked():
    e = Encoded.empty(3, 2)
    assert e.values.shape == (3, 2) and not e.mask.any()
