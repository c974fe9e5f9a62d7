"""The bridge between the text and image spaces (fusionrec.bridge), and the search's use of it."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fusionrec.bridge import Bridge, train_bridge
from fusionrec.errors import BadRequest
from fusionrec.search import PHOTOS_BY_TEXT, ItemSearch

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


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _top10(queries: np.ndarray, targets: np.ndarray) -> float:
    """The share of query rows whose own row of ``targets`` is among their 10 nearest (cosine)."""
    s = _unit(queries) @ _unit(targets).T
    return float(((s > np.diag(s)[:, None]).sum(1) < 10).mean())


def test_the_bridge_carries_held_out_texts_to_their_own_photos_and_back():
    vectors, masks = _catalogue()
    bridge = train_bridge(vectors, masks, IDS)
    held = bridge.held_out
    assert len(held) == 95 and not set(held.tolist()) & set(range(50))  # 10% of the 950 pairs
    random = 10 / len(held)
    # a held-out text finds its own photo where the bridge set the photos in the text space
    assert _top10(vectors["text"][held], bridge.photos_in_text(vectors["image"][held])) > 5 * random
    # a held-out photo, carried into the text space, finds its own text
    assert _top10(bridge.project("image", "text", vectors["image"][held]), vectors["text"][held]) > 5 * random
    for out in (bridge.project("image", "text", vectors["image"][:3]), bridge.photos_in_text(vectors["image"][:3])):
        assert out.shape == (3, 24)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert bridge.figures["pairs"] == 950 and bridge.figures["held_out_text_to_image_top10"] > 5 * random


def test_the_photos_map_is_the_ridge_regression_of_the_trained_pairs_texts_on_their_photos():
    """The closed form, by hand: ``(X'X + lambda I)^-1 X'T`` over the unit rows of the pairs trained on
    (not the held-out ones), ``lambda`` = RIDGE times their number."""
    from fusionrec.bridge import RIDGE

    vectors, masks = _catalogue(n=300)
    bridge = train_bridge(vectors, masks, IDS)
    trained = np.setdiff1d(np.flatnonzero(masks["image"]), bridge.held_out)
    x, t = _unit(vectors["image"][trained]).astype(np.float64), _unit(vectors["text"][trained]).astype(np.float64)
    p = np.linalg.inv(x.T @ x + RIDGE * len(trained) * np.eye(40)) @ x.T @ t
    np.testing.assert_allclose(bridge.photos, p, rtol=1e-3, atol=1e-5)


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
        again.project("image", "text", vectors["image"][:5]), bridge.project("image", "text", vectors["image"][:5])
    )
    np.testing.assert_allclose(again.photos_in_text(vectors["image"][:5]), bridge.photos_in_text(vectors["image"][:5]))
    np.testing.assert_array_equal(again.held_out, bridge.held_out)
    assert Bridge.load(tmp_path, {**IDS, "image": "another-encoder"}, dims) is None
    assert Bridge.load(tmp_path, IDS, {**dims, "text": 32}) is None
    assert Bridge.load(tmp_path / "nothing-here", IDS, dims) is None
    # a bridge from before the photos' map (a text map into the image space instead): none, so built anew
    with np.load(tmp_path / "bridge.npz") as z:
        np.savez(tmp_path / "bridge.npz", text_to_image=z["image_to_text"].T, image_to_text=z["image_to_text"])
    assert Bridge.load(tmp_path, IDS, dims) is None


def test_the_search_carries_a_query_into_the_space_it_lacks(caplog):
    vectors, masks = _catalogue(n=300)
    search = ItemSearch(vectors, masks, bridge=train_bridge(vectors, masks, IDS))
    text = {"text": vectors["text"][7]}
    both, via = search.in_spaces(text, "both")
    assert set(both) == {"text", PHOTOS_BY_TEXT} and via == {"image": "text"}
    only, via = search.in_spaces(text, "image")
    assert set(only) == {PHOTOS_BY_TEXT} and via == {"image": "text"}
    np.testing.assert_array_equal(only[PHOTOS_BY_TEXT], text["text"])  # the text itself, met in its own space
    assert search.in_spaces(text, "text") == ({"text": text["text"]}, {})
    photo, via = search.in_spaces({"image": vectors["image"][7]}, "text")
    assert set(photo) == {"text"} and via == {"text": "image"}
    hits = search.search([only], pool=10)[0]
    col = search.modalities.index("image")
    assert hits.found[:, col].all() and not hits.terms[:, 1 - col].any()
    # the photos nearest the text where the bridge set them in the text space, scored by that cosine
    placed = search.bridge.photos_in_text(vectors["image"]) * masks["image"][:, None]
    cos = placed @ _unit(text["text"][None])[0]
    np.testing.assert_array_equal(np.sort(hits.items), np.sort(np.argsort(-cos, kind="stable")[:10]))
    np.testing.assert_allclose(hits.terms[:, col], cos[hits.items], atol=1e-5)
    # within candidates the same cosine, weighed by its share beside the text's own space
    within = search.score(both, np.arange(20), {"image": 0.25})
    np.testing.assert_allclose(within.terms[:, col], cos[:20] * 0.25 / 1.25, atol=1e-5)
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


def test_the_photos_map_is_fitted_on_the_image_space_as_searched_and_used_only_there(tmp_path):
    """With a photo head, the photos are searched with the head's side beside the encoder's: the bridge's
    photos map is fitted on those rows, the search sets them in the text space with it, and a map fitted
    on another image space (without the head) is neither loaded nor used."""
    from fusionrec.photohead import train_photo_head

    vectors, masks = _catalogue(n=300)
    rng = np.random.default_rng(1)
    views = vectors["image"][:, None] + 0.3 * rng.standard_normal((300, 2, 40)).astype(np.float32)
    head = train_photo_head(vectors["image"], masks["image"], views, IDS["image"])
    searched = head.extend(_unit(vectors["image"]) * masks["image"][:, None])
    bridge = train_bridge(vectors, masks, IDS, photos=searched)
    wide = 40 + head.weights.shape[1]
    assert bridge.photos.shape == (wide, 24)
    search = ItemSearch(vectors, masks, bridge=bridge, head=head)
    np.testing.assert_allclose(
        search.spaces[PHOTOS_BY_TEXT][masks["image"]], bridge.photos_in_text(searched)[masks["image"]], atol=1e-6
    )
    assert PHOTOS_BY_TEXT not in ItemSearch(vectors, masks, bridge=bridge).keys  # no head: another space
    bridge.save(tmp_path)
    dims = {"text": 24, "image": 40}
    assert Bridge.load(tmp_path, IDS, dims, wide) is not None
    assert Bridge.load(tmp_path, IDS, dims, 40) is None and Bridge.load(tmp_path, IDS, dims) is None
