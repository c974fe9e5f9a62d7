"""Catalogue-scale top-K (fusionrec.topk): the approximate path answers what the exact one answers where
its index is searched whole, keeps the request's exclusions and candidates whatever the index returns,
and ships with the model version above the size where it is used."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fusionrec import topk
from fusionrec.artifact import load_artifact
from fusionrec.recommender import Recommender, Row
from tests.champion import trained_champion


@pytest.fixture(scope="module")
def champion(tmp_path_factory, synth_validated, synth_embeddings):
    split, path = trained_champion(tmp_path_factory.mktemp("topk") / "models", synth_validated, synth_embeddings)
    return split, load_artifact(path)


def _rows(art, n_users=30, k=10, **kw):
    users = art.users["user_id"].astype(str).tolist()[:n_users]
    return [Row("recommend", k, user_id=u, **kw) for u in users]


def test_the_approximate_top_k_equals_the_exact_one_when_every_list_is_searched(champion):
    _, art = champion
    exact = Recommender(art, {})
    whole = Recommender(art, {}, ann_above=0, ann_ef=10_000)
    assert exact.topk is None and whole.topk is not None
    items = art.items["item_id"].astype(str).tolist()
    rows = [*_rows(art), Row("recommend", 10, history=items[:5]), Row("recommend", 10, user_id="x", history=items[3:6])]
    for a, b in zip(exact.run(rows), whole.run(rows)):
        assert a.item_ids == b.item_ids
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(a.terms, b.terms, rtol=1e-4, atol=1e-4)  # the same explanation, term by term
        assert a.cold == b.cold


def test_a_short_shortlist_still_holds_what_the_history_terms_rank_first(champion):
    """Ten items from the graph (searched whole) and ten from the item-item and content neighbourhoods,
    the user's own items left out of both: the exact top-10 is in them (the graph's ten alone miss half)."""
    _, art = champion
    rows = _rows(art, n_users=120, k=10)
    exact = Recommender(art, {}).run(rows)
    approx = Recommender(art, {}, ann_above=0, ann_ef=10_000, ann_pool=10).run(rows)
    recall = np.mean([len(set(a.item_ids) & set(e.item_ids)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.95, recall


def test_the_approximate_top_k_keeps_exclusions_and_candidates(champion):
    _, art = champion
    # one list of the index searched, a small shortlist: whatever it misses, no excluded item comes back
    rec = Recommender(art, {}, ann_above=0, ann_ef=1, ann_pool=5)
    exact = Recommender(art, {})
    items = art.items["item_id"].astype(str).tolist()
    for row, res in zip(_rows(art, k=20), rec.run(_rows(art, k=20))):
        seen = set(np.asarray(exact.item_ids)[art.seen(exact.user_index[row.user_id])])
        assert len(res.item_ids) == 20 and not seen & set(res.item_ids)
    asked = [
        Row("recommend", 5, user_id=art.users["user_id"].astype(str)[0], candidates=items[10:20], exclude=items[10:12])
    ]
    (res,) = rec.run(asked)
    assert set(res.item_ids) <= set(items[12:20])
    (want,) = exact.run(asked)  # a candidate list is scored whole: exactly the exact path's answer
    assert res.item_ids == want.item_ids


def test_a_version_above_the_size_ships_its_index_and_serving_reads_it(
    tmp_path, synth_validated, synth_embeddings, monkeypatch, caplog
):
    monkeypatch.setattr(topk, "SHIP_ABOVE", 10)
    _, path = trained_champion(tmp_path / "models", synth_validated, synth_embeddings)
    assert (path / "index" / topk.INDEX_FILE).exists()
    with caplog.at_level(logging.WARNING, logger="fusionrec.topk"):
        rec = Recommender(load_artifact(path), {}, ann_above=0)
    assert rec.topk is not None and "building it now" not in caplog.text
    monkeypatch.setattr(topk, "SHIP_ABOVE", 10**9)
    _, other = trained_champion(tmp_path / "others", synth_validated, synth_embeddings)
    assert not (other / "index" / topk.INDEX_FILE).exists()
    with caplog.at_level(logging.WARNING, logger="fusionrec.topk"):
        Recommender(load_artifact(other), {}, ann_above=0)
    assert "building it now" in caplog.text  # a version without one still serves: built at load


def test_the_taste_term_is_in_the_index_so_a_short_shortlist_holds_what_it_ranks_first(champion):
    """A taste term that rules the lists, set on the champion (16 clusters of its content vectors, weight 30):
    the index holds each item's cluster one-hot and the request its taste shares, so the whole-index answer is
    the exact one, term by term, and five items from the graph and five from the neighbourhoods hold most of
    the exact top-10 (0.91; 0.70 with the taste shares left out of the request)."""
    import copy

    from fusionrec.itemitem import kmeans, taste_vectors

    _, art = champion
    art = copy.copy(art)
    art.model = copy.deepcopy(art.model)
    m = art.model
    m.tc_label.copy_(kmeans(taste_vectors(m), 16, seed=0))
    m.tc_clusters.fill_(16)
    m.tc_weight.fill_(30.0)
    assert m.has_taste_term and topk._taste(m) == 16
    rows = _rows(art, n_users=120, k=10)
    exact = Recommender(art, {}).run(rows)
    plain = copy.deepcopy(m)  # the term moves these lists: leaving it out of the index would show
    plain.tc_weight.fill_(0.0)
    art_plain = copy.copy(art)
    art_plain.model = plain
    moved = np.mean([a.item_ids != b.item_ids for a, b in zip(exact, Recommender(art_plain, {}).run(rows))])
    assert moved > 0.5, moved
    whole = Recommender(art, {}, ann_above=0, ann_ef=10_000).run(rows[:30])
    for a, b in zip(exact[:30], whole):
        assert a.item_ids == b.item_ids
        np.testing.assert_allclose(a.terms, b.terms, rtol=1e-4, atol=1e-4)
    approx = Recommender(art, {}, ann_above=0, ann_ef=10_000, ann_pool=5).run(rows)
    recall = np.mean([len(set(a.item_ids) & set(e.item_ids)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.85, recall
