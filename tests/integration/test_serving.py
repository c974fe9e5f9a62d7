"""KServe serving over real HTTP on both layouts: one collocated model server, and the predictor and the
transformer as two model server processes; a real Feast store (SQLite) behind the hooks, a model trained on
the synthetic dataset. Every test runs on both layouts, but those that talk to the predictor itself."""

import base64
import json
import os
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from fusionrec.config import load_settings
from fusionrec.features import store as fs
from fusionrec.features.tables import build_feature_tables
from fusionrec.platform import local
from tests.champion import trained_champion
from tests.stack import KEY, serving_env

pytestmark = pytest.mark.integration
MODEL = "fusionrec"
AUTH = {"authorization": f"Bearer {KEY}"}
# end users known by API key: a shopper who is user-0000003, and one whose id the model does not know
SHOPPER, STRANGER = "shopper-key-0123456789abcdefghijklmnopqrs", "stranger-key-0123456789abcdefghijklmnopq"


def _callers() -> str:
    import hashlib

    sha = lambda k: hashlib.sha256(k.encode()).hexdigest()  # noqa: E731
    return (
        f"[{{name: shopper, key_sha256: {sha(SHOPPER)}, role: user, user_id: user-0000003}}, "
        f"{{name: stranger, key_sha256: {sha(STRANGER)}, role: user, user_id: no-such-user}}]"
    )


@pytest.fixture(scope="module", params=["collocated", "two_hops"])
def stack(request, tmp_path_factory, synth_validated, synth_embeddings, free_port):
    """A trained champion, a materialised Feast store, and the layout's servers running on free ports."""
    root = tmp_path_factory.mktemp("serving")
    ds, emb = synth_validated, synth_embeddings
    models = root / "models"
    split, path = trained_champion(models, ds, emb)
    features = root / "features"
    features.mkdir()
    build_feature_tables(ds, emb, features, 20)
    env = serving_env(
        root,
        models,
        features,
        free_port,
        {
            "FUSIONREC__SERVING__AUTH__CALLERS": _callers(),
            "FUSIONREC__SERVING__PREDICTOR_TIMEOUT_S": "3",
            "FUSIONREC__SERVING__MAX_IMAGE_BYTES": "200000",
        },
    )
    # FEATURE_TIMEOUT_S 3 (stack.py): generous, so a loaded CI machine does not send a request to the fallback
    # (tested on its own below); one worker: the tests read the server's /metrics, which are per worker
    settings = load_settings(env={**env})
    store = fs.feature_store(settings.features, features)
    fs.apply(store, features)
    fs.materialize(store)
    servers = local.serve(settings, log_dir=root / "logs", env=env, layout=request.param)
    yield {
        "servers": servers,
        "settings": settings,
        "env": env,
        "ds": ds,
        "split": split,
        "store": store,
        "logs": root / "logs",
        "model_dir": path,
        "emb": emb,
    }
    servers.stop()


def _post(url, body, headers=None, **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(
        url, content=data, headers={"content-type": "application/json", **AUTH, **(headers or {})}, timeout=30, **kw
    )


def _predictor(stack) -> str:
    """The predictor's own URL; a test that talks to it skips on the collocated layout, which has none."""
    if stack["servers"].predictor_url is None:
        pytest.skip("the collocated layout has no predictor of its own")
    return stack["servers"].predictor_url


def _urls(stack) -> list[str]:
    """Every server of the layout: the one callers reach first."""
    s = stack["servers"]
    return [u for u in (s.transformer_url, s.predictor_url) if u is not None]


def _recommend(stack, *instances):
    r = _post(f"{stack['servers'].transformer_url}/v1/models/{MODEL}:predict", {"instances": list(instances)})
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def _seen(stack, user_idx):
    s = stack["split"]
    parts = pd.concat([s.train, s.valid, s.test])
    items = stack["ds"].items.set_index("item_idx")["item_id"].astype(str)
    return set(items[parts.loc[parts["user_idx"] == user_idx, "item_idx"]])


# the history term: the item-item term over the user's history; content: the content term over it
TERMS = ("image", "text", "id", "history", "content", "bias")


def _reference_terms(stack, user_idx: int) -> np.ndarray:
    """Every item's score terms for a known user [n_items, image, text, id, history, content, bias], from the
    equations (tests/reference.py) over the served artifact's weights; the user vector from its user tower."""
    import torch
    from safetensors.numpy import load_file

    from fusionrec.artifact import load_artifact
    from tests.reference import content_term, item_item_term, score_terms

    art = load_artifact(stack["model_dir"])
    with torch.inference_mode():
        uv = (
            art.model.users(
                torch.tensor([user_idx]),
                art.history[[user_idx]],
                art.history_mask[[user_idx]],
                art.model.items().vectors,
            )[0]
            .numpy()
            .astype(np.float64)
        )
    sd = load_file(str(stack["model_dir"] / "model.safetensors"))
    terms = score_terms(sd, ["image", "text"], art.config.temperature, uv)
    history = art.history[user_idx][art.history_mask[user_idx]].numpy()
    by_history = np.stack([item_item_term(sd, history), content_term(sd, ["image", "text"], history)], 1)
    return np.concatenate([terms[:, :3], by_history, terms[:, 3:]], axis=1)


def _index(stack) -> pd.Series:
    return stack["ds"].items.set_index(stack["ds"].items["item_id"].astype(str))["item_idx"]


def test_known_user_gets_k_unseen_items_explained_and_versioned(stack):
    user = stack["ds"].users.iloc[3]
    pred = _recommend(stack, {"user_id": str(user["user_id"]), "k": 7})[0]
    ids = [i["item_id"] for i in pred["items"]]
    assert len(ids) == 7 and len(set(ids)) == 7
    assert not set(ids) & _seen(stack, int(user["user_idx"]))  # exclude_seen defaults to true
    assert pred["model_version"] == "v0001" and not pred["fallback"] and not pred["cold"]
    scores = [i["score"] for i in pred["items"]]
    assert scores == sorted(scores, reverse=True)
    # each score's terms per modality, ID and bias, against the equations over the served artifact (asked of
    # the predictor: the transformer adds the feature store's latest history, which moves the user vector)
    expected = _reference_terms(stack, int(user["user_idx"]))
    # the served model has an item-item term that moves this user's scores (else leaving it out would go unseen)
    assert np.abs(expected[:, TERMS.index("history")]).max() > 1e-3
    assert np.abs(expected[:, TERMS.index("content")]).max() > 1e-3  # and a content term
    for item in pred["items"]:  # what the caller gets: terms that add up to the score, the driver the largest
        assert sum(item["explanation"].values()) == pytest.approx(item["score"], abs=5e-4)
        assert item["driver"] == max(item["explanation"], key=item["explanation"].get)
        assert item["title"] and item["image"]
    if stack["servers"].predictor_url is not None:  # the scorer alone (the same code in both layouts)
        direct = _post(
            f"{stack['servers'].predictor_url}/v1/models/{MODEL}:predict",
            {"instances": [{"user_id": str(user["user_id"]), "k": 7}]},
        )
        for item in direct.json()["predictions"][0]["items"]:
            row = expected[int(_index(stack)[item["item_id"]])]
            assert item["explanation"] == {t: pytest.approx(v, abs=2e-4) for t, v in zip(TERMS, row)}
            assert sum(item["explanation"].values()) == pytest.approx(item["score"], abs=5e-4)
            assert item["driver"] == TERMS[int(np.argmax(row))]
    splits = {tuple(np.round(list(i["explanation"].values()), 3)) for i in pred["items"]}
    assert len(splits) == len(pred["items"])  # the terms are the item's own, not one split for all


def test_exclude_seen_false_may_return_seen_items_and_candidates_restrict(stack):
    user = stack["ds"].users.iloc[3]
    cands = stack["ds"].items["item_id"].astype(str).iloc[:6].tolist()
    pred = _recommend(stack, {"user_id": str(user["user_id"]), "k": 10, "candidates": cands, "exclude_seen": False})[0]
    assert sorted(i["item_id"] for i in pred["items"]) == sorted(cands)  # k > candidates: all of them, ranked


def test_exclude_removes_the_named_items_and_k_is_still_filled(stack):
    user = str(stack["ds"].users.iloc[3]["user_id"])
    first = [i["item_id"] for i in _recommend(stack, {"user_id": user, "k": 6})[0]["items"]]
    again = [i["item_id"] for i in _recommend(stack, {"user_id": user, "k": 6, "exclude": first[:3]})[0]["items"]]
    assert len(again) == 6 and not set(again) & set(first[:3])
    assert again[:3] == first[3:]  # the rest keep their order
    query = _recommend(stack, {"text": "a story", "k": 4}, {"text": "a story", "k": 4, "exclude": ["item-000000"]})
    assert "item-000000" not in [i["item_id"] for i in query[1]["items"]] and len(query[1]["items"]) == 4


def test_cold_user_from_history_and_anonymous_fallback(stack):
    items = stack["ds"].items["item_id"].astype(str).tolist()
    cold, anon = _recommend(stack, {"user_id": "new-user-1", "history": items[:3], "k": 5}, {"k": 5})
    assert cold["cold"] and not cold["fallback"] and len(cold["items"]) == 5
    assert not {i["item_id"] for i in cold["items"]} & set(items[:3])
    assert anon["fallback"] and not anon["cold"]
    pop = pd.concat([stack["split"].train, stack["split"].valid, stack["split"].test])["item_idx"].value_counts()
    assert [i["score"] for i in anon["items"]] == pop.to_numpy()[:5].astype(float).tolist()  # the most popular


def _cosine_top(values: np.ndarray, mask: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A plain nearest-neighbour search: cosine of every item that has the modality, top k (numpy)."""
    v = values / np.linalg.norm(values, axis=1, keepdims=True).clip(1e-12)
    sims = np.where(mask, v @ (query / np.linalg.norm(query)), -np.inf)
    top = np.argsort(-sims, kind="stable")[:k]
    return top, sims[top]


def test_query_by_image_searches_the_image_encoders_space(stack):
    import torch

    from fusionrec.artifact import load_artifact

    row = stack["ds"].items.dropna(subset=["image"]).iloc[0]
    with open(row["image"], "rb") as f:
        img = base64.b64encode(f.read()).decode()
    by_image = _recommend(stack, {"image": img, "k": 5, "space": "image"})[0]
    # the nearest posters by cosine in the image encoder's space, against the offline embedding of the same poster
    emb = stack["emb"]["image"]
    top, sims = _cosine_top(emb.values, emb.mask, emb.values[int(row["item_idx"])], 5)
    ids = stack["ds"].items.set_index("item_idx")["item_id"].astype(str)
    assert [i["item_id"] for i in by_image["items"]] == ids[top].tolist()
    assert by_image["items"][0]["item_id"] == str(row["item_id"])  # the poster finds its own item first
    np.testing.assert_allclose([i["score"] for i in by_image["items"]], sims, atol=1e-3)
    for item in by_image["items"]:  # an image query: the image term is the whole score
        assert item["driver"] == "image" and item["explanation"]["text"] == 0 and item["explanation"]["id"] == 0
    # the query's item-tower vector is still returned (for monitoring): the content path of the same poster
    model = load_artifact(stack["model_dir"]).model
    feat = torch.from_numpy(np.asarray(emb.values[int(row["item_idx"])][None], dtype=np.float32))
    with torch.inference_mode():
        q = model.items(content={"image": (feat, torch.ones(1, dtype=torch.bool))}).vectors[0]
    np.testing.assert_allclose(by_image["embedding"], q.numpy(), atol=1e-4)


def _bridge(stack) -> dict[str, np.ndarray]:
    """The bridge shipped in the served version, read from its file."""
    with np.load(Path(stack["model_dir"]) / "index" / "bridge.npz") as z:
        return {k: z[k] for k in z.files}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True).clip(1e-12)


def _photos_in_text(stack) -> np.ndarray:
    """Where the served version's bridge sets each catalogue photo in the text space (from its file)."""
    return _unit(_unit(stack["emb"]["image"].values) @ _bridge(stack)["photos_to_text"])


def test_a_text_query_finds_pictures_through_the_shipped_bridge(stack, text_encoder):
    """space "image": the text meets the photos where the version's own bridge set them in the text space,
    searched there alone: the items are the photos nearest the text (numpy over the offline embeddings and
    the shipped map), every score is the image term, found in the image space, and the answer says so."""
    emb, items = stack["emb"], stack["ds"].items
    n = int(items.loc[emb["text"].mask & emb["image"].mask, "item_idx"].iloc[4])
    text = items.set_index("item_idx").loc[n, "description"]
    pred = _recommend(stack, {"text": text, "k": 5, "space": "image"})[0]
    own = np.asarray(text_encoder.encode([text]).values[0], dtype=np.float32)  # the query's text vector
    top, sims = _cosine_top(_photos_in_text(stack), emb["image"].mask, _unit(own), 5)
    ids = items.set_index("item_idx")["item_id"].astype(str)
    assert [x["item_id"] for x in pred["items"]] == ids[top].tolist()
    np.testing.assert_allclose([x["score"] for x in pred["items"]], sims, atol=1e-3)
    assert pred["bridged"] == {"image": "text"}
    for x in pred["items"]:
        assert x["found_in"] == ["image"] and x["explanation"]["text"] == 0 and x["driver"] == "image"


def test_a_text_query_searches_both_spaces_by_default_and_within_candidates(stack, text_encoder):
    """The default: the text's own space and the image space through the bridge, each term its cosine
    there times its share (the bridged space weighs serving.bridge_weight against 1); with candidates,
    only those items, every one scored."""
    emb, items = stack["emb"], stack["ds"].items
    n = int(items.loc[emb["text"].mask & emb["image"].mask, "item_idx"].iloc[6])
    text = items.set_index("item_idx").loc[n, "description"]
    own = np.asarray(text_encoder.encode([text]).values[0], dtype=np.float32)  # the query's text vector
    cos = {
        "text": np.where(emb["text"].mask, _unit(emb["text"].values) @ _unit(own), 0.0),
        "image": np.where(emb["image"].mask, _photos_in_text(stack) @ _unit(own), 0.0),
    }
    w = stack["settings"].serving.bridge_weight
    assert w > 0
    pred = _recommend(stack, {"text": text, "k": 8})[0]
    assert pred["bridged"] == {"image": "text"}
    for x in pred["items"]:
        i = int(_index(stack)[x["item_id"]])
        assert x["explanation"]["text"] == pytest.approx(cos["text"][i] / (1 + w), abs=1e-3)
        assert x["explanation"]["image"] == pytest.approx(cos["image"][i] * w / (1 + w), abs=1e-3)
        assert set(x["found_in"]) <= {"text", "image"} and x["found_in"]
    pool = items["item_id"].astype(str).iloc[20:32].tolist()
    within = _recommend(stack, {"text": text, "k": 12, "candidates": pool})[0]
    got = [x["item_id"] for x in within["items"]]
    assert sorted(got) == sorted(pool)  # every candidate, and nothing else
    mean = (cos["text"] + w * cos["image"]) / (1 + w)
    assert got == sorted(pool, key=lambda i: -mean[int(_index(stack)[i])])


def test_more_like_this_item_combines_its_modalities_and_leaves_it_out(stack):
    emb, items = stack["emb"], stack["ds"].items
    i = int(items.loc[emb["text"].mask & emb["image"].mask, "item_idx"].iloc[2])
    like = str(items.set_index("item_idx").loc[i, "item_id"])
    pred = _recommend(stack, {"like": like, "k": 6})[0]
    got = [x["item_id"] for x in pred["items"]]
    assert like not in got and len(got) == 6

    def cosines(m):
        v = emb[m].values / np.linalg.norm(emb[m].values, axis=1, keepdims=True).clip(1e-12)
        return np.where(emb[m].mask, v @ v[i], 0.0)

    mean = (cosines("text") + cosines("image")) / 2  # an item without a modality scores 0 there
    mean[i] = -np.inf
    ids = items.set_index("item_idx")["item_id"].astype(str)
    assert got == ids[np.argsort(-mean, kind="stable")[:6]].tolist()
    for x in pred["items"]:
        n = int(_index(stack)[x["item_id"]])
        assert x["explanation"]["text"] == pytest.approx(cosines("text")[n] / 2, abs=1e-3)
        assert x["explanation"]["image"] == pytest.approx(cosines("image")[n] / 2, abs=1e-3)


def test_a_query_with_a_user_is_reranked_by_taste_with_the_blend(stack):
    """blend 0: similarity only; blend 1: the user's model score (in cosine units: T x score) among the
    similar items; between: the weighted sum, term by term."""
    user = str(stack["ds"].users.iloc[3]["user_id"])
    text = stack["ds"].items["description"].iloc[5]
    plain, taste, half, default = _recommend(
        stack,
        {"text": text, "k": 8, "user_id": user, "blend": 0},
        {"text": text, "k": 8, "user_id": user, "blend": 1},
        {"text": text, "k": 8, "user_id": user, "blend": 0.5},
        {"text": text, "k": 8, "user_id": user},
    )
    alone = _recommend(stack, {"text": text, "k": 8})[0]
    assert [x["item_id"] for x in plain["items"]] == [x["item_id"] for x in alone["items"]]
    pool = [x["item_id"] for x in taste["items"]]
    model = _recommend(stack, {"user_id": user, "candidates": pool, "k": 8, "exclude_seen": False})[0]
    T = 0.2  # FusionConfig.temperature
    assert pool == [x["item_id"] for x in model["items"]]  # the taste order is the model's order
    np.testing.assert_allclose(
        [x["score"] for x in taste["items"]], [T * x["score"] for x in model["items"]], atol=1e-3
    )
    sims = {x["item_id"]: x["score"] for x in _recommend(stack, {"text": text, "k": 100})[0]["items"]}
    shown = sorted({x["item_id"] for a in (half, default) for x in a["items"]})
    every = _recommend(stack, {"user_id": user, "candidates": shown, "k": len(shown), "exclude_seen": False})[0]
    by_model = {x["item_id"]: x["score"] for x in every["items"]}
    blend = stack["settings"].serving.blend  # the documented default
    for answer, w in ((half, 0.5), (default, blend)):
        for x in answer["items"]:
            assert x["score"] == pytest.approx((1 - w) * sims[x["item_id"]] + w * T * by_model[x["item_id"]], abs=1e-3)


def test_explanations_differ_per_user_and_a_text_query_credits_text(stack):
    """The terms of one item differ between two users; a text query's items credit text and nothing else.
    (An item without an image crediting nothing to the image: tests/unit/test_model.py, on the equations.)"""
    items = stack["ds"].items
    pool = items["item_id"].astype(str).iloc[:12].tolist()
    users = [str(u) for u in stack["ds"].users["user_id"].iloc[[3, 7]]]
    a, b = _recommend(stack, *({"user_id": u, "candidates": pool, "k": 12, "exclude_seen": False} for u in users))
    first = {x["item_id"]: x["explanation"] for x in a["items"]}
    assert all(first[x["item_id"]] != x["explanation"] for x in b["items"])
    text = _recommend(stack, {"text": items["description"].iloc[0], "k": 5, "space": "text"})[0]
    assert all(
        x["driver"] == "text" and x["explanation"]["text"] > 0 and x["explanation"]["image"] == 0 for x in text["items"]
    )
    assert all(x["found_in"] == ["text"] for x in text["items"]) and "bridged" not in text


def test_a_known_item_is_found_by_its_own_description(stack):
    items = stack["ds"].items.iloc[:10]
    answers = _recommend(stack, *({"text": d, "k": 10} for d in items["description"]))
    found = sum(str(i) in [x["item_id"] for x in a["items"]] for i, a in zip(items["item_id"], answers))
    assert found >= 8, f"{found} of 10 items found in the top 10 by their own description"


def test_feast_push_is_seen_by_the_next_request(stack):
    user = stack["ds"].users.iloc[5]
    first = _recommend(stack, {"user_id": str(user["user_id"]), "k": 3})[0]["items"][0]["item_id"]
    fs.push_interactions(
        stack["store"],
        pd.DataFrame({"user_id": [str(user["user_id"])], "item_id": [first], "timestamp": [int(time.time())]}),
        20,
    )
    again = _recommend(stack, {"user_id": str(user["user_id"]), "k": 3})[0]
    assert first not in {i["item_id"] for i in again["items"]}  # the pushed interaction is now excluded as seen
    # an item added to the catalogue after the model was trained shows up in the online history: skipped
    fs.push_interactions(
        stack["store"],
        pd.DataFrame(
            {"user_id": [str(user["user_id"])], "item_id": ["brand-new-item"], "timestamp": [int(time.time()) + 1]}
        ),
        20,
    )
    assert len(_recommend(stack, {"user_id": str(user["user_id"]), "k": 3})[0]["items"]) == 3


def test_predictor_speaks_v1_and_v2(stack):
    url = _predictor(stack)
    user = str(stack["ds"].users.iloc[3]["user_id"])
    v1 = _post(f"{url}/v1/models/{MODEL}:predict", {"instances": [{"user_id": user, "k": 4}]})
    assert v1.status_code == 200, v1.text
    body = {
        "inputs": [
            {"name": "user_id", "shape": [2], "datatype": "BYTES", "data": [user, ""]},
            {"name": "k", "shape": [2], "datatype": "INT32", "data": [4, 2]},
        ]
    }
    v2 = _post(f"{url}/v2/models/{MODEL}/infer", body)
    assert v2.status_code == 200, v2.text
    out = {o["name"]: o for o in v2.json()["outputs"]}
    assert (
        out["item_id"]["shape"] == [2, 4]
        and out["count"]["data"] == [4, 2]
        and out["fallback"]["data"] == [False, True]
    )
    assert out["item_id"]["data"][:4] == [i["item_id"] for i in v1.json()["predictions"][0]["items"]]
    assert out["score_terms"]["shape"] == [2, 4, 6] and v2.json()["parameters"]["terms"] == ",".join(TERMS)
    meta = httpx.get(f"{url}/v2/models/{MODEL}").json()  # v2 model metadata names every tensor it takes
    assert {"k", "user_id", "history", "candidates", "text", "image"} <= {i["name"] for i in meta["inputs"]}
    assert set(out) <= {o["name"] for o in meta["outputs"]}


def test_health_and_metrics(stack):
    t = stack["servers"].transformer_url
    assert httpx.get(f"{t}/").json()["status"] == "alive"
    assert httpx.get(f"{t}/v2/health/ready").status_code == 200
    before = {url: _request_counts(url) for url in _urls(stack)}
    _recommend(stack, {"k": 1})
    after = {url: _request_counts(url) for url in before}
    # one request: one more observation in the front server's preprocess and predict histograms, and in the
    # predictor's predict histogram where there is one
    assert after[t]["request_preprocess_seconds"] - before[t]["request_preprocess_seconds"] == 1
    assert after[t]["request_predict_seconds"] - before[t]["request_predict_seconds"] == 1
    if (p := stack["servers"].predictor_url) is not None:
        assert after[p]["request_predict_seconds"] - before[p]["request_predict_seconds"] == 1


def _request_counts(url: str) -> dict[str, float]:
    """Observations per KServe latency histogram (its ``_count`` sample, summed over labels)."""
    from collections import defaultdict

    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name.endswith("_seconds_count"):
                counts[sample.name.removesuffix("_count")] += sample.value
    return counts


BAD = [
    ("malformed JSON", b'{"instances": [', 400, "request format"),
    ("not instances", {"user": 1}, 400, "instances"),
    ("empty instances", {"instances": []}, 400, "non-empty"),
    ("instance not an object", {"instances": [5]}, 400, "JSON object"),
    ("unknown field", {"instances": [{"user_id": "1", "colour": "red"}]}, 400, "colour"),
    ("k wrong type", {"instances": [{"k": "5"}]}, 400, "k"),
    ("k zero", {"instances": [{"k": 0}]}, 400, "between 1 and"),
    ("k too large", {"instances": [{"k": 100000}]}, 400, "between 1 and"),
    ("history wrong type", {"instances": [{"history": "1,2"}]}, 400, "history"),
    ("unknown user", {"instances": [{"user_id": "no-such-user"}]}, 404, "unknown user"),
    ("unknown history item", {"instances": [{"history": ["no-such-item"]}]}, 404, "unknown item"),
    ("unknown candidate", {"instances": [{"candidates": ["nope"]}]}, 404, "unknown item"),
    ("unknown excluded item", {"instances": [{"k": 2, "exclude": ["nope"]}]}, 404, "unknown item ids in exclude"),
    ("exclude wrong type", {"instances": [{"exclude": "item-000001"}]}, 400, "exclude"),
    ("bad base64", {"instances": [{"image": "***not base64***"}]}, 400, "base64"),
    ("corrupt image", {"instances": [{"image": base64.b64encode(b"GIF89a not really").decode()}]}, 400, "decode"),
    ("oversize image", {"instances": [{"image": base64.b64encode(b"\xff" * 300_000).decode()}]}, 413, "bytes"),
    ("text over limit", {"instances": [{"text": "word " * 1000}]}, 413, "characters"),
    ("unknown space", {"instances": [{"text": "x", "space": "audio"}]}, 400, "space must be one of"),
    ("query among unknown candidates", {"instances": [{"text": "x", "candidates": ["nope"]}]}, 404, "unknown item"),
    ("blend out of range", {"instances": [{"like": "item-000001", "blend": 2}]}, 400, "between 0 and 1"),
    ("like an unknown item", {"instances": [{"like": "no-such-item"}]}, 404, "unknown item ids in like"),
    ("too many instances", {"instances": [{"k": 1}] * 100}, 413, "at most"),
]


@pytest.mark.parametrize("body,status,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_with_a_message(stack, body, status, words):
    r = _post(f"{stack['servers'].transformer_url}/v1/models/{MODEL}:predict", body)
    assert r.status_code == status, r.text
    assert words.lower() in r.json()["error"].lower()


def test_v2_request_to_the_transformer_is_a_400_naming_v1(stack):
    body = {"inputs": [{"name": "k", "shape": [1], "datatype": "INT32", "data": [3]}]}
    r = _post(f"{stack['servers'].transformer_url}/v2/models/{MODEL}/infer", body)
    assert r.status_code == 400, r.text
    assert "the transformer takes v1 JSON" in r.json()["error"]


def test_v2_request_to_the_predictor_with_a_bad_tensor_is_a_400(stack):
    url = f"{_predictor(stack)}/v2/models/{MODEL}/infer"
    wrong_shape = {"inputs": [{"name": "k", "shape": [3], "datatype": "INT32", "data": [1, 2]}]}
    unknown = {
        "inputs": [
            {"name": "k", "shape": [1], "datatype": "INT32", "data": [1]},
            {"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["red"]},
        ]
    }
    for body, words in ((wrong_shape, "shape"), (unknown, "colour")):
        r = _post(url, body)
        assert r.status_code == 400 and words in r.json()["error"], r.text


def _stuck_grpc_server(host: str, port: int):
    """A gRPC server on ``port`` whose inference method never answers (stopped with ``.stop(0)``)."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    def never(request, context):
        time.sleep(60)

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(never)}
    )
    server = grpc.server(ThreadPoolExecutor(4), handlers=[handler])
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    return server


def test_predictor_down_is_a_503_within_the_timeout_and_recovers(stack):
    import socket

    _predictor(stack)
    servers, settings, env = stack["servers"], stack["settings"], stack["env"]
    url = f"{servers.transformer_url}/v1/models/{MODEL}:predict"
    timeout = settings.serving.predictor_timeout_s
    servers.predictor.terminate()
    servers.predictor.wait(30)
    # refused at once: nothing listens on the predictor's port
    t = time.monotonic()
    r = _post(url, {"instances": [{"k": 2}]})
    assert r.status_code == 503 and "unavailable" in r.json()["error"], r.text
    assert time.monotonic() - t < timeout + 2
    # a predictor that accepts the connection and never answers: the transformer gives up at its timeout
    s = settings.serving
    if s.protocol == "grpc-v2":
        # gRPC: a server that takes the call and never answers it (a bare socket is never a channel: gRPC
        # fails fast, a 503 at once, until the handshake completes); the transformer's channel reconnects
        # after its backoff, answering 503s at once meanwhile
        stuck = _stuck_grpc_server(s.host, s.predictor_grpc_port)
        try:
            for _ in range(30):
                t = time.monotonic()
                r = _post(url, {"instances": [{"k": 2}]})
                elapsed = time.monotonic() - t
                assert r.status_code == 503 and elapsed < timeout + 2, (r.text, elapsed)
                if "in time" in r.json()["error"]:
                    break
                time.sleep(0.5)
        finally:
            stuck.stop(0)
    else:
        hung = socket.socket()
        hung.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        hung.bind((s.host, s.predictor_port))
        hung.listen(64)  # the kernel completes the handshake; nobody reads or writes
        try:
            t = time.monotonic()
            r = _post(url, {"instances": [{"k": 2}]})
            elapsed = time.monotonic() - t
        finally:
            hung.close()
    assert r.status_code == 503 and "unavailable" in r.json()["error"] and "in time" in r.json()["error"], r.text
    assert timeout - 0.5 <= elapsed < timeout + 2, elapsed
    grpc_port = s.predictor_grpc_port if s.protocol == "grpc-v2" else None
    servers.predictor = local.start_process(
        local.predictor_command(settings, s.predictor_port, grpc_port=grpc_port), stack["logs"] / "predictor.log", env
    )
    local.wait_ready(servers.predictor_url, MODEL, servers.predictor, 180)
    assert _recommend(stack, {"k": 2})[0]["fallback"]  # the transformer recovered by itself


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_two_workers_share_the_port_and_the_load_and_stop_with_the_server(stack, free_port):
    """serving.workers: 2 gives two processes on one port, both scoring; stopping the server stops both."""
    if stack["servers"].layout != "collocated":
        pytest.skip("the workers are tested on the collocated server")
    port = free_port()
    env = {**stack["env"], "FUSIONREC__SERVING__WORKERS": "2", "FUSIONREC__SERVING__TRANSFORMER_PORT": str(port)}
    servers = local.serve(load_settings(env=env), log_dir=stack["logs"] / "workers", env=env, layout="collocated")
    try:
        parent = servers.transformer.pid
        children = [int(c) for c in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
        assert len(children) == 1
        users = stack["ds"].users["user_id"].astype(str).tolist()
        url = f"{servers.transformer_url}/v1/models/{MODEL}:predict"
        deadline = time.monotonic() + 120  # the copy loads its own model after the first is ready
        while True:
            before = {p: _cpu_ticks(p) for p in (parent, *children)}
            for u in users[:60]:
                r = _post(url, {"instances": [{"user_id": u, "k": 5}]})  # a new connection each
                assert r.status_code == 200, r.text
            grew = {p: _cpu_ticks(p) - t for p, t in before.items()}
            if all(g >= 3 for g in grew.values()) or time.monotonic() > deadline:
                break
        assert all(g >= 3 for g in grew.values()), grew  # both processes took requests
    finally:
        servers.stop()
    for child in children:
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)


def test_smoke_check_passes_on_the_running_service_and_fails_otherwise(stack, free_port):
    from fusionrec.platform.deploy import smoke_check

    url = stack["servers"].transformer_url
    assert smoke_check(url, MODEL, attempts=1, headers=AUTH)()
    assert not smoke_check(url, MODEL, attempts=1)()  # no API key: a 401
    assert not smoke_check(url, "no-such-model", attempts=1, headers=AUTH)()  # a 404
    assert not smoke_check(f"http://127.0.0.1:{free_port()}", MODEL, timeout_s=2, attempts=1)()  # nobody there


def test_recommend_cli_prints_the_top_items(stack):
    from typer.testing import CliRunner

    from fusionrec.cli import app

    user = str(stack["ds"].users.iloc[3]["user_id"])
    res = CliRunner().invoke(
        app,
        ["recommend", "--user", user, "--k", "3", "--url", stack["servers"].transformer_url, "--json"],
        env=stack["env"],
    )
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.output)["predictions"][0]["items"]) == 3
    assert np.isfinite([i["score"] for i in json.loads(res.output)["predictions"][0]["items"]]).all()


def test_serve_detach_on_redis_with_a_v1_hop_and_every_recommend_kind(stack, tmp_path, free_port, redis_server):
    """The production profile as a user starts it from the command line: Feast on a real Redis, in the
    stack's layout (two hops: the transformer speaking v1 to the predictor); then `recommend` for a user,
    a history, a text and an image."""
    import os
    import shutil
    import subprocess
    import sys

    from fusionrec.config import FeatureSettings

    features = tmp_path / "features"
    shutil.copytree(stack["env"]["FUSIONREC__FEATURES__DATA_DIR"], features)
    redis = FeatureSettings(online_store="redis", redis_connection=redis_server, data_dir=str(features))
    store = fs.feature_store(redis, features)
    fs.apply(store, features)
    fs.materialize(store)
    env = {
        **os.environ,
        **stack["env"],
        "FUSIONREC__PATHS__ARTIFACTS": str(tmp_path),
        "FUSIONREC__FEATURES__DATA_DIR": str(features),
        "FUSIONREC__FEATURES__ONLINE_STORE": "redis",
        "FUSIONREC__FEATURES__REDIS_CONNECTION": redis_server,
        "FUSIONREC__SERVING__PREDICTOR_PORT": str(free_port()),
        "FUSIONREC__SERVING__PREDICTOR_GRPC_PORT": str(free_port()),
        "FUSIONREC__SERVING__TRANSFORMER_PORT": str(free_port()),
    }
    cli = [sys.executable, "-m", "fusionrec.cli"]

    def run(*args):
        r = subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (args, r.stderr[-2000:])
        return r.stdout

    run("serve", "--detach", "--layout", stack["servers"].layout, "--protocol", "v1")
    try:
        assert (tmp_path / "serving" / "servers.json").exists()
        user = str(stack["ds"].users.iloc[3]["user_id"])
        out = run("recommend", "--user", user, "--k", "4")
        assert f"top 4 for user {user}" in out and out.count(" bias ") == 4
        top = json.loads(run("recommend", "--user", user, "--k", "4", "--json"))["predictions"][0]["items"][0][
            "item_id"
        ]
        # an interaction pushed to Redis only: the transformer reads Redis, so the item is now seen
        fs.push_interactions(
            store, pd.DataFrame({"user_id": [user], "item_id": [top], "timestamp": [int(time.time())]}), 20
        )
        again = json.loads(run("recommend", "--user", user, "--k", "4", "--json"))["predictions"][0]
        assert top not in [i["item_id"] for i in again["items"]] and len(again["items"]) == 4
        items = stack["ds"].items
        hist = run("recommend", "--history", ",".join(items["item_id"].astype(str).iloc[:3]), "--k", "3")
        assert "top 3 for a new user's history" in hist and "cold user" in hist and hist.count(" bias ") == 3
        assert not {str(i) for i in items["item_id"].iloc[:3]} & {line.split()[1] for line in hist.splitlines()[1:]}
        text = run("recommend", "--text", items["description"].iloc[0], "--k", "3")
        assert "top 3 for items like a text" in text and text.count("[text; ") == 3
        image = run("recommend", "--image", items.dropna(subset=["image"])["image"].iloc[0], "--k", "2")
        assert "top 2 for items like an image" in image and image.count("[image; ") == 2
        like = items["item_id"].astype(str).iloc[4]
        more = run("recommend", "--like", like, "--user", user, "--blend", "0.5", "--k", "3")
        assert (
            f"top 3 for items like item {like}, re-ranked for user {user}" in more and like not in more.split(":", 1)[1]
        )
        bad = subprocess.run(
            [*cli, "recommend", "--image", str(tmp_path / "none.jpg")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 2 and "no such file" in bad.stderr
    finally:
        down = subprocess.run([*cli, "serve", "--stop"], env=env, capture_output=True, text=True, timeout=60)
    assert f"stopped {len(_urls(stack))} server processes" in down.stdout
    if stack["servers"].predictor is not None:  # two hops: the transformer spoke v1 to the predictor
        log = (tmp_path / "serving" / "predictor.log").read_text()
        hops = [line for line in log.splitlines() if '"POST ' in line]
        assert hops and all(f"POST /v1/models/{MODEL}" in line and "predict" in line for line in hops), hops[:3]
    else:  # collocated: one server, and no predictor started
        assert not (tmp_path / "serving" / "predictor.log").exists()
    port = env["FUSIONREC__SERVING__TRANSFORMER_PORT"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            time.sleep(0.5)
        except httpx.TransportError:
            break
    else:
        pytest.fail("the transformer still answers after 'fusionrec serve --stop'")


def _own_answer(stack, body: dict) -> dict:
    """The answer from the model's own histories alone: the predictor's, or (collocated) the recommender's
    over the served artifact in this process."""
    if stack["servers"].predictor_url is not None:
        return _post(f"{stack['servers'].predictor_url}/v1/models/{MODEL}:predict", body).json()["predictions"][0]
    from fusionrec.api.schemas import parse_v1
    from fusionrec.artifact import load_artifact
    from fusionrec.recommender import Recommender

    result = Recommender(load_artifact(stack["model_dir"]), {}).run(parse_v1(body, stack["settings"].serving))[0]
    return {"items": [{"item_id": i} for i in result.item_ids]}


def _fallbacks(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        s.labels["reason"]: s.value
        for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
        for s in f.samples
        if s.name == "fusionrec_feature_store_fallbacks_total"
    }


def test_serving_survives_its_feature_store(stack, tmp_path, free_port):
    """A transformer on a real Redis that is stopped and started again: requests for known users are
    answered from the model's own histories within the usual latency, flagged and counted, with no 5xx
    and no internal error text; when Redis is back, fresh histories are used again without a restart."""
    import shutil

    from fusionrec.config import FeatureSettings
    from tests.conftest import RedisProcess

    redis = RedisProcess(tmp_path / "redis", free_port())
    (tmp_path / "redis").mkdir()
    redis.start()
    features = tmp_path / "features"
    shutil.copytree(stack["env"]["FUSIONREC__FEATURES__DATA_DIR"], features)
    store = fs.feature_store(
        FeatureSettings(online_store="redis", redis_connection=redis.address, data_dir=str(features)), features
    )
    fs.apply(store, features)
    fs.materialize(store)
    port = free_port()
    env = {
        **stack["env"],
        "FUSIONREC__FEATURES__DATA_DIR": str(features),
        "FUSIONREC__FEATURES__ONLINE_STORE": "redis",
        "FUSIONREC__FEATURES__REDIS_CONNECTION": redis.address,
        "FUSIONREC__SERVING__FEATURE_TIMEOUT_S": "0.5",
        "FUSIONREC__SERVING__BREAKER_FAILURES": "2",
        "FUSIONREC__SERVING__BREAKER_RESET_S": "2",
    }
    settings = load_settings(env=env)
    log = tmp_path / "transformer.log"
    if stack["servers"].predictor is None:  # collocated: the service itself, on the Redis store
        proc = local.start_process(local.service_command(settings, port), log, env)
    else:
        proc = local.start_process(local.transformer_command(settings, port, settings.serving.predictor_port), log, env)
    url = f"http://127.0.0.1:{port}"
    try:
        local.wait_ready(url, MODEL, proc, 120, log)
        user = str(stack["ds"].users.iloc[3]["user_id"])
        body = {"instances": [{"user_id": user, "k": 4}]}
        up = _post(f"{url}/v1/models/{MODEL}:predict", body)
        assert up.status_code == 200 and up.json()["predictions"][0]["online_features"] == "used", up.text
        import signal

        before = _fallbacks(url)
        redis.proc.send_signal(signal.SIGSTOP)  # hung: connections are accepted, nothing answers
        try:
            t = time.monotonic()
            slow = _post(f"{url}/v1/models/{MODEL}:predict", body)
            elapsed = time.monotonic() - t
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        assert slow.status_code == 200 and slow.json()["predictions"][0]["online_features"] == "unavailable", slow.text
        assert elapsed < 2 and _fallbacks(url).get("timeout", 0) - before.get("timeout", 0) == 1, elapsed
        assert _post(f"{url}/v1/models/{MODEL}:predict", body).json()["predictions"][0]["online_features"] == "used"
        before = _fallbacks(url)
        redis.stop()
        own = _own_answer(stack, body)
        for _ in range(5):
            t = time.monotonic()
            r = _post(f"{url}/v1/models/{MODEL}:predict", body)
            elapsed = time.monotonic() - t
            assert r.status_code == 200, r.text
            pred = r.json()["predictions"][0]
            assert pred["online_features"] == "unavailable" and elapsed < 2, (pred["online_features"], elapsed)
            assert [i["item_id"] for i in pred["items"]] == [
                i["item_id"] for i in own["items"]
            ]  # the model's histories
            assert "127.0.0.1" not in r.text and "Error" not in r.text
        after = _fallbacks(url)
        assert sum(after.values()) - sum(before.values()) == 5
        assert after.get("circuit_open", 0) - before.get("circuit_open", 0) >= 2  # the breaker stopped asking
        redis.start()  # back, empty: the online store is filled again and a new interaction pushed
        fs.materialize(store)
        top = up.json()["predictions"][0]["items"][0]["item_id"]
        fs.push_interactions(
            store, pd.DataFrame({"user_id": [user], "item_id": [top], "timestamp": [int(time.time())]}), 20
        )
        deadline = time.monotonic() + 15
        while True:
            pred = _post(f"{url}/v1/models/{MODEL}:predict", body).json()["predictions"][0]
            if pred["online_features"] == "used" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert pred["online_features"] == "used"
        assert top not in [i["item_id"] for i in pred["items"]]  # the pushed interaction counts again
    finally:
        proc.terminate()
        proc.wait(30)
        redis.stop()


# -- a hostile caller ----------------------------------------------------------------------------------


def test_the_model_repository_routes_and_docs_are_closed_on_both_servers(stack):
    """One anonymous POST to /v2/repository/.../unload used to take serving down while health said 200."""
    for url in _urls(stack):
        for method, path in [
            ("POST", f"/v2/repository/models/{MODEL}/unload"),
            ("POST", f"/v2/repository/models/{MODEL}/load"),
            ("POST", f"/v1/models/{MODEL}:explain"),
            ("GET", "/docs"),
            ("GET", "/openapi.json"),
            ("GET", "/v2/repository/index"),
            ("DELETE", f"/v1/models/{MODEL}"),
        ]:
            r = httpx.request(method, url + path, headers=AUTH, timeout=10)
            assert r.status_code == 404, (url, path, r.status_code, r.text)
        assert httpx.get(f"{url}/v2/health/ready", timeout=10).status_code == 200
    assert _recommend(stack, {"k": 2})[0]["items"]  # still serving


def _listening(port: int) -> set[str]:
    """The IPv4 addresses a local TCP port listens on, from the kernel's socket table (/proc/net/tcp)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            out.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return out


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
def test_servers_listen_on_loopback_only(stack):
    for url in _urls(stack):
        assert _listening(int(url.rsplit(":", 1)[1])) == {"127.0.0.1"}, url


def test_callers_need_a_key_and_end_users_only_get_their_own_recommendations(stack):
    url = f"{stack['servers'].transformer_url}/v1/models/{MODEL}:predict"
    body = {"instances": [{"user_id": "user-0000003", "k": 3}]}
    assert httpx.post(url, json=body, timeout=30).status_code == 401
    assert httpx.post(url, json=body, headers={"authorization": "Bearer wrong"}, timeout=30).status_code == 401
    mine = httpx.post(url, json=body, headers={"x-api-key": SHOPPER}, timeout=30)
    assert mine.status_code == 200 and not mine.json()["predictions"][0]["fallback"]
    theirs = httpx.post(
        url, json={"instances": [{"user_id": "user-0000004", "k": 3}]}, headers={"x-api-key": SHOPPER}, timeout=30
    )
    assert theirs.status_code == 403 and "own user" in theirs.json()["error"]


def test_the_seen_items_oracle_is_closed(stack):
    """candidates + exclude_seen used to answer, item by item, whether another user had seen it."""
    user_idx = 3
    user = str(stack["ds"].users.set_index("user_idx").loc[user_idx, "user_id"])
    seen = sorted(_seen(stack, user_idx))[:3]
    unseen = sorted(set(_index(stack).index) - _seen(stack, user_idx))[:3]
    # a service (no history grant): the pair is refused ...
    r = _post(
        f"{stack['servers'].transformer_url}/v1/models/{MODEL}:predict",
        {"instances": [{"user_id": user, "candidates": seen + unseen, "k": 6, "exclude_seen": True}]},
    )
    assert r.status_code == 403 and "history" in r.json()["error"], r.text
    # ... and a candidate list is scored as given by default: seen and unseen items alike come back
    got = _recommend(stack, {"user_id": user, "candidates": seen + unseen, "k": 6})[0]["items"]
    assert sorted(i["item_id"] for i in got) == sorted(seen + unseen)
    # the user themselves may ask
    mine = httpx.post(
        f"{stack['servers'].transformer_url}/v1/models/{MODEL}:predict",
        headers={"x-api-key": SHOPPER},
        json={"instances": [{"user_id": user, "candidates": seen + unseen, "k": 6, "exclude_seen": True}]},
        timeout=30,
    )
    assert mine.status_code == 200 and {i["item_id"] for i in mine.json()["predictions"][0]["items"]} == set(unseen)


def test_an_end_user_is_not_told_whether_an_id_exists(stack):
    """A 404 'unknown user' would tell an untrusted caller which ids exist; a service still gets it."""
    url = f"{stack['servers'].transformer_url}/v1/models/{MODEL}:predict"
    body = {"instances": [{"user_id": "no-such-user", "k": 3}]}
    stranger = httpx.post(url, json=body, headers={"x-api-key": STRANGER}, timeout=30)
    assert stranger.status_code == 200 and stranger.json()["predictions"][0]["fallback"]
    assert "no-such-user" not in stranger.text
    assert _post(url, body).status_code == 404  # the service key


def test_a_client_cannot_plant_the_transformers_request_state(stack):
    """The log's stash and the lookup's outcome used to travel in headers a client could set."""
    r = _post(
        f"{stack['servers'].transformer_url}/v1/models/{MODEL}:predict",
        {"instances": [{"k": 2}]},
        headers={"x-fusionrec-log": "{", "x-fusionrec-online-features": "used"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["online_features"] == "not needed"


@pytest.mark.parametrize("server", ["predictor_url", "transformer_url"])
def test_a_body_over_the_limit_is_a_413_before_it_is_read(stack, server):
    base = _predictor(stack) if server == "predictor_url" else stack["servers"].transformer_url
    url = f"{base}/v1/models/{MODEL}:predict"
    limit = stack["settings"].serving.max_body_bytes
    big = b'{"instances": [{"user_id": "' + b"x" * (limit + 10) + b'"}]}'
    r = _post(url, big)
    assert r.status_code == 413 and "over" in r.json()["error"], r.text

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"instances": [{"user_id": "'
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536
        yield b'"}]}'

    r = httpx.post(url, content=chunks(), headers={"content-type": "application/json", **AUTH}, timeout=30)
    assert r.status_code == 413, r.text


def _png(width: int, height: int) -> str:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (width, height)).save(buf, "PNG", optimize=True)  # a few KB that decode to width x height
    return base64.b64encode(buf.getvalue()).decode()


HOSTILE = [
    ("decompression bomb", {"instances": [{"image": _png(6000, 6000)}]}, 413, "pixels"),
    ("pixels over the request budget", {"instances": [{"image": _png(3000, 3000)}] * 4}, 413, "per request"),
    (
        "format off the allow-list",
        {
            "instances": [
                {
                    "image": base64.b64encode(
                        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF"
                    ).decode()
                }
            ]
        },
        400,
        "does not decode",
    ),
    ("long user id", {"instances": [{"user_id": "u" * 10_000}]}, 413, "user_id"),
    ("long id in a history", {"instances": [{"history": ["i" * 10_000]}]}, 413, "history"),
    ("huge integer id", {"instances": [{"like": 10**300}]}, 400, "like"),
    ("deep JSON", {"instances": [{"history": [[[[[[["x"]]]]]]]}]}, 400, "history"),
]


@pytest.mark.parametrize("body,status,words", [b[1:] for b in HOSTILE], ids=[b[0] for b in HOSTILE])
def test_hostile_input_is_a_4xx_with_a_fixed_message(stack, body, status, words):
    for url in _urls(stack):
        r = _post(f"{url}/v1/models/{MODEL}:predict", body)
        assert r.status_code == status, (url, r.text)
        assert words.lower() in r.json()["error"].lower() and not re.search("0x[0-9a-f]{6,}", r.text)


V2_BAD = [
    ("numbers as BYTES", [{"name": "k", "shape": [1], "datatype": "BYTES", "data": ["3"]}], "datatype"),
    (
        "blend as BYTES",
        [
            {"name": "k", "shape": [1], "datatype": "INT32", "data": [3]},
            {"name": "blend", "shape": [1], "datatype": "BYTES", "data": ["x"]},
        ],
        "datatype",
    ),
    ("shape that does not fit", [{"name": "k", "shape": [3], "datatype": "INT32", "data": [3]}], "k"),
    ("unknown datatype", [{"name": "k", "shape": [1], "datatype": "COMPLEX", "data": [3]}], "datatype"),
]


@pytest.mark.parametrize("inputs,words", [b[1:] for b in V2_BAD], ids=[b[0] for b in V2_BAD])
def test_malformed_v2_tensors_are_a_400(stack, inputs, words):
    r = _post(f"{_predictor(stack)}/v2/models/{MODEL}/infer", {"inputs": inputs})
    assert r.status_code == 400, r.text
    assert words in r.json()["error"] and not re.search("0x[0-9a-f]{6,}", r.text) and "127.0.0.1" not in r.text


def test_invalid_utf8_in_a_v2_binary_tensor_is_a_400(stack):
    """v2's binary extension carries raw bytes: a BYTES element that is not UTF-8 used to be a 500."""
    import struct

    raw = struct.pack("<I", 2) + b"\xff\xfe"
    header = json.dumps(
        {
            "inputs": [
                {"name": "k", "shape": [1], "datatype": "INT32", "data": [3]},
                {"name": "user_id", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}},
            ]
        }
    ).encode()
    r = httpx.post(
        f"{_predictor(stack)}/v2/models/{MODEL}/infer",
        content=header + raw,
        timeout=30,
        headers={"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))},
    )
    assert r.status_code == 400 and "UTF-8" in r.json()["error"], r.text


def fuzz(
    spec: dict, base_url: str, headers: dict | None = None, examples: int = 40, path_parameters: dict | None = None
) -> tuple[int, list[str]]:
    """Every operation of an OpenAPI document, fuzzed by schemathesis with valid and invalid inputs
    (``examples`` of each per operation) against a running server; returns the cases sent and every answer
    that was a 5xx or carried a heap address or a type name."""
    import hypothesis
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_dict(spec)
    sent, bad = [0], []
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = op.as_strategy(generation_mode=mode, path_parameters=path_parameters)

            @hypothesis.settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(hypothesis.HealthCheck),
                phases=[hypothesis.Phase.generate],
            )
            @hypothesis.given(case=strategy)
            def one(case):
                sent[0] += 1
                try:
                    r = case.call(base_url=base_url, headers={**(headers or {}), **(case.headers or {})}, timeout=30)
                except Exception as e:  # noqa: BLE001 - a request the client library cannot even send
                    if "Invalid" in type(e).__name__ or "header" in str(e).lower():
                        return
                    raise
                text = r.text if isinstance(r.text, str) else ""
                if r.status_code >= 500 and r.status_code != 503 or re.search(r"0x[0-9a-f]{8,}|Traceback", text):
                    bad.append(f"{case.method} {case.formatted_path} -> {r.status_code}: {text[:200]}")

            try:
                one()
            except hypothesis.errors.Unsatisfiable:  # nothing to make invalid (a GET without parameters)
                pass
    return sent[0], bad


def test_no_input_from_the_openapi_fuzzer_answers_5xx_on_either_server(stack):
    """schemathesis over both servers' routes (valid and invalid inputs from the schema the servers take):
    every answer is a 2xx/4xx (503 only for a load that exceeds the admission limit) with a fixed message."""
    from fusionrec.api.openapi import serving_openapi

    total, bad = 0, []
    for url in _urls(stack):
        n, found = fuzz(serving_openapi(MODEL), url, AUTH, examples=75, path_parameters={"model_name": MODEL})
        total, bad = total + n, bad + found
    print(f"schemathesis: {total} cases over the layout's servers, {len(bad)} answered 5xx or leaked")
    assert total > 200 * len(_urls(stack)) and bad == [], (total, bad[:10])
    assert _recommend(stack, {"k": 1})[0]["items"]  # and both still serve
