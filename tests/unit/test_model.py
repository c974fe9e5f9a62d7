"""The fusion model's behaviour: a missing modality, a cold item, determinism, no leakage, the metrics."""

import numpy as np
import pandas as pd
import pytest
import torch

from fusionrec.data.splits import make_split
from fusionrec.evaluation import auc_logloss, evaluate_ranking
from fusionrec.model import FusionConfig, FusionRecModel
from fusionrec.train.loop import TrainConfig, evaluate_model, train
from tests.reference import gate_weights, score_terms, state_dict_numpy

pytestmark = pytest.mark.unit


class Emb:
    def __init__(self, values, mask):
        self.values, self.mask = values, mask


def fake_embeddings(n_items, seed=0):
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n_items, 12)).astype(np.float32)
    image = rng.normal(size=(n_items, 8)).astype(np.float32)
    tmask = np.ones(n_items, dtype=bool)
    tmask[::5] = False
    return {"text": Emb(text, tmask), "image": Emb(image, np.ones(n_items, dtype=bool))}


def test_splits_are_disjoint_and_cover_every_positive(synth_validated):
    for protocol in ("random", "temporal", "cold_item"):
        s = make_split(synth_validated, protocol, seed=1)
        parts = [set(zip(p["user_idx"], p["item_idx"])) for p in (s.train, s.valid, s.test)]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        total = synth_validated.interactions.drop_duplicates(["user_idx", "item_idx"])
        assert sum(map(len, parts)) == len(total)
    cold = make_split(synth_validated, "cold_item", seed=1)
    assert not set(cold.train["item_idx"]) & set(cold.cold_items)  # no leakage of cold items into training
    assert set(cold.test["item_idx"]) <= set(cold.cold_items)
    temporal = make_split(synth_validated, "temporal", seed=1)
    last_train = temporal.train.groupby("user_idx")["timestamp"].max()
    first_test = temporal.test.groupby("user_idx")["timestamp"].min()
    assert (last_train.loc[first_test.index] <= first_test).all()


def test_given_split_is_exactly_the_datasets_own(tmp_path):
    from fusionrec.config import ValidationSettings
    from fusionrec.data.contract import load_contract
    from fusionrec.data.dataset import normalise
    from fusionrec.data.raw import read_raw
    from fusionrec.errors import ConfigError
    from fusionrec.validation import validate
    from tests.unit.test_contract_and_readers import write_contract, write_mmrec

    contract, inter = write_mmrec(tmp_path, n_users=6, n_items=7)
    ds = normalise(
        validate(
            read_raw(load_contract(write_contract(tmp_path, contract))), ValidationSettings(), progress=False
        ).clean
    )
    s = make_split(ds, "given")
    users = ds.users.set_index("user_idx")["user_id"].astype(str)
    items = ds.items.set_index("item_idx")["item_id"].astype(str)
    for k, part in enumerate((s.train, s.valid, s.test)):  # x_label 0, 1, 2 in the .inter file, row for row
        got = sorted(zip(users[part["user_idx"]], items[part["item_idx"]]))
        want = sorted(
            zip(
                inter.loc[inter["x_label"] == k, "userID"].astype(str),
                inter.loc[inter["x_label"] == k, "itemID"].astype(str),
            )
        )
        assert got == want and want, k
    with pytest.raises(ConfigError, match="carries no split"):
        make_split(ds.__class__(**{**ds.__dict__, "interactions": ds.interactions.drop(columns="split")}), "given")


def test_split_is_deterministic_per_seed(synth_validated):
    a, b = make_split(synth_validated, "random", seed=3), make_split(synth_validated, "random", seed=3)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert not make_split(synth_validated, "random", seed=4).test.equals(a.test)


def test_missing_modality_is_masked_not_zero_filled():
    torch.manual_seed(0)  # the same weights whatever ran before
    cfg = FusionConfig(n_users=3, n_items=10, modalities={"text": 12, "image": 8}, dim=16)
    model = FusionRecModel(cfg).eval()
    emb = fake_embeddings(10)
    feats = {m: (torch.from_numpy(e.values), torch.from_numpy(e.mask)) for m, e in emb.items()}
    model.set_item_features(feats, torch.zeros(10, dtype=torch.bool))
    with torch.no_grad():  # away from the default initialisation, so that the gate's weights differ per item
        for p in model.fusion.parameters():
            torch.nn.init.normal_(p, std=0.5)
    out = model.items()
    # each modality's weight, item by item, against the gate computed by hand from the same parameters
    expected = gate_weights(state_dict_numpy(model), model.modality_names)
    np.testing.assert_allclose(out.modality_weights.detach().numpy(), expected, atol=1e-5)
    assert (out.modality_weights[::5, model.modality_names.index("text")] == 0).all()  # text absent -> no weight
    assert out.modality_weights[1:5, 0].std() > 0.01  # the weights are per item, not one constant split
    # garbage in a masked slot changes nothing
    feats["text"][0][0] = 1e6
    model.set_item_features(feats, torch.zeros(10, dtype=torch.bool))
    assert torch.allclose(model.items().vectors[0], out.vectors[0], atol=1e-6)


def test_concat_fusion_weighs_the_present_modalities_equally_and_trains():
    cfg = FusionConfig(n_users=3, n_items=10, modalities={"text": 12, "image": 8}, dim=16, fusion="concat")
    model = FusionRecModel(cfg).eval()
    emb = fake_embeddings(10)
    feats = {m: (torch.from_numpy(e.values), torch.from_numpy(e.mask)) for m, e in emb.items()}
    model.set_item_features(feats, torch.zeros(10, dtype=torch.bool))
    out = model.items()
    text = model.modality_names.index("text")
    expected = np.where(emb["text"].mask, 0.5, 0.0)  # both present: half each; text missing: all image
    np.testing.assert_allclose(out.modality_weights[:, text].numpy(), expected)
    feats["text"][0][0] = 1e6  # item 0 has no text: its slot is zeroed before the mix
    feats["text"][0][1] += 1.0  # item 1 has: its vector moves
    model.set_item_features(feats, torch.zeros(10, dtype=torch.bool))
    assert torch.allclose(model.items().vectors[0], out.vectors[0], atol=1e-6)
    assert not torch.allclose(model.items().vectors[1], out.vectors[1])  # a change in a present slot moves it


def test_cold_item_gets_a_content_vector_without_an_id():
    cfg = FusionConfig(n_users=3, n_items=6, modalities={"text": 12, "image": 8}, dim=16)
    model = FusionRecModel(cfg).eval()
    emb = fake_embeddings(6)
    seen = torch.tensor([True, True, True, False, False, False])
    model.set_item_features({m: (torch.from_numpy(e.values), torch.from_numpy(e.mask)) for m, e in emb.items()}, seen)
    with torch.no_grad():
        model.item_id.weight[3:] = 100.0  # untrained ID rows of cold items must not leak in
    vec = model.items().vectors
    new = model.items(
        content={m: (torch.from_numpy(e.values[3:]), torch.from_numpy(e.mask[3:])) for m, e in emb.items()}
    )
    assert torch.allclose(vec[3:], new.vectors, atol=1e-6)
    assert torch.isfinite(vec).all() and torch.allclose(vec.norm(dim=-1), torch.ones(6), atol=1e-5)


def test_item_bias_of_a_cold_item_comes_from_its_content_only():
    cfg = FusionConfig(n_users=3, n_items=6, modalities={"text": 12, "image": 8}, dim=16, item_bias=True)
    model = FusionRecModel(cfg).eval()
    emb = fake_embeddings(6)
    seen = torch.tensor([True, True, True, False, False, False])
    model.set_item_features({m: (torch.from_numpy(e.values), torch.from_numpy(e.mask)) for m, e in emb.items()}, seen)
    with torch.no_grad():
        torch.nn.init.normal_(model.content_bias.weight)
        model.id_bias.weight[:] = 50.0  # only seen items may carry their ID bias
    out = model.items()
    new = model.items(
        content={m: (torch.from_numpy(e.values[3:]), torch.from_numpy(e.mask[3:])) for m, e in emb.items()}
    )
    assert torch.allclose(out.bias[3:], new.bias, atol=1e-5)  # cold: content bias, the same as for new content
    assert (out.bias[:3] > 40).all() and (out.bias[3:].abs() < 40).all()
    users = torch.nn.functional.normalize(torch.randn(2, 16), dim=-1)
    plain = users @ out.vectors.T / cfg.temperature
    assert torch.allclose(model.logits(users, out.vectors, out.bias), plain + out.bias)
    no_bias = FusionRecModel(cfg.model_copy(update={"item_bias": False}))
    assert no_bias.items().bias is None


def _train(ds, split, emb, seed, **kw):
    mods = {m: emb[m].values.shape[1] for m in ("text", "image")}
    cfg = FusionConfig(n_users=ds.n_users, n_items=ds.n_items, modalities=mods, dim=16, **kw)
    return train(split, emb, cfg, TrainConfig(epochs=2, batch_size=256, seed=seed, device="cpu"), progress=False)


def test_training_is_deterministic_under_a_seed(synth_validated):
    split = make_split(synth_validated, "random", seed=0)
    emb = fake_embeddings(synth_validated.n_items)
    a = _train(synth_validated, split, emb, 7)
    b = _train(synth_validated, split, emb, 7)
    for (k, v), (_, w) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(v, w), k
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def test_fused_model_beats_popularity_on_planted_tastes(synth_validated, synth_embeddings):
    split = make_split(synth_validated, "random", seed=0)
    mods = {m: synth_embeddings[m].dim for m in ("text", "image")}
    cfg = FusionConfig(n_users=synth_validated.n_users, n_items=synth_validated.n_items, modalities=mods, dim=32)
    r = train(split, synth_embeddings, cfg, TrainConfig(epochs=8, batch_size=256, device="cpu"), progress=False)
    ours = evaluate_model(r.model, r.user_history, r.user_history_mask, split)
    pop = np.bincount(split.train["item_idx"], minlength=synth_validated.n_items).astype(float)
    most_pop = evaluate_ranking(
        lambda u: np.tile(pop, (len(u), 1)), split.test, [split.train, split.valid], split.n_users, split.n_items
    )
    assert ours.recall[20] > most_pop.recall[20]
    assert r.samples_per_second > 0 and r.best_epoch >= 1


def test_nan_loss_stops_training_with_a_diagnosis(synth_validated):
    from fusionrec.errors import TrainingDiverged

    split = make_split(synth_validated, "random", seed=0)
    emb = fake_embeddings(synth_validated.n_items)
    emb["image"].values[:] = np.nan  # poisoned inputs on present items
    with pytest.raises(TrainingDiverged, match=r"non-finite input features in \['image'\]"):
        _train(synth_validated, split, emb, 0)


def test_an_exploding_learning_rate_stops_with_a_diagnosis(synth_validated):
    from fusionrec.errors import TrainingDiverged

    split = make_split(synth_validated, "random", seed=0)
    emb = fake_embeddings(synth_validated.n_items)
    mods = {m: emb[m].values.shape[1] for m in ("text", "image")}
    cfg = FusionConfig(n_users=synth_validated.n_users, n_items=synth_validated.n_items, modalities=mods, dim=16)
    with pytest.raises(
        TrainingDiverged,
        match=r"training diverged: loss .* at epoch 1, step \d+; .*lower the learning "
        r"rate \(now 1e\+30\).*; no artifact written",
    ):
        train(split, emb, cfg, TrainConfig(epochs=1, batch_size=256, lr=1e30, device="cpu"), progress=False)


def test_non_finite_weights_are_named_in_the_diagnosis():
    from fusionrec.train.loop import _diagnose

    model = FusionRecModel(FusionConfig(n_users=3, n_items=6, modalities={"text": 12}, dim=16))
    with torch.no_grad():
        model.user_mix.weight[0, 0] = float("inf")
    message = _diagnose(model, torch.tensor(float("nan")), 3, 7, TrainConfig(lr=0.5))
    assert message == (
        "training diverged: loss nan at epoch 3, step 7; non-finite weights in ['user_mix.weight']: "
        "lower the learning rate (now 0.5); no artifact written"
    )


def test_coverage_by_hand():
    # two users over six items; top-2 each: user 0 gets items {5, 4}, user 1 (item 5 is a training item) gets {4, 3}
    scores = np.array([[0.0, 0.1, 0.2, 0.3, 0.8, 0.9], [0.0, 0.1, 0.2, 0.3, 0.8, 0.9]])
    target = pd.DataFrame({"user_idx": [0, 1], "item_idx": [0, 0]})
    m = evaluate_ranking(lambda u: scores[u], target, [pd.DataFrame({"user_idx": [1], "item_idx": [5]})], 2, 6, ks=(2,))
    assert m.coverage == pytest.approx(3 / 6) and m.recall[2] == 0.0 and m.users == 2
    cold = evaluate_ranking(lambda u: scores[u], target, [], 2, 6, ks=(2,), candidates=np.array([0, 1, 2, 3]))
    assert cold.coverage == pytest.approx(2 / 4)  # items 3 and 2, of the 4 candidates


def test_metrics_by_hand():
    # one user, targets {1, 3}; scores rank items 3, 0, 1, 2 (item 4 is a training item)
    scores = np.array([[0.5, 0.2, 0.1, 0.9, 1.0]])
    target = pd.DataFrame({"user_idx": [0, 0], "item_idx": [1, 3]})
    train_part = pd.DataFrame({"user_idx": [0], "item_idx": [4]})
    m = evaluate_ranking(lambda u: scores, target, [train_part], 1, 5, ks=(1, 3))
    assert m.recall[1] == 0.5 and m.recall[3] == 1.0 and m.hit[1] == 1.0
    ideal = 1 + 1 / np.log2(3)
    assert m.ndcg[3] == pytest.approx((1 + 1 / np.log2(4)) / ideal)


def test_auc_and_log_loss_by_hand():
    pos, neg = np.array([3.0, 2.0]), np.array([0.0, 1.0])
    auc, ll = auc_logloss(pos, neg)
    assert auc == 1.0  # every positive above every negative
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    by_hand = -(np.log(sigmoid(3.0)) + np.log(sigmoid(2.0)) + np.log(1 - sigmoid(0.0)) + np.log(1 - sigmoid(1.0))) / 4
    assert ll == pytest.approx(by_hand, rel=1e-9)  # 0.8169...
    assert auc_logloss(neg, pos)[0] == 0.0  # the wrong way round
    assert auc_logloss(np.array([3.0, 0.5]), neg)[0] == 0.75  # 3 of 4 pairs in order
    assert auc_logloss(np.array([1.0, 2.0]), np.array([1.0]))[0] == 0.75  # a tie counts one half


def test_score_terms_add_up_to_the_score_and_match_the_equations():
    """Each item's score for a user splits into one term per modality, the ID term and the bias; the terms
    are the equations' (tests/reference.py), they add up to the score, and a missing modality credits nothing."""
    from fusionrec.model.modeling import explain

    torch.manual_seed(1)
    cfg = FusionConfig(n_users=3, n_items=10, modalities={"text": 12, "image": 8}, dim=16)
    model = FusionRecModel(cfg).eval()
    emb = fake_embeddings(10)
    emb["image"].mask[[2, 7]] = False  # two items without an image
    seen = torch.tensor([True] * 6 + [False] * 4)
    model.set_item_features({m: (torch.from_numpy(e.values), torch.from_numpy(e.mask)) for m, e in emb.items()}, seen)
    with torch.no_grad():  # away from the zero initialisation of the biases
        for p in (*model.fusion.parameters(), *model.content_bias.parameters(), *model.id_bias.parameters()):
            torch.nn.init.normal_(p, std=0.5)
    users = torch.nn.functional.normalize(torch.randn(2, 16), dim=-1)
    with torch.inference_mode():
        out, parts = model.items(), model.item_parts()
        scores = model.logits(users, out.vectors, out.bias)
        idx = torch.arange(10).expand(2, 10)
        terms = explain(users, parts.parts[idx], parts.bias[idx], cfg.temperature)
    np.testing.assert_allclose(terms.sum(-1).numpy(), scores.numpy(), atol=1e-4)
    sd = state_dict_numpy(model)
    for b in range(2):
        np.testing.assert_allclose(
            terms[b].numpy(),
            score_terms(sd, model.modality_names, cfg.temperature, users[b].numpy().astype(np.float64)),
            atol=1e-4,
        )
    text = model.modality_names.index("text")
    assert (terms[:, ::5, text] == 0).all()  # items 0 and 5 have no text: text credits nothing
    image = model.modality_names.index("image")
    assert (terms[:, [2, 7], image] == 0).all() and (terms[:, [2, 7], text] != 0).all()  # no image: nothing to it
    assert (terms[:, 6:, len(model.modality_names)] == 0).all()  # items unseen in training: no ID term
    assert not torch.allclose(terms[0], terms[1])  # the terms depend on the user, not only on the item


def _tiny_model(n_items=9, seen=None, seed=0):
    torch.manual_seed(seed)
    cfg = FusionConfig(
        n_users=4,
        n_items=n_items,
        modalities={"text": 12, "image": 8},
        dim=8,
        dropout=0.0,
        modality_dropout=0.0,
        id_dropout=0.0,
    )
    model = FusionRecModel(cfg)
    emb = fake_embeddings(n_items, seed)
    seen_mask = torch.ones(n_items, dtype=torch.bool) if seen is None else torch.as_tensor(seen)
    model.set_item_features(
        {m: (torch.from_numpy(e.values), torch.from_numpy(e.mask)) for m, e in emb.items()}, seen_mask
    )
    users = torch.tensor([0, 1, 2, 3])
    history = torch.tensor([[1, 2, 0], [3, 4, 5], [6, 0, 0], [2, 7, 8]])
    mask = torch.tensor([[True, True, False], [True, True, True], [True, False, False], [True, True, True]])
    return model, users, history, mask


def _cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean -log softmax(logits)[target], by hand (log-sum-exp)."""
    top = logits.max(1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(1))
    return float(np.mean(lse - logits[np.arange(len(targets)), targets]))


def test_items_never_seen_in_training_are_no_ones_negatives():
    """A cold-item split's test items would otherwise be every batch's negatives, and the model would learn
    to bury the content that looks like them."""
    seen = np.ones(9, dtype=bool)
    seen[[4, 7]] = False
    model, users, history, mask = _tiny_model(seen=seen)
    targets = torch.tensor([0, 2, 5, 8])
    loss = model(users, targets, history, mask).item()
    with torch.inference_mode():
        items = model.items()
        logits = model.logits(model.users(users, history, mask, items.vectors), items.vectors, items.bias).numpy()
    assert loss == pytest.approx(
        _cross_entropy(logits[:, seen], np.searchsorted(np.flatnonzero(seen), targets.numpy())), rel=1e-5
    )
    assert loss != pytest.approx(_cross_entropy(logits, targets.numpy()), rel=1e-3)  # the unseen items would count


def test_sampled_softmax_is_the_logq_corrected_softmax_over_the_candidates():
    """Only the items the batch needs go through the item tower, and the result is the same as taking the
    candidates' columns of the full scores and subtracting log Q."""
    model, users, history, mask = _tiny_model()
    model.eval()  # no dropout: both paths see the same tower
    targets = torch.tensor([0, 2, 5, 2])
    candidates = torch.tensor([0, 2, 3, 5, 8])
    log_q = torch.tensor([0.1, -0.4, 0.3, 0.0, 1.2])
    loss = model(users, targets, history, mask, sampled=(candidates, log_q)).item()
    with torch.inference_mode():
        items = model.items()
        logits = model.logits(model.users(users, history, mask, items.vectors), items.vectors, items.bias).numpy()
    expected = _cross_entropy(logits[:, candidates.numpy()] - log_q.numpy(), np.array([0, 1, 3, 1]))
    assert loss == pytest.approx(expected, rel=1e-5)


def test_negative_sampler_counts_each_candidate_as_often_as_it_is_expected_to_be_drawn():
    from fusionrec.train.loop import NegativeSampler

    train_items = torch.tensor([0, 0, 0, 1, 2, 2, 5, 5])  # shares 3/8, 1/8, 2/8, 0, 0, 2/8; seen: 0, 1, 2, 5
    sampler = NegativeSampler(train_items, 6, TrainConfig(negatives=3))
    positives = torch.tensor([0, 5, 0, 2])
    candidates, log_q = sampler.draw(positives, torch.Generator().manual_seed(0), "cpu")
    assert candidates.tolist() == sorted(set(candidates.tolist())) and {0, 2, 5} <= set(candidates.tolist())
    assert set(candidates.tolist()) <= {0, 1, 2, 5}  # never an item without a training positive
    share = {0: 3 / 8, 1: 1 / 8, 2: 2 / 8, 5: 2 / 8}
    assert np.exp(log_q.numpy()) == pytest.approx([4 * share[c] + 3 / 4 for c in candidates.tolist()], rel=1e-6)


def test_a_sampled_softmax_run_learns_the_planted_tastes(synth_validated, synth_embeddings):
    split = make_split(synth_validated, "random", seed=0)
    cfg = FusionConfig(
        n_users=split.n_users,
        n_items=split.n_items,
        modalities={m: synth_embeddings[m].dim for m in ("text", "image")},
        dim=32,
    )
    sampled = train(
        split,
        synth_embeddings,
        cfg,
        TrainConfig(epochs=8, batch_size=256, softmax="sampled", negatives=128, device="cpu"),
        progress=False,
    )
    got = evaluate_model(sampled.model, sampled.user_history, sampled.user_history_mask, split).recall[20]
    from fusionrec.train.peers import most_popular

    pop = evaluate_ranking(
        most_popular(split), split.test, [split.train, split.valid], split.n_users, split.n_items
    ).recall[20]
    assert got > pop  # the bar the full softmax meets in test_fused_model_beats_popularity_on_planted_tastes


def test_sampled_batches_shrink_to_keep_enough_steps_per_epoch_but_never_below_the_full_softmaxs():
    from fusionrec.train.loop import batch_size

    cfg = TrainConfig(batch_size=1024, sampled_batch_size=4096, min_steps_per_epoch=100)
    assert batch_size(cfg, 80_000, sampled=True) == 1024  # movielens-100k-mm: 800 would be below batch_size
    assert batch_size(cfg, 300_000, sampled=True) == 3000  # 100 steps of 3,000
    assert batch_size(cfg, 800_000, sampled=True) == 4096  # 10^6 interactions: the large batches
    assert batch_size(cfg, 800_000, sampled=False) == 1024


def test_check_steps_spread_validations_over_long_epochs_and_always_end_one():
    from fusionrec.train.loop import check_steps

    assert check_steps(78, 1024, 200_000) == {77}  # movielens-100k-mm: once an epoch, at its end
    assert check_steps(196, 4096, 200_000) == {48, 97, 146, 195}  # 10^6 interactions: about every 200k rows
    assert check_steps(1, 4096, 10) == {0}
    assert check_steps(0, 4096, 10) == set()


def test_long_epochs_validate_within_the_epoch_and_stop_there(synth_validated):
    """Validation every quarter epoch: four checks an epoch, at fractional epochs; with a patience of one
    check and a learning rate that makes the model worse, training stops within the first epoch."""
    from fusionrec.train.loop import check_steps

    split = make_split(synth_validated, "random", seed=0)
    emb = fake_embeddings(synth_validated.n_items)
    mods = {m: emb[m].values.shape[1] for m in ("text", "image")}
    cfg = FusionConfig(n_users=synth_validated.n_users, n_items=synth_validated.n_items, modalities=mods, dim=16)
    quarter = len(split.train) // 4
    steps = -(-len(split.train) // 128)
    r = train(
        split,
        emb,
        cfg,
        TrainConfig(epochs=1, batch_size=128, device="cpu", valid_every=quarter, patience=50),
        progress=False,
    )
    within = sorted(s for s in check_steps(steps, 128, quarter) if s != steps - 1)
    assert len(within) == 3
    assert [h["epoch"] for h in r.history] == [*(round((s + 1) / steps, 2) for s in within), 1]
    assert all(h["loss"] > 0 for h in r.history)
    worse = train(
        split,
        emb,
        cfg,
        TrainConfig(epochs=2, batch_size=64, lr=5.0, device="cpu", valid_every=quarter, patience=1),
        progress=False,
    )
    assert len(worse.history) < 4 and worse.history[-1]["epoch"] < 1  # stopped mid-epoch, one check after its best
    best = max(worse.history, key=lambda h: h["valid_ndcg@20"])
    assert worse.best_epoch == best["epoch"] == worse.history[-2]["epoch"]


def test_compare_looks_peers_up_by_name_and_skips_one_the_data_cannot_feed(synth_validated):
    from fusionrec.errors import ConfigError
    from fusionrec.train.compare import compare

    split = make_split(synth_validated, "random", seed=0)
    emb = {"text": fake_embeddings(synth_validated.n_items)["text"]}
    got = compare(
        synth_validated,
        emb,
        split,
        models=("mostpop", "random", "cornac_vbpr"),
        train_cfg=TrainConfig(epochs=1, device="cpu"),
        dim=16,
    )
    assert set(got) == {"mostpop", "random"}  # VBPR needs images; none here
    assert got["mostpop"]["ndcg@20"] > got["random"]["ndcg@20"]
    with pytest.raises(ConfigError, match="unknown model 'bprr'.*'cornac_bpr'"):
        compare(synth_validated, emb, split, models=("mostpop", "bprr"), train_cfg=TrainConfig(epochs=1), dim=16)


def test_the_averaged_weights_are_the_bias_corrected_moving_average_of_the_steps_weights(synth_validated, monkeypatch):
    """Training with ``average_weights`` on returns the exponential moving average of the weights after each step
    (computed here by hand from the weights a run without it takes, step by step: the average never changes
    the live training path), and validation scores that average."""
    split = make_split(synth_validated, "random", seed=0)
    emb = fake_embeddings(synth_validated.n_items)
    mods = {m: emb[m].values.shape[1] for m in ("text", "image")}
    cfg = FusionConfig(
        n_users=synth_validated.n_users,
        n_items=synth_validated.n_items,
        modalities=mods,
        dim=16,
        item_item=0,
        content_term=False,
    )
    snapshots = []
    step = torch.optim.AdamW.step

    def recording(self, *a, **kw):
        out = step(self, *a, **kw)
        snapshots.append([p.detach().clone() for g in self.param_groups for p in g["params"]])
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    plain = TrainConfig(epochs=1, batch_size=256, seed=3, device="cpu")
    live = train(split, emb, cfg, plain, progress=False)
    steps = list(snapshots)
    snapshots.clear()
    decay = 0.9
    on = {"average_weights": "on", "average_decay": decay}
    averaged = train(split, emb, cfg, plain.model_copy(update=on), progress=False)
    for a, b in zip(steps[-1], snapshots[-1]):  # the same live path
        assert torch.equal(a, b)
    T = len(steps)
    by_hand = [
        sum((1 - decay) * decay ** (T - 1 - t) * steps[t][j] for t in range(T)) / (1 - decay**T)
        for j in range(len(steps[0]))
    ]
    got = list(averaged.model.parameters())
    assert len(got) == len(by_hand)
    for g, want in zip(got, by_hand):
        assert torch.allclose(g, want, atol=1e-5), (g - want).abs().max()
    assert not all(torch.equal(g, w) for g, w in zip(got, live.model.parameters()))  # it is not the last step
    assert averaged.history[0]["valid_ndcg@20"] != live.history[0]["valid_ndcg@20"]


def test_chosen_averaging_keeps_whichever_of_the_live_and_averaged_weights_validates_better(synth_validated):
    """With ``average_weights: chosen`` every check scores both; its validation figure is the better of the
    two runs that score one each (the live path is the same in all three)."""
    split = make_split(synth_validated, "random", seed=0)
    emb = fake_embeddings(synth_validated.n_items)
    mods = {m: emb[m].values.shape[1] for m in ("text", "image")}
    cfg = FusionConfig(
        n_users=synth_validated.n_users, n_items=synth_validated.n_items, modalities=mods, dim=16, item_item=0
    )
    base = TrainConfig(epochs=3, batch_size=256, seed=5, device="cpu", average_decay=0.8)
    runs = {
        mode: train(split, emb, cfg, base.model_copy(update={"average_weights": mode}), progress=False)
        for mode in ("off", "on", "chosen")
    }
    for off, on, chosen in zip(*(runs[m].history for m in ("off", "on", "chosen"))):
        assert chosen["valid_ndcg@20"] == max(off["valid_ndcg@20"], on["valid_ndcg@20"])
        assert chosen["averaged"] == (on["valid_ndcg@20"] > off["valid_ndcg@20"])
    assert "averaged" not in runs["off"].history[0] and runs["on"].history[0]["averaged"] is True
    assert runs["chosen"].best_valid["valid_ndcg@20"] == max(h["valid_ndcg@20"] for h in runs["chosen"].history)
