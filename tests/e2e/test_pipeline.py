"""The training pipeline on the KFP local runner, as an ML engineer runs it: one command from a dataset
contract to a champion served on loopback; a re-run from the step cache; a refusing gate; a broken dataset."""

import json
import os
import re
import shutil
import subprocess
import sys

import httpx
import pandas as pd
import pytest

pytestmark = pytest.mark.e2e


def pipeline(contract, registry, root, options, *extra):
    env = {**os.environ, "FUSIONREC_PROFILE": "local"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "fusionrec",
            "pipeline",
            "run",
            "--local",
            "--contract",
            str(contract),
            "--registry",
            str(registry),
            "--root",
            str(root),
            "--epochs",
            "3",
            "--dim",
            "16",
            *options,
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


@pytest.fixture(scope="module")
def run(synth_clean, tmp_path_factory, free_port):
    work = tmp_path_factory.mktemp("pipeline")
    ports = free_port(), free_port()
    options = [
        "--set",
        f"serving.predictor_port={ports[0]}",
        "--set",
        f"serving.transformer_port={ports[1]}",
        "--set",
        f"paths.artifacts={work / 'artifacts'}",
        "--set",
        f"paths.cache={work / 'cache'}",
    ]
    first = pipeline(synth_clean / "dataset.yaml", work / "models", work / "root", options)
    yield first, work, options, f"http://127.0.0.1:{ports[1]}"
    subprocess.run(
        [sys.executable, "-m", "fusionrec", "serve", "--stop"],
        capture_output=True,
        timeout=60,
        env={**os.environ, "FUSIONREC__PATHS__ARTIFACTS": str(work / "artifacts")},
    )


def _summary(r):
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout[r.stdout.rindex('{\n  "promoted"') :])  # the summary after the steps' logs


def _run_dirs(work):
    return sorted((work / "root").glob("fusionrec-training-*"))


def _ask(url, synth_clean, work):
    user = str(pd.read_parquet(synth_clean / "interactions.parquet")["user_id"].iloc[0])
    key = (work / "artifacts" / "serving" / "api.key").read_text().strip()  # the local service key, made at start
    answer = httpx.post(
        f"{url}/v1/models/fusionrec:predict",
        json={"instances": [{"user_id": user, "k": 5}]},
        timeout=30,
        headers={"authorization": f"Bearer {key}"},
    ).json()
    return answer["predictions"][0]


def test_one_command_ends_with_the_new_champion_served(run, synth_clean):
    first, work, _, url = run
    summary = _summary(first)
    assert summary["promoted"] is True and summary["gate"] == "no champion yet"
    assert summary["champion"] == "v0001" and summary["serving"] == url
    assert json.loads((work / "models" / "champion.json").read_text())["version"] == "v0001"
    pred = _ask(url, synth_clean, work)
    assert pred["model_version"] == "v0001" and len(pred["items"]) == 5 and not pred["fallback"]


def test_the_run_leaves_reports_that_render_in_the_ui(run, synth_clean):
    _, work, _, _ = run
    steps = _run_dirs(work)[0]
    assert {"validate", "collect", "features", "train", "evaluate", "gate", "register", "deploy"} <= {
        p.name for p in steps.iterdir()
    }
    assert "<html" in (steps / "validate" / "report").read_text().lower()
    table = (steps / "evaluate" / "comparison").read_text()
    names = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")][1:]
    assert names == ["fusion (candidate)", "mostpop", "bpr_mf", "cornac_bpr", "ease", "content_knn"]
    gallery = (steps / "gate" / "gallery").read_text()
    assert gallery.count("<h2>user ") == 4  # four sample users
    assert gallery.count("data:image/jpeg;base64,") >= 4 * 10  # pictures inlined: no file links in the UI
    assert "no champion yet" in gallery  # the first run has no champion to compare with
    assert (steps / "train" / "card").read_text().startswith("# fusionrec model candidate on `")
    assert "Gate: promote" in (steps / "gate" / "decision").read_text()


def test_a_rerun_reuses_the_cached_steps_and_a_refusing_gate_changes_nothing(run, synth_clean):
    _, work, options, url = run
    before = (work / "models" / "champion.json").read_bytes()
    again = pipeline(synth_clean / "dataset.yaml", work / "models", work / "root", options)
    summary = _summary(again)
    hits = set(re.findall(r"Task (\w+) cache hit", again.stderr + again.stdout))
    assert hits == {"validate", "embed", "collect", "features", "train", "evaluate"}
    from pipelines.training import code_digest

    assert [p.name for p in (work / "root" / ".kfp_cache").iterdir()] == [code_digest()]  # the cache of this code
    # the same model is not 1% better than itself: no new version, the champion file untouched
    assert summary["promoted"] is False and "does not beat it by the 1% margin" in summary["gate"]
    assert [p.name for p in (work / "models" / "versions").iterdir()] == ["v0001"]
    assert (work / "models" / "champion.json").read_bytes() == before
    latest = _run_dirs(work)[-1]
    assert not (latest / "register").exists() and not (latest / "deploy").exists()
    assert "keep the champion: nothing is registered or deployed" in (latest / "gate" / "decision").read_text()
    assert _ask(url, synth_clean, work)["model_version"] == "v0001"


def test_a_broken_dataset_stops_at_validation_and_publishes_nothing(run, synth_clean, tmp_path):
    _, work, options, url = run
    broken = tmp_path / "broken"
    shutil.copytree(synth_clean, broken)
    inter = pd.read_parquet(broken / "interactions.parquet")
    inter.loc[inter.index[::4], "rating"] = 9.0  # a quarter of the ratings out of range
    inter.to_parquet(broken / "interactions.parquet")
    before = (work / "models" / "champion.json").read_bytes()
    r = pipeline(broken / "dataset.yaml", work / "models", tmp_path / "root", options)
    assert r.returncode == 1
    assert "error: step 'validate' failed; nothing downstream of it ran" in r.stderr
    assert "checks over budget: interactions.rating_in_range (" in r.stderr
    (steps,) = (tmp_path / "root").glob("fusionrec-training-*")
    assert [p.name for p in steps.iterdir()] == ["validate"]  # no embedding, no training, no registration
    assert (work / "models" / "champion.json").read_bytes() == before
    assert _ask(url, synth_clean, work)["model_version"] == "v0001"
