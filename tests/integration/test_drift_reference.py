"""The drift reference is never the first traffic after a deploy (issue 22, row 13): a flood of odd requests
sent first does not become what "normal" is, the model's users served as the predictor serves them are
quiet against the model's own answers, and what callers bring (new users' histories, queries) is compared
only with a window an operator pinned."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from fusionrec.artifact import load_artifact
from fusionrec.config import settings_from
from fusionrec.monitoring.log import write_records
from fusionrec.monitoring.loop import pin_reference, run_once
from fusionrec.monitoring.reference import ModelReference
from fusionrec.recommender import Recommender, Row
from tests.champion import trained_champion

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def champion(tmp_path_factory, synth_validated, synth_embeddings):
    models = tmp_path_factory.mktemp("models")
    _, path = trained_champion(models, synth_validated, synth_embeddings)
    return models, load_artifact(path)


def _served(rec: Recommender, art, n: int, at: datetime, seed: int, *, shift: float = 0.0, text=None) -> list[dict]:
    """Log records of ``n`` requests as the predictor answers them: 60 % known users by id, 40 % new users by
    their latest 5 items; ``shift`` moves every user vector along one direction by that many times its
    length (another population);
    ``text``: text-query vectors to add, one record each."""
    rng = np.random.default_rng(seed)
    users = art.users["user_id"].astype(str).to_numpy()
    rows = []
    for _ in range(n):
        u = str(rng.choice(users))
        if rng.random() < 0.6:
            rows.append(Row(kind="recommend", k=10, user_id=u))
        else:
            i = rec.user_index[u]
            rows.append(
                Row(
                    kind="recommend",
                    k=10,
                    history=rec.item_ids[art.history[i][art.history_mask[i]].numpy()][-5:].tolist(),
                )
            )
    direction = np.random.default_rng(7).normal(size=rec.model.config.dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    out = []
    for n_, (row, res) in enumerate(zip(rows, rec.recommend(rows) if rows else [])):
        out.append(
            {
                "time": at + timedelta(seconds=n_ % 3000),
                "request_id": f"{seed}-{n_}",
                "model_version": art.version,
                "kind": "user" if row.user_id else "history",
                "user": None,
                "history_length": len(row.history),
                "k": row.k,
                "cold": res.cold,
                "fallback": res.fallback,
                "items": res.item_ids,
                "scores": res.scores.tolist(),
                "latency_ms": 5.0,
                "user_vector": (res.user_vector + shift * np.linalg.norm(res.user_vector) * direction).tolist(),
                "query_text": None,
                "query_image": None,
            }
        )
    for n_, v in enumerate([] if text is None else text):
        out.append(
            {
                "time": at + timedelta(seconds=n_ % 3000),
                "request_id": f"{seed}-q{n_}",
                "model_version": art.version,
                "kind": "text",
                "user": None,
                "history_length": 0,
                "k": 10,
                "cold": False,
                "fallback": False,
                "items": [rec.item_ids[0]],
                "scores": [0.5],
                "latency_ms": 8.0,
                "user_vector": None,
                "query_text": np.asarray(v, dtype=np.float32).tolist(),
                "query_image": None,
            }
        )
    return out


def _texts(emb, n: int, seed: int, *, off_topic: bool = False) -> np.ndarray:
    """Text-query vectors: near the catalogue's own descriptions, or unit vectors pointing anywhere."""
    rng = np.random.default_rng(seed)
    base = emb["text"].values
    if off_topic:
        v = rng.normal(size=(n, base.shape[1]))
    else:
        v = base[rng.integers(0, len(base), n)] + 0.02 * rng.normal(size=(n, base.shape[1]))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_the_first_traffic_is_never_the_reference_and_queries_need_a_pinned_window(
    champion, tmp_path, synth_embeddings
):
    models, art = champion
    rec = Recommender(art)
    settings = settings_from(
        {
            "monitoring": {"folder": str(tmp_path / "m"), "min_records": 100},
            "serving": {"storage_uri": str(models)},
            "paths": {"cache": str(tmp_path / "cache")},
        }
    )
    logs = tmp_path / "m" / "logs"

    def flood(at, seed):
        return _served(
            rec,
            art,
            600,
            at,
            seed,
            shift=1.0,
            text=_texts(synth_embeddings, 200, seed, off_topic=True),
        )

    # an attacker sends the new version's first requests: another population and off-topic queries
    write_records(logs, flood(T0, 1))
    # then the model's users, as the predictor serves them, and on-topic queries
    write_records(logs, _served(rec, art, 400, T0 + timedelta(hours=1), 2, text=_texts(synth_embeddings, 150, 2)))
    quiet = run_once(settings, now=T0 + timedelta(hours=2), dashboard=False)
    assert quiet.decision.status == "quiet", quiet.decision.reason
    assert "requests not compared (" in quiet.decision.reason and "150 text" in quiet.decision.reason
    assert "no callers' window is pinned" in quiet.decision.reason
    assert not (tmp_path / "m" / "reference").exists()  # nothing of the traffic was kept as a reference

    # the attacker's traffic again: it drifts from the model's own (had it been the reference, it would be quiet)
    write_records(logs, flood(T0 + timedelta(hours=2), 3))
    fired = run_once(settings, now=T0 + timedelta(hours=3), dashboard=False)
    assert fired.decision.status == "drift" and "user_vector" in fired.decision.drifted, fired.decision.reason
    assert not fired.decision.retrain and "would retrain" in fired.decision.reason  # no runner given

    # an operator vouches for the second hour's new users and queries; off-topic queries are then found
    pinned = pd.read_parquet(pin_reference(settings, T0 + timedelta(hours=1), T0 + timedelta(hours=2)))
    assert set(pinned["kind"]) == {"history", "text"} and (pinned["kind"] == "text").sum() == 150
    assert pinned["user"].isna().all()
    write_records(
        logs, _served(rec, art, 400, T0 + timedelta(hours=3), 4, text=_texts(synth_embeddings, 150, 4, off_topic=True))
    )
    off = run_once(settings, now=T0 + timedelta(hours=4), dashboard=False)
    assert off.decision.status == "drift" and "query_text" in off.decision.drifted, off.decision.reason
    assert "user_vector" not in off.decision.drifted
    write_records(logs, _served(rec, art, 400, T0 + timedelta(hours=4), 5, text=_texts(synth_embeddings, 150, 5)))
    on = run_once(settings, now=T0 + timedelta(hours=5), dashboard=False)
    assert on.decision.status == "quiet" and "not compared" not in on.decision.reason, on.decision.reason


def test_the_reference_is_drawn_in_the_windows_shapes(champion, synth_embeddings):
    _, art = champion
    rec = Recommender(art)
    callers = pd.DataFrame(_served(rec, art, 0, T0, 9, text=_texts(synth_embeddings, 300, 9)))
    reference = ModelReference(art, callers)
    window = pd.DataFrame(
        {
            "kind": ["user"] * 60 + ["fallback"] * 10 + ["text"] * 20 + ["like"] * 5,
            "k": [3] * 60 + [7] * 10 + [5] * 25,
            "history_length": 0,
            "latency_ms": 9.0,
        }
    )
    assert reference.covers(window).tolist() == [True] * 90 + [False] * 5  # nothing pinned stands for "like"
    got = reference.draw(window, seed=0)
    assert got["kind"].value_counts().to_dict() == {"user": 120, "text": 40, "fallback": 20}  # two per window row
    users = got[got["kind"] == "user"]
    assert users["items"].map(len).eq(3).all() and got.loc[got["kind"] == "fallback", "items"].map(len).eq(7).all()
    assert users["user_vector"].notna().all() and got.loc[got["kind"] == "fallback", "fallback"].all()
    # the known users are the model's own, each once while there are enough of them
    vectors = np.stack(users["user_vector"].to_list())
    assert len(np.unique(vectors.round(5), axis=0)) == min(120, len(art.users))
    texts = got.loc[got["kind"] == "text", "request_id"]
    assert set(texts) <= set(callers["request_id"]) and not texts.duplicated().any()  # a pinned query never twice
    # fewer pinned queries than two per window row: every kind drawn at the share the scarcest allows
    few = ModelReference(art, callers.iloc[:30]).draw(window, seed=0)["kind"].value_counts().to_dict()
    assert few == {"user": 90, "text": 30, "fallback": 15}
