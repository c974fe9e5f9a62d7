"""Feast on both online stores (SQLite, and a real redis-server), point-in-time training frames."""

import asyncio
import shutil

import numpy as np
import pandas as pd
import pytest

from fusionrec.config import FeatureSettings
from fusionrec.features import store as fs
from fusionrec.features.tables import build_feature_tables

pytestmark = pytest.mark.integration
HISTORY = 5


@pytest.fixture(scope="session")
def feature_tables(synth_validated, synth_embeddings, tmp_path_factory):
    out = tmp_path_factory.mktemp("features")
    build_feature_tables(synth_validated, synth_embeddings, out, HISTORY)
    return out


@pytest.fixture(scope="session", params=["sqlite", "redis"])
def online_store(request, feature_tables, tmp_path_factory):
    """An applied and materialised store per online-store kind, over a copy of the offline tables."""
    data = tmp_path_factory.mktemp(f"store-{request.param}") / "features"
    shutil.copytree(feature_tables, data)
    if request.param == "redis":
        cfg = FeatureSettings(online_store="redis", redis_connection=request.getfixturevalue("redis_server"))
    else:
        cfg = FeatureSettings()
    store = fs.feature_store(cfg, data)
    fs.apply(store, data)
    fs.materialize(store)
    return store


def _ids(ds):
    return ds.users["user_id"].astype(str).to_numpy(), ds.items["item_id"].astype(str).to_numpy()


def test_online_history_is_each_users_latest_items(online_store, synth_validated):
    users, items = _ids(synth_validated)
    inter = synth_validated.interactions.sort_values(["timestamp"], kind="stable")
    some = users[:10]
    got = fs.online_user_features(online_store, list(some) + ["stranger"])
    for u, hist in zip(some, got.history):
        mine = inter[users[inter["user_idx"]] == u]
        expected = list(items[mine["item_idx"]])[-HISTORY:]
        assert hist == expected
    assert got.history[-1] == []  # an unknown user has no history, not an error
    assert got.profile["u_age"].iloc[0] == synth_validated.users["age"].iloc[0]
    assert got.profile["u_age"].isna().iloc[-1]


def test_online_item_embeddings_match_and_masks_are_explicit(online_store, synth_validated, synth_embeddings):
    _, items = _ids(synth_validated)
    vectors, mask = fs.online_item_embeddings(online_store, list(items[:7]) + ["ghost"], "text")
    assert mask.tolist() == [True] * 7 + [False]
    np.testing.assert_allclose(vectors[:7], synth_embeddings["text"].values[:7], rtol=1e-6)
    assert not vectors[7].any()


def test_async_lookup_equals_sync(online_store, synth_validated):
    users, _ = _ids(synth_validated)
    sync = fs.online_user_features(online_store, users[:20])
    async_ = asyncio.run(fs.online_user_features_async(online_store, users[:20]))
    assert sync.history == async_.history


def test_pushed_interactions_reach_the_online_store(online_store, synth_validated):
    users, items = _ids(synth_validated)
    user = users[-1]
    before = fs.online_user_features(online_store, [user]).history[0]
    new = pd.DataFrame(
        {"user_id": [user, user], "item_id": [items[0], items[1]], "timestamp": [1_900_000_000, 1_900_000_010]}
    )
    assert fs.push_interactions(online_store, new, HISTORY) == 1
    after = fs.online_user_features(online_store, [user]).history[0]
    assert after == (before + [items[0], items[1]])[-HISTORY:]


def test_feedback_is_what_was_pushed_since_training_under_the_logged_pseudonym(online_store, synth_validated):
    """The monitoring loop's feedback: online-history items the model was not trained with, per pseudonym."""
    from fusionrec.monitoring.log import pseudonymise
    from fusionrec.monitoring.quality import feedback_from_feast, served_users

    users, items = _ids(synth_validated)
    user, other = users[-2], users[-3]
    trained = {
        user: set(fs.online_user_features(online_store, [user]).history[0]),
        other: set(fs.online_user_features(online_store, [other]).history[0]),
    }
    fresh = [i for i in items if i not in trained[user]][:2]
    fs.push_interactions(
        online_store,
        pd.DataFrame({"user_id": [user, user], "item_id": fresh, "timestamp": [1_950_000_000, 1_950_000_010]}),
        HISTORY,
    )
    key = b"k"
    logged = pd.DataFrame({"user": [pseudonymise(user, key), pseudonymise(other, key), None]})
    pseudonyms = served_users(logged, [user, other, users[0]], key)
    assert pseudonyms == {pseudonymise(user, key): user, pseudonymise(other, key): other}
    got = feedback_from_feast(online_store, pseudonyms, trained)
    assert sorted(got["item"]) == sorted(fresh) and set(got["user"]) == {pseudonymise(user, key)}


def _seconds(stamps: pd.Series) -> pd.Series:
    """Unix seconds of tz-aware timestamps, whatever their unit (Feast returns us, pandas makes ns)."""
    return (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)


def test_training_frame_never_sees_the_future(feature_tables, synth_validated):
    """Each training row sees exactly the history and item statistics written strictly before it."""
    store = fs.feature_store(FeatureSettings(), feature_tables)
    fs.apply(store, feature_tables)
    users, items = _ids(synth_validated)
    inter = synth_validated.interactions.reset_index(drop=True)
    rows = pd.DataFrame(
        {
            "user_id": users[inter["user_idx"]],
            "item_id": items[inter["item_idx"]],
            "event_timestamp": pd.to_datetime(inter["timestamp"], unit="s", utc=True),
        }
    )
    # A user asked about twice at the same moment is two rows: the store must not fold them into one.
    doubled = pd.concat([rows, rows.iloc[:25]], ignore_index=True)
    frame = fs.training_frame(store, doubled)
    assert len(frame) == len(doubled)  # counted before any merge

    def keys(f):
        return sorted(zip(f["user_id"], f["item_id"], _seconds(f["event_timestamp"])))

    assert keys(frame) == keys(doubled)  # every row once, the doubled ones twice
    frame = frame.drop_duplicates(["user_id", "item_id", "event_timestamp"])
    frame["ts"] = _seconds(frame["event_timestamp"])
    user_idx = {u: n for n, u in enumerate(users)}
    positives = inter[inter["label"] > 0]
    by_user = {u: g.sort_values("timestamp", kind="stable") for u, g in positives.groupby("user_idx")}
    item_times = {i: np.sort(g["timestamp"].to_numpy()) for i, g in positives.groupby("item_idx")}
    item_idx = {i: n for n, i in enumerate(items)}
    non_empty = 0
    for r in frame.itertuples():
        history = list(r.history) if r.history is not None else []
        # by hand: the user's latest HISTORY positive items strictly before this row, oldest first
        mine = by_user[user_idx[r.user_id]]
        assert history == list(items[mine.loc[mine["timestamp"] < r.ts, "item_idx"]])[-HISTORY:], (r.user_id, r.ts)
        non_empty += bool(history)
        # item statistics come from whole days before this one
        day_start = (r.ts // 86_400) * 86_400
        times = item_times.get(item_idx[r.item_id], np.zeros(0))
        before_today = int(np.searchsorted(times, day_start, side="left"))
        assert (0 if pd.isna(r.popularity) else r.popularity) == before_today
    assert non_empty > 0.8 * len(frame)  # the check compared real histories, not empty ones


def test_a_value_written_after_the_interaction_is_invisible(tmp_path, synth_validated, synth_embeddings):
    """Plant a late history row (stamped after a chosen interaction): the interaction must not see it."""
    import pyarrow.parquet as pq

    out = tmp_path / "features"
    out.mkdir()
    build_feature_tables(synth_validated, synth_embeddings, out, HISTORY)
    table = pq.read_table(out / "user_history.parquet").to_pandas()
    users, items = _ids(synth_validated)
    u = users[0]
    t = synth_validated.interactions.loc[synth_validated.interactions["user_idx"] == 0, "timestamp"].max()
    late = pd.DataFrame(
        {
            "user_id": [u],
            "event_timestamp": [pd.Timestamp(int(t) + 1, unit="s", tz="UTC")],
            "history": [["LEAKED"]],
            "history_len": [1],
        }
    )
    pd.concat([table, late]).to_parquet(out / "user_history.parquet", index=False)
    store = fs.feature_store(FeatureSettings(), out)
    fs.apply(store, out)
    rows = pd.DataFrame(
        {
            "user_id": [u, u],
            "item_id": [items[0], items[0]],
            "event_timestamp": pd.to_datetime([int(t), int(t) + 2], unit="s", utc=True),
        }
    )
    frame = fs.training_frame(store, rows).sort_values("event_timestamp")
    assert "LEAKED" not in list(frame["history"].iloc[0])
    assert list(frame["history"].iloc[1]) == ["LEAKED"]  # and it is visible once its time has come
