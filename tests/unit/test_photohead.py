"""The photo head (fusionrec.photohead): camera-like views of a photo, the head trained on them, and the
search's image space with it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fusionrec.photohead import RAW_SHARE, PhotoHead, train_photo_head, view
from fusionrec.search import ItemSearch

ID = "image-encoder@1"


def _catalogue(n: int = 300, d: int = 40, seed: int = 0):
    """Item photos and two views of each: a view is its photo moved a long way along 6 "camera" directions
    shared by every photo (light, crop, ...) and a little at random, so that the plain cosine often prefers
    another item's photo, while what tells the items apart is untouched."""
    rng = np.random.default_rng(seed)
    photos = rng.standard_normal((n, d)).astype(np.float32)
    camera = np.linalg.qr(rng.standard_normal((d, 6)))[0].T.astype(np.float32)  # 6 orthonormal directions
    views = photos[:, None] + 4.0 * rng.standard_normal((n, 2, 6)).astype(np.float32) @ camera
    views += 0.1 * rng.standard_normal(views.shape).astype(np.float32)
    mask = np.ones(n, bool)
    mask[:20] = False  # items without a photo
    return photos, mask, views.astype(np.float32) * mask[:, None, None]


@pytest.fixture(scope="module")
def trained():
    photos, mask, views = _catalogue()
    return photos, mask, views, train_photo_head(photos, mask, views, ID, seed=0)


def _top1(search: ItemSearch, queries: np.ndarray, own: np.ndarray) -> float:
    hits = search.search([{"image": q} for q in queries], 10)
    return float(np.mean([h.items[np.argmax(h.scores)] == o for h, o in zip(hits, own)]))


def test_the_head_finds_held_out_items_from_other_photos_of_them_better_than_the_plain_space(trained):
    photos, mask, views, head = trained
    held = head.held_out
    assert len(held) == 28 and not set(held.tolist()) & set(range(20))  # 10% of the 280 photos
    assert head.figures["held_out_view_top1_head"] > head.figures["held_out_view_top1_encoder"] + 0.3
    # through the search: views of held-out items (never trained on), the head against none
    fresh = views[held, 1]
    plain = ItemSearch({"image": photos}, {"image": mask})
    with_head = ItemSearch({"image": photos}, {"image": mask}, head=head)
    assert _top1(with_head, fresh, held) >= _top1(plain, fresh, held) + 0.15


def test_the_image_space_with_the_head_is_the_blended_cosine(trained):
    photos, mask, views, head = trained
    search = ItemSearch({"image": photos}, {"image": mask}, head=head)
    q = views[100, 0]
    hit = search.search([{"image": q}], 5)[0]
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    w = head.weights
    want = RAW_SHARE * unit(photos[hit.items]) @ unit(q) + (1 - RAW_SHARE) * unit(unit(photos[hit.items]) @ w) @ unit(
        unit(q) @ w
    )
    np.testing.assert_allclose(hit.scores, want, atol=1e-5)
    assert search.spaces["image"].shape == (300, 40 + w.shape[1]) and not search.spaces["image"][:20].any()


def test_the_head_is_shipped_with_the_index_and_refused_for_another_encoder(tmp_path, trained):
    photos, mask, views, head = trained
    ItemSearch({"image": photos}, {"image": mask}, head=head).save(tmp_path)
    again = PhotoHead.load(tmp_path, ID, 40)
    assert again is not None and np.array_equal(again.weights, head.weights) and again.raw_share == head.raw_share
    assert PhotoHead.load(tmp_path, "image-encoder@2", 40) is None and PhotoHead.load(tmp_path, ID, 41) is None
    assert train_photo_head(photos[:30], mask[:30], views[:30], ID) is None  # too few photos to learn from


def _jpeg(size=(120, 90)) -> bytes:
    img = Image.new("RGB", size, (235, 235, 235))
    img.paste((200, 30, 30), (30, 20, 90, 70))
    out = io.BytesIO()
    img.save(out, format="JPEG")
    return out.getvalue()


def test_a_view_is_a_camera_like_function_of_the_photo_and_its_number():
    photo = _jpeg()
    first, again, second = view(photo, 0), view(photo, 0), view(photo, 1)
    assert first == again and first != second  # deterministic: the embedding cache keys it by its bytes
    shot = Image.open(io.BytesIO(first))
    assert shot.format == "JPEG" and 16 <= shot.width <= 120 and 16 <= shot.height <= 90
    with pytest.raises(ValueError, match="does not decode"):
        view(b"not an image", 0)


def test_a_title_is_searched_beside_the_whole_text_and_the_better_one_counts(tmp_path):
    """An item whose whole text lies far from a query but whose title alone is the query: found first, its
    text term the title's cosine; the titles travel with the index and are dropped when they do not fit."""
    rng = np.random.default_rng(3)
    texts = rng.standard_normal((200, 24)).astype(np.float32)
    titles = rng.standard_normal((200, 24)).astype(np.float32)
    titles[:10] = 0  # items without a title of their own
    mask = np.ones(200, bool)
    plain = ItemSearch({"text": texts}, {"text": mask})
    search = ItemSearch({"text": texts}, {"text": mask}, titles=titles)
    q = titles[42] / np.linalg.norm(titles[42])
    hit = search.search([{"text": q}], 5)[0]
    assert hit.items[np.argmax(hit.scores)] == 42 and hit.scores.max() == pytest.approx(1.0, abs=1e-5)
    assert 42 not in plain.search([{"text": q}], 5)[0].items
    unit = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    cand = np.array([3, 42, 7])
    scored = search.score({"text": q}, cand).scores
    want = np.maximum(unit[cand] @ q, np.where(np.abs(titles[cand]).sum(1) > 0, search.titles[cand] @ q, 0))
    np.testing.assert_allclose(scored, want, atol=1e-5)
    assert len(search.rows["text"]) == 200 + 190
    search.save(tmp_path)
    assert np.array_equal(np.load(tmp_path / "text.titles.npy"), search.titles)
