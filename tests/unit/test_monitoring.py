"""The inference log, the drift verdicts and the retraining policy, on generated log records."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from fusionrec.config import MonitoringSettings, load_settings
from fusionrec.errors import ConfigError
from fusionrec.monitoring import drift, policy
from fusionrec.monitoring.log import (
    InferenceLogWriter,
    RequestSummary,
    log_key,
    pseudonymise,
    read_window,
    records,
    write_records,
)

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc)


def traffic(
    n: int,
    at: datetime,
    *,
    seed: int,
    user_shift: float = 0.0,
    text_shift: float = 0.0,
    kinds=("user", "history", "text", "fallback"),
    p=(0.5, 0.2, 0.2, 0.1),
) -> list[dict]:
    """Log records as the transformer writes them: vectors around a fixed direction (as real embeddings
    are), ``*_shift`` moving the user or the text-query vectors along another one."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(99).normal(size=(3, 32))
    text_base = np.random.default_rng(98).normal(size=(2, 64))
    out = []
    for i in range(n):
        kind = rng.choice(kinds, p=p)
        fallback = kind == "fallback"
        user = None if fallback or kind == "text" else base[0] + 0.8 * rng.normal(size=32) + user_shift * base[1]
        text = text_base[0] + 0.8 * rng.normal(size=64) + text_shift * text_base[1] if kind == "text" else None
        out.append(
            {
                "time": at + timedelta(seconds=float(rng.uniform(0, 3000))),
                "request_id": f"{seed}-{i}",
                "model_version": "v0001",
                "kind": str(kind),
                "user": None,
                "history_length": int(rng.integers(1, 40)),
                "k": 20,
                "cold": kind == "history",
                "fallback": bool(fallback),
                "items": [str(j) for j in rng.integers(0, 300, 20)],
                "scores": sorted(rng.normal(size=20))[::-1],
                "latency_ms": float(rng.gamma(2.0, 5.0)),
                "user_vector": user,
                "query_text": text,
                "query_image": None,
            }
        )
    return out


def test_pseudonymised_user_ids_are_keyed_and_stable(tmp_path):
    a, b = pseudonymise("user-42", b"key-one"), pseudonymise("user-42", b"key-two")
    assert a == pseudonymise("user-42", b"key-one") and a != b and "42" not in a and len(a) == 32
    assert pseudonymise(None, b"k") is None
    # locally, without a secret: one random key made once, readable by its owner only
    settings = MonitoringSettings()
    folder = tmp_path / "monitoring"
    k1, k2 = log_key(settings, folder), log_key(settings, folder)
    made = (
        tmp_path / "secrets" / "monitoring.log.key"
    )  # beside the monitoring folder (the dashboard reads it), not in it
    assert k1 == k2 and len(k1) == 64 and made.stat().st_mode & 0o077 == 0 and not folder.exists()
    long = "s3cret-0123456789abcdefghijklmnopqrstuv"
    assert log_key(load_settings(env={"FUSIONREC__MONITORING__LOG_KEY": long}).monitoring, folder) == long.encode()


def test_a_short_empty_or_missing_pseudonymisation_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least 32"):
        log_key(load_settings(env={"FUSIONREC__MONITORING__LOG_KEY": "s3cret"}).monitoring, tmp_path)
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match="missing or empty"):
        log_key(MonitoringSettings(log_key_file=str(tmp_path / "empty")), tmp_path)
    with pytest.raises(ConfigError, match="no pseudonymisation key"):  # a cluster step without its Secret
        log_key(MonitoringSettings(), tmp_path / "monitoring", create=False)
    assert not (tmp_path / "secrets").exists()


def test_records_keep_no_text_and_take_vectors_from_the_predictors_answer():
    summaries = [RequestSummary("text", None, 0, 5), RequestSummary("user", pseudonymise("7", b"k"), 3, 2)]
    predictions = [
        {
            "items": [{"item_id": "a", "score": 0.9}],
            "fallback": False,
            "cold": False,
            "model_version": "v3",
            "monitor": {"user_vector": None, "query": {"text": [0.5, 0.25]}},
        },
        {"items": [], "fallback": True, "cold": False, "model_version": "v3"},
    ]
    recs = records(summaries, predictions, latency_ms=12.5, request_id="r1", at=T0)
    assert recs[0]["query_text"] == [0.5, 0.25] and recs[0]["user_vector"] is None and recs[0]["items"] == ["a"]
    assert (
        recs[1]["kind"] == "fallback" and recs[1]["user"] == pseudonymise("7", b"k") and recs[1]["latency_ms"] == 12.5
    )


def test_hourly_files_read_back_and_a_corrupt_file_is_skipped_and_counted(tmp_path):
    recs = traffic(50, T0, seed=1) + traffic(30, T0 + timedelta(hours=1), seed=2)
    written = write_records(tmp_path, recs)
    assert sorted(p.parent.name for p in written) == ["hour=2026-11-29T10", "hour=2026-11-29T11"]
    assert not list(tmp_path.rglob("*.tmp"))
    (tmp_path / "hour=2026-11-29T10" / "part-0-broken.parquet").write_bytes(written[0].read_bytes()[:200])
    w = read_window(tmp_path, T0, T0 + timedelta(hours=1))
    assert len(w.frame) == 50 and w.files == 2 and len(w.skipped) == 1 and "broken" in w.skipped[0]
    assert len(read_window(tmp_path).frame) == 80
    assert np.allclose(
        w.frame.sort_values("request_id")["latency_ms"].iloc[0],
        sorted(recs[:50], key=lambda r: r["request_id"])[0]["latency_ms"],
        rtol=1e-6,
    )


def test_writer_batches_off_the_caller_and_counts_what_it_cannot_write(tmp_path):
    writer = InferenceLogWriter(tmp_path / "logs", batch=40, flush_s=0.2)
    start = time.perf_counter()
    writer.append(traffic(100, T0, seed=3))
    assert time.perf_counter() - start < 0.5  # enqueued, not written, on the caller's time
    writer.close()
    assert writer.written == 100 and len(read_window(tmp_path / "logs").frame) == 100
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the log folder should be")
    drops = []
    bad = InferenceLogWriter(blocked / "logs", batch=10, flush_s=0.1, on_drop=lambda r, n: drops.append((r, n)))
    bad.append(traffic(25, T0, seed=4))
    bad.close()
    assert bad.written == 0 and bad.dropped == {"write_failed": 25} and sum(n for _, n in drops) == 25
    full = InferenceLogWriter(tmp_path / "full", max_queue=5, flush_s=30)
    full._stop.set()  # noqa: SLF001 - a stopped thread: nothing drains the queue
    full._thread.join()
    full.append(traffic(8, T0, seed=5))
    assert full.dropped == {"queue_full": 3}


SETTINGS = MonitoringSettings(
    min_records=100, embedding_method="distance", embedding_threshold=0.02, value_threshold=0.2
)


def _frame(recs):
    import pandas as pd

    return pd.DataFrame(recs)


def test_drift_flags_a_moved_embedding_and_stays_quiet_on_the_same_traffic():
    ref = _frame(traffic(800, T0, seed=10))
    same = drift.evaluate(_frame(traffic(800, T0, seed=11)), ref, SETTINGS)
    assert same.enough and same.drifted == [], [(s.name, s.score) for s in same.signals]
    moved = drift.evaluate(_frame(traffic(800, T0, seed=12, text_shift=1.5)), ref, SETTINGS)
    assert [s.name for s in moved.drifted] == ["query_text"]
    assert {s.name: s.drifted for s in moved.signals}["query_image"] is None  # no image queries: not enough data
    # a shift five times as strong in a window too small to judge: no signal drifts, and the window starts nothing
    few = drift.evaluate(_frame(traffic(50, T0, seed=13, text_shift=5)), ref, SETTINGS)
    assert few.drifted == [] and all(s.drifted is None for s in few.signals)
    decided = _decide(few, [], T0)
    assert decided.status == "not enough data" and not decided.retrain
    assert not few.enough


def test_a_signal_with_too_few_rows_in_a_full_window_is_not_judged():
    """800 records, but only about 40 text queries, shifted hard: the text-query signal is "not enough data"
    (neither drift nor quiet), while the signals with enough rows are judged."""
    ref = _frame(traffic(800, T0, seed=10))
    sparse = traffic(800, T0, seed=14, text_shift=5, p=(0.55, 0.2, 0.05, 0.2))
    assert 10 < sum(r["kind"] == "text" for r in sparse) < SETTINGS.min_records
    result = drift.evaluate(_frame(sparse), ref, SETTINGS)
    by_name = {s.name: s for s in result.signals}
    assert result.enough and by_name["query_text"].drifted is None and by_name["query_text"].score is None
    assert "query_text" not in [s.name for s in result.drifted]
    assert by_name["user_vector"].drifted is False  # judged, and the same population


def _bridged(recs: list[dict], every: int) -> list[dict]:
    """Every ``every``-th text query made a one-space query into the image space (``text>image``): the same
    text vector, its top similarity in the other space (lower: here 3 below)."""
    for n, r in enumerate(x for x in recs if x["kind"] == "text"):
        if n % every == 0:
            r["kind"], r["scores"] = "text>image", [s - 3.0 for s in r["scores"]]
    return recs


def test_one_space_queries_are_compared_by_their_vectors_and_by_their_score_with_their_own_kind_only():
    """A reference of plain text queries stands in for ``text>image`` ones by their text vectors, never by
    their top similarity, which lies in the image space: a window of both kinds from the same population is
    quiet, its score signal over the ``text`` rows alone; a window of moved ``text>image`` queries drifts
    by its vectors, its score not judged (nothing of its kind to compare with)."""
    mix = (0.3, 0.1, 0.5, 0.1)
    ref = _frame(traffic(800, T0, seed=10, p=mix))
    window = _bridged(traffic(800, T0, seed=11, p=mix), every=2)
    kinds = pd.Series([r["kind"] for r in window]).value_counts()
    assert min(kinds["text"], kinds["text>image"]) >= SETTINGS.min_records
    result = drift.evaluate(_frame(window), ref, SETTINGS)
    by = {s.name: s for s in result.signals}
    assert by["query_text"].rows == kinds["text"] + kinds["text>image"] and by["query_text"].drifted is False
    assert by["query_score"].rows == kinds["text"] and by["query_score"].drifted is False
    assert result.drifted == [], [(s.name, s.score) for s in result.signals]

    moved = drift.evaluate(_frame(_bridged(traffic(800, T0, seed=12, p=mix, text_shift=1.5), every=1)), ref, SETTINGS)
    by = {s.name: s for s in moved.signals}
    assert [s.name for s in moved.drifted] == ["query_text"] and by["query_text"].rows > SETTINGS.min_records
    assert by["query_score"].drifted is None and by["query_score"].rows == 0


def _result(drifted: list[str], evaluated: int = 6, enough: bool = True) -> drift.DriftResult:
    names = list(drift.VALUE_SIGNALS) + list(drift.EMBEDDING_SIGNALS)
    r = drift.DriftResult(records=500 if enough else 10, enough=enough)
    r.signals = [drift.Signal(n, 1.0 if n in drifted else 0.0, 0.5, n in drifted, 500, "m") for n in names[:evaluated]]
    return r


def _decide(result, history, now, **over):
    s = MonitoringSettings(**{"cooldown_h": 24, **over})
    return policy.decide(result, history, s, now=now, window=(now - timedelta(hours=1), now), model_version="v1")


def test_policy_fires_on_drift_never_on_too_little_data_and_debounces():
    assert _decide(_result([], enough=False), [], T0).status == "not enough data"
    assert not _decide(_result([], enough=False), [], T0).retrain
    assert _decide(_result(["top_score"]), [], T0).status == "quiet"  # 1 of 6 signals: under the share
    fired = _decide(_result(["user_vector"], evaluated=8), [], T0)
    assert fired.retrain and "user_vector" in fired.reason
    assert _decide(_result(["top_score", "query_score", "popularity"]), [], T0).retrain  # half the signals
    again = _decide(_result(["user_vector"], evaluated=8), [fired], T0 + timedelta(hours=2))
    assert not again.retrain and again.debounced and "debounced" in again.reason
    later = _decide(_result(["user_vector"], evaluated=8), [fired, again], T0 + timedelta(hours=25))
    assert later.retrain
    first = _decide(_result(["user_vector"], evaluated=8), [], T0, consecutive=2)
    assert first.status == "drift" and not first.retrain
    assert _decide(_result(["user_vector"], evaluated=8), [first], T0 + timedelta(hours=1), consecutive=2).retrain


def test_decisions_round_trip_and_a_bad_line_is_skipped(tmp_path):
    d = _decide(_result(["user_vector"], evaluated=8), [], T0)
    policy.record(tmp_path / "decisions.jsonl", d)
    with open(tmp_path / "decisions.jsonl", "a") as f:
        f.write("{not json\n")
    policy.record(tmp_path / "decisions.jsonl", d)
    back = policy.load_decisions(tmp_path / "decisions.jsonl")
    assert (
        len(back) == 2
        and back[0] == d
        and json.loads((tmp_path / "decisions.jsonl").read_text().splitlines()[0])["retrain"]
    )


def test_quality_from_feedback_matches_a_hand_count_and_orders_popularity_bias():
    from fusionrec.monitoring import quality

    rng = np.random.default_rng(0)
    popular, rare = [f"p{i}" for i in range(10)], [f"r{i}" for i in range(40)]
    # training data: every user touched the popular items, each rare item one user
    train = pd.DataFrame(
        [(f"u{u}", i) for u in range(30) for i in popular] + [(f"u{n % 30}", i) for n, i in enumerate(rare)],
        columns=["user", "item"],
    )

    def window(items_for):
        return pd.DataFrame(
            {
                "user": [f"u{u}" for u in range(30)],
                "kind": "user",
                "time": T0,
                "items": [items_for(u) for u in range(30)],
            }
        )

    # each user liked their first recommendation and one item never recommended: Recall@10 = 1/2 for all
    shown = window(lambda u: [rare[(u + j) % 40] for j in range(10)])
    feedback = pd.DataFrame(
        [(f"u{u}", rare[u % 40]) for u in range(30)] + [(f"u{u}", "elsewhere") for u in range(30)],
        columns=["user", "item"],
    )
    q = quality.evaluate(shown, feedback, train, k=10, min_users=20)
    assert q.users == 30 and q.values["recall"] == pytest.approx(0.5)
    assert 0 < q.values["ndcg"] <= 1
    popular_shown = window(lambda u: list(rng.permutation(popular)))
    assert (
        quality.evaluate(popular_shown, feedback, train, k=10).values["popularity_bias"] > q.values["popularity_bias"]
    )
    assert quality.evaluate(shown.head(10), feedback, train, k=10, min_users=20) is None  # too few users: none


def test_a_turn_never_takes_its_reference_from_the_traffic(tmp_path):
    from fusionrec.config import settings_from
    from fusionrec.monitoring.loop import run_once

    settings = settings_from(
        {
            "monitoring": {"folder": str(tmp_path), "min_records": 100},
            "serving": {"storage_uri": str(tmp_path / "no-registry")},
        }
    )
    write_records(tmp_path / "logs", traffic(600, T0 - timedelta(hours=1), seed=20))
    write_records(tmp_path / "logs", traffic(800, T0, seed=21, text_shift=2.0))
    out = run_once(settings, now=T0 + timedelta(hours=1), dashboard=False)
    # no model to read its reference from: nothing is compared, and the first traffic was not kept as one
    assert out.decision.status == "not enough data" and not out.decision.retrain
    assert "no reference for v0001" in out.decision.reason and "not in the registry" in out.decision.reason
    assert not (tmp_path / "reference").exists()


def test_log_hours_and_references_expire_after_the_retention(tmp_path):
    import os

    from fusionrec.monitoring.loop import expire

    settings = load_settings(
        env={
            "FUSIONREC__MONITORING__FOLDER": str(tmp_path / "m"),
            "FUSIONREC__MONITORING__RETENTION_DAYS": "7",
            "FUSIONREC__SERVING__STORAGE_URI": str(tmp_path / "registry"),
        }
    )
    now = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    logs = tmp_path / "m" / "logs"
    for hour in ("2026-11-20T10", "2026-11-24T11", "2026-11-30T09"):
        (logs / f"hour={hour}").mkdir(parents=True)
        (logs / f"hour={hour}" / "part-1.parquet").write_bytes(b"x")
    refs = tmp_path / "m" / "reference"  # the pinned query window: as private as the log it came from
    refs.mkdir(parents=True)
    old = (now - timedelta(days=10)).timestamp()
    for name in ("queries.parquet", "queries.json"):
        (refs / name).write_bytes(b"x")
        os.utime(refs / name, (old, old))
    (refs / "fresh.parquet").write_bytes(b"x")
    gone = expire(settings, now)
    assert sorted(p.name for p in logs.iterdir()) == ["hour=2026-11-30T09"]
    assert sorted(p.name for p in refs.iterdir()) == ["fresh.parquet"]
    assert len(gone) == 4
