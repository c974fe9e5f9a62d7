"""The CLI as a user runs it: help, synth, validate, bad input, exit codes."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def cli(*args, cwd=None):
    env = {**os.environ, "FUSIONREC_PROFILE": "local"}
    return subprocess.run(
        [sys.executable, "-m", "fusionrec", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_help_lists_the_commands():
    r = cli("--help")
    assert r.returncode == 0
    for word in ("data", "privacy", "config"):
        assert word in r.stdout
    r = cli("data", "--help")
    assert "validate" in r.stdout and "synth" in r.stdout


def test_synth_then_validate(tmp_path):
    r = cli(
        "data",
        "synth",
        "--users",
        "60",
        "--items",
        "100",
        "--seed",
        "2",
        "--out",
        str(tmp_path / "ds"),
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout[: r.stdout.rindex("}") + 1])
    assert summary["items"] == 100 and summary["interactions"] == 60 * 30
    r = cli("data", "validate", str(tmp_path / "ds" / "dataset.yaml"), "--out", str(tmp_path / "v"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "v" / "report.html").exists() and (tmp_path / "v" / "interactions.parquet").exists()


def test_malformed_contract_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n  format: raw_catalogue\n")
    r = cli("data", "validate", str(bad), "--out", str(tmp_path / "v"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: malformed YAML")
    assert not (tmp_path / "v").exists()


def test_over_budget_exits_1_with_the_failing_check(tmp_path):
    ds = tmp_path / "ds"
    r = cli("data", "synth", "--users", "30", "--items", "20", "--out", str(ds), "--no-progress")
    assert r.returncode == 0
    ratings = ds / "interactions.parquet"
    import pandas as pd

    frame = pd.read_parquet(ratings)
    frame["rating"] = "high"
    frame.to_parquet(ratings)
    r = cli("data", "validate", str(ds / "dataset.yaml"), "--out", str(tmp_path / "v"), "--no-progress")
    assert r.returncode == 1
    assert "column 'rating'" in r.stderr and "'high'" in r.stderr and "[interactions.rating_is_number]" in r.stderr
    assert not (tmp_path / "v").exists() and (tmp_path / "v.rejected" / "report.html").exists()


def test_privacy_redact_reads_stdin():
    r = subprocess.run(
        [sys.executable, "-m", "fusionrec", "privacy", "redact"],
        input="mail me at a.b@example.com\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stdout.strip() == "mail me at <EMAIL_ADDRESS>"


def test_config_show_applies_env_overrides():
    env = {**os.environ, "FUSIONREC__VALIDATION__MAX_TEXT_CHARS": "123"}
    r = subprocess.run(
        [sys.executable, "-m", "fusionrec", "config", "show"], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0 and json.loads(r.stdout)["validation"]["max_text_chars"] == 123


def _positives(validated):
    import pandas as pd

    inter = pd.read_parquet(validated / "interactions.parquet")
    return inter[inter["label"] > 0]


def test_synth_to_trained_model_features_and_comparison(tmp_path):
    """The whole chain a user runs, on a small synthetic dataset: validate, embed, features, train twice,
    evaluate against every baseline."""
    import numpy as np
    import pandas as pd

    ds, v, e, f, m = (tmp_path / n for n in ("ds", "v", "e", "features", "models"))
    steps = [
        ("data", "synth", "--users", "150", "--items", "100", "--seed", "4", "--out", str(ds), "--no-progress"),
        ("data", "validate", str(ds / "dataset.yaml"), "--out", str(v), "--no-progress"),
        ("embed", str(v), "--out", str(e), "--no-progress"),
    ]
    for args in steps:
        r = cli(*args)
        assert r.returncode == 0, (args, r.stderr[-2000:])

    # embed: one matrix per modality, its mask, and what was masked and why
    meta = json.loads((e / "embeddings.json").read_text())["modalities"]
    assert {n: meta[n]["dim"] for n in meta} == {"text": 384, "image": 1280, "audio": 16, "tabular": 4}  # price, year
    for name, info in meta.items():
        values, mask = np.load(e / f"{name}.npy"), np.load(e / f"{name}.mask.npy")
        assert (
            values.shape == (100, info["dim"])
            and info["present"] == int(mask.sum())
            and np.isfinite(values[mask]).all()
        )
    masked = pd.read_csv(e / "masked.csv")
    assert list(masked.columns) == ["item_id", "modality", "reason"] and masked.empty  # a clean synthetic set
    items = pd.read_parquet(v / "items.parquet")
    gone = items["item_id"].astype(str).iloc[0]
    items.loc[0, ["title", "description"]] = None  # an item without any text: masked with its reason
    items.to_parquet(v / "items.parquet")
    r = cli("embed", str(v), "--out", str(e), "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    masked = pd.read_csv(e / "masked.csv", dtype=str)
    assert masked[["item_id", "modality"]].values.tolist() == [[gone, "text"]] and masked["reason"].iloc[0]
    assert (
        not np.load(e / "text.mask.npy")[0]
        and json.loads((e / "embeddings.json").read_text())["modalities"]["text"]["present"] == 99
    )

    # features: offline tables, the registry, the online store; the latest history of a user comes back online
    for args in (
        ("features", "build", str(v), "--embeddings", str(e), "--out", str(f)),
        ("features", "apply", "--data-dir", str(f)),
        ("features", "materialize", "--data-dir", str(f)),
    ):
        r = cli(*args)
        assert r.returncode == 0, (args, r.stderr[-2000:])
    assert "applied to the sqlite profile" in r.stdout or "materialised up to" in r.stdout
    from fusionrec.config import FeatureSettings
    from fusionrec.features.store import feature_store, online_user_features

    pos = _positives(v)
    users = pd.read_parquet(v / "users.parquet").set_index("user_idx")["user_id"].astype(str)
    item_ids = items.set_index("item_idx")["item_id"].astype(str)
    mine = pos[pos["user_idx"] == 0].sort_values("timestamp", kind="stable")
    got = online_user_features(feature_store(FeatureSettings(), f), [users[0]]).history[0]
    assert got == item_ids[mine["item_idx"]].tolist()[-FeatureSettings().history_length :]

    # train: a versioned artifact with its curves, the seen items of every user and the encoders it needs
    r = cli(
        "train", str(v), "--embeddings", str(e), "--models", str(m), "--epochs", "2", "--dim", "16", "--no-progress"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    first = json.loads(r.stdout[r.stdout.index("{") :])
    art = m / "versions" / "v0001"
    assert first["promoted"] and (art / "model.safetensors").exists()
    assert (art / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    seen = np.load(art / "seen.npz")
    for u in (0, 7, 31):
        expected = sorted(set(pos.loc[pos["user_idx"] == u, "item_idx"]))
        assert seen["indices"][seen["indptr"][u] : seen["indptr"][u + 1]].tolist() == expected
    encoders = json.loads((art / "encoders.json").read_text())
    assert {n: encoders[n]["identity"] for n in encoders} == {n: meta[n]["identity"] for n in meta}
    assert not (m / "checkpoints").exists() or not any((m / "checkpoints").iterdir())  # cleaned up after the run

    r = cli(
        "train",
        str(v),
        "--embeddings",
        str(e),
        "--models",
        str(m),
        "--epochs",
        "2",
        "--dim",
        "16",
        "--margin",
        "0.5",
        "--no-progress",
    )
    second = json.loads(r.stdout[r.stdout.index("{") :])
    assert not second["promoted"] and "does not beat" in second["gate"]  # a 50% margin is out of reach
    assert json.loads((m / "champion.json").read_text())["version"] == "v0001"

    # evaluate: every model on one split, each metric a probability, the fused model above popularity
    names = ["fusion", "mostpop", "bpr_mf", "cornac_bpr", "cornac_vbpr", "ease", "content_knn"]
    r = cli(
        "evaluate",
        str(v),
        "--embeddings",
        str(e),
        "--out",
        str(tmp_path / "eval"),
        "--models",
        ",".join(names),
        "--epochs",
        "8",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert list(results) == names
    for name, metrics in results.items():
        for key in ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "hit@20", "coverage"):
            assert 0.0 <= metrics[key] <= 1.0, (name, key, metrics[key])
        assert metrics["recall@10"] <= metrics["recall@20"] <= metrics["hit@20"]
    assert results["fusion"]["ndcg@20"] > results["mostpop"]["ndcg@20"]
    assert results["mostpop"]["coverage"] < results["fusion"]["coverage"]  # popularity shows a few items to all
    table = (tmp_path / "eval" / "comparison.md").read_text()
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")][1:] == names
    assert (tmp_path / "eval" / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_fusion_type_fails_before_any_computation(tmp_path):
    r = cli(
        "train",
        str(tmp_path / "nowhere"),
        "--embeddings",
        str(tmp_path),
        "--models",
        str(tmp_path / "m"),
        "--fusion",
        "sum",
    )
    assert r.returncode == 2 and "training spec: fusion: Input should be 'gated' or 'concat' (got 'sum')" in r.stderr


def test_a_diverged_run_exits_1_with_its_diagnosis_and_leaves_the_champion(tmp_path, synth_validated, synth_embeddings):
    import numpy as np

    from fusionrec.encoders.pipeline import save_embeddings

    data, emb, models = tmp_path / "data", tmp_path / "emb", tmp_path / "models"
    data.mkdir()
    emb.mkdir()
    synth_validated.save(data)
    save_embeddings(synth_embeddings, synth_validated.items["item_id"].to_numpy(), emb)
    train = (
        "train",
        str(data),
        "--embeddings",
        str(emb),
        "--models",
        str(models),
        "--epochs",
        "1",
        "--dim",
        "16",
        "--modalities",
        "text,image",
        "--no-progress",
    )
    r = cli(*train)
    assert r.returncode == 0, r.stderr[-2000:]
    champion = (models / "champion.json").read_text()
    image = np.load(emb / "image.npy")
    image[synth_embeddings["image"].mask] = np.nan  # poisoned vectors on items that have an image
    np.save(emb / "image.npy", image)
    r = cli(*train)
    assert r.returncode == 1
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: training diverged: loss nan at epoch 1, step 0; "
            "non-finite input features in ['image']; no artifact written"
        )
    )
    assert sorted(p.name for p in (models / "versions").iterdir()) == ["v0001"]  # no artifact, no half-written one
    assert (models / "champion.json").read_text() == champion  # production untouched


def test_deploy_render_then_validate_from_the_command_line(tmp_path):
    import yaml

    repo = __import__("pathlib").Path(__file__).resolve().parents[2]
    bundle = tmp_path / "bundle.yaml"
    r = cli("deploy", "render", "--overlay", "dev", "--model-version", "v0007", "--gpu", "1", "--out", str(bundle))
    assert r.returncode == 0 and f"wrote {bundle}" in r.stdout, r.stderr[-2000:]
    (isvc,) = [d for d in yaml.safe_load_all(bundle.read_text()) if d and d["kind"] == "InferenceService"]
    pred = isvc["spec"]["predictor"]
    assert pred["model"]["storageUri"] == "pvc://fusionrec-models/versions/v0007"
    assert pred["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {c["image"] for c in isvc["spec"]["transformer"]["containers"]} == {"localhost/fusionrec-serving:0.1.0-cpu"}
    out = tmp_path / "isvc.yaml"
    out.write_text(yaml.safe_dump(isvc))
    r = cli("deploy", "validate", str(out), str(repo / "manifests" / "base" / "serving" / "servingruntime.yaml"))
    assert r.returncode == 0 and r.stdout.count(": ok") == 2, r.stdout
    pred["minReplicas"] = "two"
    pred["model"]["storageURI"] = pred["model"].pop("storageUri")
    out.write_text(yaml.safe_dump(isvc))
    r = cli("deploy", "validate", str(out))
    assert r.returncode == 1 and f"{out}: 2 problem(s)" in r.stdout
    assert "minReplicas: expected int" in r.stdout and "storageURI: unknown field" in r.stdout
    r = cli("deploy", "apply", "--canary", "150", "--model-version", "v0007")
    assert r.returncode == 2 and "less than or equal to 100" in r.stderr  # refused before the cluster is asked
