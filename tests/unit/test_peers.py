"""The peers: the content nearest-neighbour against a hand computation, and the validation search that
tunes the peers with settings."""

import numpy as np
import pandas as pd
import pytest

from fusionrec.data.splits import Split
from fusionrec.encoders.pipeline import ModalityEmbeddings
from fusionrec.train import peers
from fusionrec.train.models import GRIDS, MODELS, PEERS, Context

pytestmark = pytest.mark.unit


def _split(train_pairs, n_users, n_items):
    train = pd.DataFrame(train_pairs, columns=["user_idx", "item_idx"]).assign(timestamp=0)
    empty = train.iloc[:0]
    return Split("random", train, empty, empty, n_users, n_items)


def _modality(name, values, mask=None):
    values = np.asarray(values, dtype=np.float32)
    mask = np.ones(len(values), dtype=bool) if mask is None else np.asarray(mask)
    return ModalityEmbeddings(name, values, mask, [None] * len(values), name)


def test_content_knn_ranks_by_cosine_to_the_mean_of_the_users_items():
    # text: items 0 and 1 point along x, item 2 along y, item 3 halfway; image: item 3 has none (masked)
    text = _modality("text", [[2, 0], [1, 0], [0, 3], [1, 1]])
    image = _modality("image", [[1, 0], [0, 1], [1, 0], [0, 0]], mask=[True, True, True, False])
    split = _split([(0, 0), (1, 2)], n_users=2, n_items=4)
    got = peers.content_knn(split, {"text": text, "image": image})(np.array([0, 1]))

    def unit(v):
        return v / np.linalg.norm(v)

    # by hand: each modality unit length (a masked one all zeros), concatenated, unit length again
    items = np.array([unit([1, 0, 1, 0]), unit([1, 0, 0, 1]), unit([0, 1, 1, 0]), unit([0.7071, 0.7071, 0, 0])])
    for u, seen in ((0, 0), (1, 2)):
        want = items @ unit(items[seen])
        np.testing.assert_allclose(got[u], want, atol=1e-4)
    assert got[0].argmax() == 0 and got[1].argmax() == 2


def test_a_cold_item_gets_a_content_score():
    text = _modality("text", [[1, 0], [0.9, 0.1], [0, 1]])
    split = _split([(0, 0)], n_users=1, n_items=3)  # items 1 and 2 never trained on
    scores = peers.content_knn(split, {"text": text})(np.array([0]))[0]
    assert scores[1] > scores[2] > -1  # the cold item like the user's item ranks first among the cold


def test_tuned_keeps_the_setting_best_on_validation_and_says_which():
    fitted = []

    def fit(lr, reg):
        fitted.append((lr, reg))
        return lambda users: np.full((len(users), 3), lr * 10 - reg)

    # validation: the score function's first value, so lr=0.5, reg=0 wins
    score, chosen = peers.tuned(fit, {"lr": (0.1, 0.5, 0.2), "reg": (0, 1)}, lambda s: float(s(np.array([0]))[0, 0]))
    assert len(fitted) == 6 and chosen["lr"] == 0.5 and chosen["reg"] == 0
    assert chosen["tried"] == 6 and chosen["valid_ndcg@20"] == pytest.approx(5.0)
    assert score(np.array([0]))[0, 0] == pytest.approx(5.0)


def test_every_gridded_peer_is_a_peer_and_the_registry_names_each_model_once():
    assert set(GRIDS) <= set(PEERS)
    assert "content_knn" in PEERS and set(PEERS) <= set(MODELS)


def test_a_peer_reports_the_setting_its_search_chose(synth_validated):
    from fusionrec.data.splits import make_split
    from fusionrec.train.loop import TrainConfig

    split = make_split(synth_validated, "random", seed=0)
    ctx = Context(synth_validated, {}, 8, TrainConfig(epochs=2, seed=0))
    model = MODELS["bpr_mf"](ctx).fit(split)
    chosen = model.extra()["chosen"]
    assert chosen["tried"] == len(GRIDS["bpr_mf"]["lr"]) * len(GRIDS["bpr_mf"]["reg"])
    assert chosen["lr"] in GRIDS["bpr_mf"]["lr"] and 0.0 <= chosen["valid_ndcg@20"] <= 1.0
    assert model.score(np.array([0, 1])).shape == (2, synth_validated.n_items)


def test_ease_reports_the_ridge_validation_chose_and_scores_with_it(synth_validated):
    from fusionrec.data.splits import make_split
    from fusionrec.itemitem import LAMBDAS

    split = make_split(synth_validated, "random", seed=0)
    seen = []

    def valid(score):  # prefers the second ridge of the grid whatever the scores
        seen.append(score.chosen["lambda"])
        return 1.0 if score.chosen["lambda"] == LAMBDAS[1] else 0.0

    score = peers.ease(split, valid_fn=valid)
    assert seen == list(LAMBDAS) and score.chosen == {"lambda": LAMBDAS[1]}
    want = peers.ease(split, lam=LAMBDAS[1])(np.array([0, 1]))
    np.testing.assert_allclose(score(np.array([0, 1])), want, rtol=1e-6)


def test_a_choice_at_the_top_of_its_grid_or_a_nonzero_bottom_is_an_edge():
    from fusionrec.train.models import at_edge, fusion_chosen, fusion_grids

    grids = fusion_grids()
    top, low = max(grids["ii_weight"]), min(grids["ii_lambda"])
    assert at_edge({"ii_weight": top, "ii_lambda": 500.0}, grids) == [f"ii_weight={top:g}"]
    assert at_edge({"ii_weight": 0.0, "ii_lambda": low}, grids) == [f"ii_lambda={low:g}"]  # weight 0 is "off"
    assert at_edge({"lr": 0.01}, GRIDS["cornac_bpr"]) == [] and at_edge({"lr": 0.05}, GRIDS["cornac_bpr"])
    # the item-item weight re-chosen beside the content term wins; a ridge with weight 0 is not reported
    chosen = fusion_chosen(
        {"lambda": 250.0, "weight": 4.0},
        {"weight": 2.0, "neighbour_weight": 0.0, "neighbour_power": 4.0, "item_item_weight": 0.0},
    )
    assert chosen == {"ii_weight": 0.0, "cc_weight": 2.0, "cn_weight": 0.0}
    # the taste term's clusters are reported with a non-zero weight, and its smallest count is an edge
    taste = {"weight": 0.0, "neighbour_weight": 0.0, "taste_clusters": 32.0, "taste_weight": 0.5}
    assert fusion_chosen({}, taste) == {"cc_weight": 0.0, "cn_weight": 0.0, "tc_weight": 0.5, "tc_clusters": 32.0}
    off = {**taste, "taste_weight": 0.0}
    assert fusion_chosen({}, off) == {"cc_weight": 0.0, "cn_weight": 0.0, "tc_weight": 0.0}
    assert at_edge({"tc_clusters": min(grids["tc_clusters"])}, grids) and not at_edge({"tc_clusters": 32.0}, grids)
