"""The training workflow that the CLI and the pipeline components share: Feast as the source of the
training set, candidates, the side-effect-free gate and registration."""

import json

import pytest
from safetensors.numpy import load_file

from fusionrec.features.tables import build_feature_tables
from fusionrec.registry import champion, judge, register
from fusionrec.train.request import TrainSpec
from fusionrec.train.run import train_candidate

pytestmark = pytest.mark.integration

SPEC = TrainSpec(epochs=2, dim=16, seed=3)


@pytest.fixture(scope="module")
def candidates(synth_validated_dir, synth_validated, synth_embeddings, synth_embeddings_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("candidates")
    features = root / "features"
    features.mkdir()
    build_feature_tables(synth_validated, synth_embeddings, features, 20)
    direct = train_candidate(
        synth_validated_dir, synth_embeddings_dir, SPEC, root / "direct", device="cpu", progress=False
    )
    feast = train_candidate(
        synth_validated_dir,
        synth_embeddings_dir,
        SPEC,
        root / "feast",
        device="cpu",
        features_dir=features,
        checkpoints=root / "ckpt",
        progress=False,
    )
    return direct, feast, root


def test_training_from_feast_equals_training_from_the_embeddings_bit_for_bit(candidates, synth_validated):
    """The training service's point-in-time frame carries every training row and every item's vectors:
    a model trained on it is the model trained on the embeddings folder, weight for weight."""
    direct, feast, root = candidates
    assert (direct.source, feast.source) == ("embeddings", "feast")
    assert feast.feast["frame_rows"] == feast.metrics["split"]["train"] == direct.metrics["split"]["train"]
    a, b = load_file(str(direct.path / "model.safetensors")), load_file(str(feast.path / "model.safetensors"))
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
    assert feast.test == direct.test
    assert not (root / "ckpt" / feast.run_id).exists()  # checkpoints go once the candidate is written


def test_the_feature_folder_is_read_not_written(candidates):
    """Training builds its own Feast registry: the features folder (an input artifact) gains no file."""
    _, _, root = candidates
    assert not (root / "features" / "registry.db").exists()


def test_judge_writes_nothing_and_register_numbers_the_candidate(candidates, tmp_path):
    direct, feast, _ = candidates
    first = judge(tmp_path, direct.metrics, margin=0.01)
    assert first.promoted and first.reason == "no champion yet" and not (tmp_path / "champion.json").exists()
    v1 = register(tmp_path, direct.path, champion_too=True, decision=first)
    assert v1.name == "v0001" and champion(tmp_path) == v1
    assert json.loads((v1 / "metrics.json").read_text())["version"] == "v0001"
    assert (v1 / "model_card.md").read_text().startswith("# fusionrec model v0001 on `")
    # the same model again is not 1% better: the gate refuses and only an explicit register adds a version
    again = judge(tmp_path, feast.metrics, margin=0.01)
    assert not again.promoted and again.champion_before == "v0001"
    assert again.reason.endswith("does not beat it by the 1% margin")
    v2 = register(tmp_path, feast.path)
    assert v2.name == "v0002" and champion(tmp_path) == v1


def test_register_refuses_a_folder_that_is_not_an_artifact(tmp_path):
    from fusionrec.errors import DatasetError

    (tmp_path / "junk").mkdir()
    with pytest.raises(DatasetError, match="not a model artifact"):
        register(tmp_path / "reg", tmp_path / "junk")
    assert not (tmp_path / "reg" / "versions").exists() or not any((tmp_path / "reg" / "versions").iterdir())


def test_a_bad_spec_names_the_field_and_the_value():
    from fusionrec.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        TrainSpec.parse(protocol="weekly")
    assert str(err.value).startswith(
        "training spec: protocol: Input should be 'random', 'temporal', 'cold_item' or 'given' (got 'weekly')"
    )
    assert TrainSpec.parse(modalities="text, image").modalities == ("text", "image")
    with pytest.raises(ConfigError, match=r"softmax: Input should be 'auto', 'full' or 'sampled' \(got 'partial'\)"):
        TrainSpec.parse(softmax="partial")


def test_the_trainjob_command_under_torchrun_writes_one_candidate_from_rank_0(
    candidates, synth_validated_dir, synth_embeddings_dir, tmp_path
):
    """What a Kubeflow Trainer TrainJob runs on each node, here on two CPU processes (gloo)."""
    import os
    import subprocess
    import sys

    _, _, root = candidates
    out = tmp_path / "candidate"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "fusionrec",
            "train",
            str(synth_validated_dir),
            "--embeddings",
            str(synth_embeddings_dir),
            "--features",
            str(root / "features"),
            "--candidate",
            str(out),
            "--epochs",
            "2",
            "--dim",
            "16",
            "--seed",
            "3",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "FUSIONREC_PROFILE": "local"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('"candidate":') == 1  # rank 1 trained its share and wrote nothing
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["version"] == "candidate" and metrics["source"] == "feast"
    assert not any((tmp_path / "checkpoints").glob("*"))  # the run's checkpoints go once the candidate is written


def test_with_feast_the_item_vectors_come_from_feast_not_the_embeddings_folder(
    synth_validated_dir, synth_validated, synth_embeddings, synth_embeddings_dir, tmp_path
):
    """Feast's tables are built from other text vectors than the embeddings folder holds: the model trained
    with ``features_dir`` carries Feast's vectors as its frozen item features, and not the folder's."""
    import dataclasses

    import numpy as np

    moved = dict(synth_embeddings)
    text = moved["text"]
    moved["text"] = dataclasses.replace(text, values=np.roll(text.values, 1, axis=0))  # each item another's vector
    features = tmp_path / "features"
    features.mkdir()
    build_feature_tables(synth_validated, moved, features, 20)
    spec = TrainSpec(epochs=1, dim=8, seed=3)
    made = train_candidate(
        synth_validated_dir,
        synth_embeddings_dir,
        spec,
        tmp_path / "c",
        device="cpu",
        features_dir=features,
        progress=False,
    )
    got = load_file(str(made.path / "model.safetensors"))["feat_text"]
    mask = text.mask & np.roll(text.mask, 1)
    assert mask.sum() > 10
    np.testing.assert_allclose(got[mask], moved["text"].values[mask], atol=1e-6)
    assert not np.allclose(got[mask], text.values[mask], atol=1e-3)
