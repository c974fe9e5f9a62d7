"""The CLI as a user runs it: help, synth, validate, bad input, exit codes."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def cli(*args, cwd=None):
    env = {**os.environ, "FUSIONREC_PROFILE": "local"}
    return subprocess.run([sys.executable, "-m", "fusionrec", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_help_lists_the_commands():
    r = cli("--help")
    assert r.returncode == 0
    for word in ("data", "privacy", "config"):
        assert word in r.stdout
    r = cli("data", "--help")
    assert "validate" in r.stdout and "synth" in r.stdout


def test_synth_then_validate(tmp_path):
    r = cli("data", "synth", "--users", "60", "--items", "100", "--seed", "2", "--out", str(tmp_path / "ds"), "--no-progress")
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
    r = subprocess.run([sys.executable, "-m", "fusionrec", "privacy", "redact"], input="mail me at a.b@example.com\n",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "mail me at <EMAIL_ADDRESS>"


def test_config_show_applies_env_overrides():
    env = {**os.environ, "FUSIONREC__VALIDATION__MAX_TEXT_CHARS": "123"}
    r = subprocess.run([sys.executable, "-m", "fusionrec", "config", "show"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["validation"]["max_text_chars"] == 123


def test_synth_to_trained_model_and_comparison(tmp_path):
    """The whole chain a user runs, on a small synthetic dataset: validate, embed, train twice, evaluate."""
    ds, v, e, m = (tmp_path / n for n in ("ds", "v", "e", "models"))
    steps = [
        ("data", "synth", "--users", "60", "--items", "40", "--seed", "4", "--out", str(ds), "--no-progress"),
        ("data", "validate", str(ds / "dataset.yaml"), "--out", str(v), "--no-progress"),
        ("embed", str(v), "--out", str(e), "--no-progress"),
        ("train", str(v), "--embeddings", str(e), "--models", str(m), "--epochs", "2", "--dim", "16", "--no-progress"),
    ]
    for args in steps:
        r = cli(*args)
        assert r.returncode == 0, (args, r.stderr[-2000:])
    first = json.loads(r.stdout[r.stdout.index("{"):])
    assert first["promoted"] and (m / "versions" / "v0001" / "model.safetensors").exists()
    r = cli("train", str(v), "--embeddings", str(e), "--models", str(m), "--epochs", "2", "--dim", "16", "--margin", "0.5",
            "--no-progress")
    second = json.loads(r.stdout[r.stdout.index("{"):])
    assert not second["promoted"] and "does not beat" in second["gate"]  # a 50% margin is out of reach
    assert json.loads((m / "champion.json").read_text())["version"] == "v0001"
    r = cli("evaluate", str(v), "--embeddings", str(e), "--out", str(tmp_path / "eval"), "--models", "fusion,mostpop,bpr_mf",
            "--epochs", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(results) == {"fusion", "mostpop", "bpr_mf"} and (tmp_path / "eval" / "comparison.png").exists()


def test_unknown_fusion_type_fails_before_any_computation(tmp_path):
    r = cli("train", str(tmp_path / "nowhere"), "--embeddings", str(tmp_path), "--models", str(tmp_path / "m"),
            "--fusion", "sum")
    assert r.returncode == 2 and "--fusion 'sum' is unknown" in r.stderr
