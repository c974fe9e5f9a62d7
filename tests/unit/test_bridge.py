"""The bridge between the text and image spaces (fusionrec.bridge), and the search's use of it."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fusionrec.bridge import Bridge, train_bridge
from fusionrec.errors import BadRequest
from fusionrec.search import ItemSearch

IDS = {"text": "text-encoder@1", "image": "image-encoder@1"}


def _catalogue(n: int = 1000, seed: int = 0):
    """Items whose text and photo both show one hidden 8-d description, each through its own linear map
    and noise: what a text says of an item can be carried to where its photo lies."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 8)).astype(np.float32)
    text = latent @ rng.standard_normal((8, 24)).astype(np.float32) + 0.1 * rng.standard_normal((n, 24))
    image = latent @ rng.standard_normal((8, 40)).astype(np.float32) + 0.1 * rng.standard_normal((n, 40))
    masks = {"text": np.ones(n, bool), "image": np.ones(n, bool)}
    masks["image"][:50] = False  # items without a photo are no pair
    return {"text": text.astype(np.float32), "image": image.astype(np.float32)}, masks


def _top10(bridge: Bridge, vectors, source: str, target: str, items: np.ndarray) -> float:
    q = bridge.project(source, target, vectors[source][items])
    t = vectors[target][items] / np.linalg.norm(vectors[target][items], axis=1, keepdims=True)
    s = q @ t.T
    return float(((s > np.diag(s)[:, None]).sum(1) < 10).mean())


def test_the_bridge_carries_held_out_texts_to_their_own_photos_and_back():
    vectors, masks = _catalogue()
    bridge = train_bridge(vectors, masks, IDS)
    held = bridge.held_out
    assert len(held) == 95 and not set(held.tolist()) & set(range(50))  # 10% of the 950 pairs
    random = 10 / len(held)
    assert _top10(bridge, vectors, "text", "image", held) > 5 * random
    assert _top10(bridge, vectors, "image", "text", held) > 5 * random
    q = bridge.project("text", "image", vectors["text"][:3])
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert bridge.figures["pairs"] == 950 and bridge.figures["held_out_text_to_image_top10"] > 5 * random


def test_no_bridge_without_both_spaces_or_enough_pairs():
    vectors, masks = _catalogue(n=200)
    assert train_bridge({"text": vectors["text"]}, {"text": masks["text"]}, IDS) is None
    masks["image"][:180] = False  # 20 pairs
    assert train_bridge(vectors, masks, IDS) is None


def test_a_shipped_bridge_loads_only_for_the_encoders_it_was_trained_between(tmp_path):
    vectors, masks = _catalogue(n=300)
    bridge = train_bridge(vectors, masks, IDS)
    bridge.save(tmp_path)
    dims = {"text": 24, "image": 40}
    again = Bridge.load(tmp_path, IDS, dims)
    np.testing.assert_allclose(
        again.project("text", "image", vectors["text"][:5]), bridge.project("text", "image", vectors["text"][:5])
    )
    np.testing.assert_array_equal(again.held_out, bridge.held_out)
    assert Bridge.load(tmp_path, {**IDS, "image": "another-encoder"}, dims) is None
    assert Bridge.load(tmp_path, IDS, {**dims, "text": 32}) is None
    assert Bridge.load(tmp_path / "nothing-here", IDS, dims) is None


def test_the_search_carries_a_query_into_the_space_it_lacks(caplog):
    vectors, masks = _catalogue(n=300)
    search = ItemSearch(vectors, masks, bridge=train_bridge(vectors, masks, IDS))
    text = {"text": vectors["text"][7]}
    both, via = search.in_spaces(text, "both")
    assert set(both) == {"text", "image"} and via == {"image": "text"}
    only, via = search.in_spaces(text, "image")
    assert set(only) == {"image"} and via == {"image": "text"}
    assert search.in_spaces(text, "text") == ({"text": text["text"]}, {})
    photo, via = search.in_spaces({"image": vectors["image"][7]}, "text")
    assert set(photo) == {"text"} and via == {"text": "image"}
    hits = search.search([only], pool=10)[0]
    assert (
        hits.found[:, search.modalities.index("image")].all()
        and not hits.terms[:, 1 - search.modalities.index("image")].any()
    )
    plain = ItemSearch(vectors, masks)  # no bridge: a query stays in its own space
    with pytest.raises(BadRequest, match="cannot search the image space"):
        plain.in_spaces(text, "image")


def test_a_version_without_a_bridge_gets_one_at_load(tmp_path, caplog):
    import torch

    from fusionrec.model import FusionConfig, FusionRecModel

    vectors, masks = _catalogue(n=300)
    cfg = FusionConfig(n_users=3, n_items=300, modalities={"text": 24, "image": 40}, dim=8)
    model = FusionRecModel(cfg)
    model.set_item_features(
        {m: (torch.from_numpy(vectors[m]), torch.from_numpy(masks[m])) for m in vectors},
        torch.ones(300, dtype=torch.bool),
    )
    ItemSearch.from_model(model).save(tmp_path)  # the indexes, as a version before the bridge shipped them
    with caplog.at_level(logging.WARNING):
        search = ItemSearch.load(tmp_path, model, IDS)
    assert search.bridge is not None and "training it" in caplog.text
    ItemSearch.from_model(model, IDS).save(tmp_path)  # now shipped
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        shipped = ItemSearch.load(tmp_path, model, IDS)
    assert shipped.bridge is not None and "training it" not in caplog.text


def test_the_inference_log_tells_a_one_space_query_from_a_both_spaces_one():
    from fusionrec.monitoring.log import summarise
    from fusionrec.recommender import Row

    rows = [
        Row("query", 5, text="red"),
        Row("query", 5, text="red", space="image"),
        Row("query", 5, image=b"x", space="text"),
    ]
    assert [s.kind for s in summarise(rows, b"k" * 32)] == ["text", "text>image", "image>text"]
