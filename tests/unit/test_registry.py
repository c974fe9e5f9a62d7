"""The registry cannot lose or mix versions: locked allocation, folders made once, promotion by
compare-and-swap, idempotent registration, checksums, a damaged champion record."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from fusionrec.artifact import verify_checksums, write_checksums
from fusionrec.errors import DatasetError
from fusionrec.registry import (
    ChampionChanged,
    GateDecision,
    champion,
    judge,
    promote,
    register,
    register_judged,
)


def _candidate(folder: Path, weights: bytes, ndcg: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "metrics.json").write_text(json.dumps({"test": {"ndcg@20": ndcg}, "version": "candidate"}))
    return folder


def _register_many(args) -> list[str]:
    root, tag, n, start = args
    cands = [_candidate(Path(root) / "staging" / f"{tag}-{i}", f"{tag}-{i}".encode() * 1000, 0.1) for i in range(n)]
    while time.time() < start:  # both processes begin together, so that their allocations overlap
        pass
    return [register(root, cand).name for cand in cands]


def test_concurrent_registrations_get_distinct_versions_and_both_stay_intact(tmp_path):
    """Two processes registering at once used to get the same vNNNN, one replacing the other."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        start = time.time() + 3
        a, b = pool.map(_register_many, [(str(tmp_path), "a", 20, start), (str(tmp_path), "b", 20, start)])
    assert len(set(a) | set(b)) == 40
    for tag, versions in (("a", a), ("b", b)):
        for i, v in enumerate(versions):
            folder = tmp_path / "versions" / v
            assert (folder / "model.safetensors").read_bytes() == f"{tag}-{i}".encode() * 1000
            assert json.loads((folder / "metrics.json").read_text())["version"] == v
            verify_checksums(folder)


def _hold_the_lock(root: str, seconds: float, ready) -> None:
    from fusionrec.io import file_lock

    with file_lock(Path(root) / ".registry.lock"):
        ready.set()
        time.sleep(seconds)


def test_registration_waits_for_the_registry_lock(tmp_path):
    """Another process holds the registry's lock (it is allocating a version): a registration waits for it
    to be released instead of taking a number at the same time (the race above, made certain)."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_the_lock, args=(str(tmp_path), 2.0, ready))
    holder.start()
    try:
        assert ready.wait(60)
        t = time.perf_counter()
        register(tmp_path, _candidate(tmp_path / "c", b"weights", 0.1))
        waited = time.perf_counter() - t
    finally:
        holder.join(30)
    assert waited >= 1.0, f"registered after {waited:.2f} s while another process held the lock for 2 s"


def test_a_retried_registration_gets_its_version_back(tmp_path):
    cand = _candidate(tmp_path / "c", b"weights", 0.1)
    first = register(tmp_path, cand)
    assert register(tmp_path, cand) == first and len(list((tmp_path / "versions").iterdir())) == 1


def test_a_candidate_that_no_longer_wins_is_not_registered(tmp_path):
    best, _ = register_judged(tmp_path, _candidate(tmp_path / "c1", b"one", 0.30))
    assert champion(tmp_path) == best
    worse, decision = register_judged(tmp_path, _candidate(tmp_path / "c2", b"two", 0.20))
    assert worse is None and not decision.promoted and champion(tmp_path) == best
    assert [p.name for p in (tmp_path / "versions").iterdir()] == [best.name]


def test_promotion_is_a_compare_and_swap(tmp_path):
    v1, _ = register_judged(tmp_path, _candidate(tmp_path / "c1", b"one", 0.30))
    slow = judge(tmp_path, {"test": {"ndcg@20": 0.40}}, 0.01, challenger="slow")  # judged against v1 ...
    v2, _ = register_judged(tmp_path, _candidate(tmp_path / "c2", b"two", 0.50))  # ... then another run wins
    assert champion(tmp_path) == v2
    with pytest.raises(ChampionChanged, match="now v0002"):
        promote(tmp_path, v1, slow)
    with pytest.raises(ChampionChanged):
        register(tmp_path, _candidate(tmp_path / "c3", b"three", 0.40), champion_too=True, decision=slow)
    assert champion(tmp_path) == v2 and len(list((tmp_path / "versions").iterdir())) == 2


def test_a_changed_artifact_file_is_refused_at_load(tmp_path):
    folder = _candidate(tmp_path / "v", b"weights", 0.1)
    (folder / "index").mkdir()
    (folder / "index" / "image.faiss").write_bytes(b"index")
    write_checksums(folder)
    verify_checksums(folder)
    (folder / "index" / "image.faiss").write_bytes(b"tampered")
    with pytest.raises(DatasetError, match="index/image.faiss"):
        verify_checksums(folder)


@pytest.mark.parametrize("text", ["", "{", '{"version": "../../etc"}', '["v0001"]'])
def test_a_damaged_champion_record_is_a_clear_error(tmp_path, text):
    (tmp_path / "champion.json").write_text(text)
    with pytest.raises(DatasetError, match="champion"):
        champion(tmp_path)


def test_gate_decisions_name_the_champion_they_were_made_against(tmp_path):
    d = GateDecision(True, "v0001", None, "ndcg@20", 0.3, None, 0.01, "no champion yet")
    v1 = register(tmp_path, _candidate(tmp_path / "c", b"w", 0.3), champion_too=True, decision=d)
    assert champion(tmp_path) == v1


def test_a_changed_feast_registry_is_refused_before_serving_reads_it(tmp_path):
    from fusionrec.errors import ConfigError
    from fusionrec.features.store import REGISTRY_DIGEST, verify_registry
    from fusionrec.io import sha256_file as _sha256

    registry = tmp_path / "registry.db"
    registry.write_bytes(b"feast registry proto")
    verify_registry(tmp_path)  # no digest yet (written before digests): read as it is
    (tmp_path / REGISTRY_DIGEST).write_text(_sha256(registry))
    verify_registry(tmp_path)
    registry.write_bytes(b"feast registry proto, edited")
    with pytest.raises(ConfigError, match="changed since it was applied"):
        verify_registry(tmp_path)
