"""One training spec, whole, from every entry point: every field set to a value that is not its default
arrives unchanged where the trainer reads it (issue 23: the TrainJob used to drop ``softmax``)."""

from __future__ import annotations

import json
import shlex

import pytest
from typer.testing import CliRunner

from fusionrec.train.request import TrainSpec

pytestmark = pytest.mark.unit

# every field away from its default (the test fails when a field is added without a value here)
ODD = TrainSpec(
    protocol="temporal",
    seed=7,
    modalities=("text",),
    fusion="concat",
    dim=24,
    epochs=3,
    ranking_head=True,
    softmax="sampled",
)


def test_the_odd_spec_sets_every_field_away_from_its_default():
    default = TrainSpec()
    assert [f for f in TrainSpec.model_fields if getattr(ODD, f) == getattr(default, f)] == []


@pytest.fixture
def trainer(monkeypatch):
    """What the trainer receives: the spec given to train_candidate and train_and_register (they run no training)."""
    import fusionrec.train.run as workflow

    got = []
    monkeypatch.setattr(workflow, "train_candidate", lambda d, e, spec, out, **kw: got.append(spec))
    monkeypatch.setattr(workflow, "train_and_register", lambda d, e, spec, models, **kw: got.append(spec))
    return got


def _train(args: list[str]):
    from fusionrec.cli import app

    res = CliRunner().invoke(app, ["train", *args])
    assert res.exit_code == 0, res.output
    return res


def test_fusionrec_train_takes_the_spec_whole_and_flags_over_it(trainer, tmp_path):
    _train(["data", "--embeddings", "emb", "--candidate", str(tmp_path / "c"), "--spec", ODD.model_dump_json()])
    (tmp_path / "spec.json").write_text(ODD.model_dump_json())
    _train(
        [
            "data",
            "--embeddings",
            "emb",
            "--models",
            str(tmp_path / "m"),
            "--spec",
            f"@{tmp_path / 'spec.json'}",
            "--epochs",
            "5",
            "--no-ranking-head",
        ]
    )
    assert trainer == [ODD, ODD.model_copy(update={"epochs": 5, "ranking_head": False})]
    from fusionrec.cli import app

    bad = CliRunner().invoke(
        app, ["train", "data", "--embeddings", "e", "--candidate", "c", "--spec", '{"softmax": 1}']
    )
    assert bad.exit_code != 0 and "softmax" in str(bad.exception)


def test_the_trainjob_carries_the_spec_the_trainer_reads(trainer):
    from fusionrec.platform.trainjob import render_trainjob

    job = render_trainjob(name="j", image="i", job_dir="/mnt/registry/jobs/j", spec=ODD.model_dump(mode="json"))
    args = job["spec"]["trainer"]["args"]
    assert args[:3] == ["-m", "fusionrec", "train"]
    _train(shlex.split(shlex.join(args[3:])))  # as the container's shell-free argv reaches the CLI
    assert trainer == [ODD]


def test_the_pipeline_commands_the_retrainer_and_the_schedule_pass_the_spec_whole(monkeypatch, tmp_path):
    import pipelines.training as training
    from monitoring.cli import app as monitor_app
    from pipelines.cli import app as pipeline_app

    seen = []

    class Run:
        promoted, reason, champion, pipeline_root, seconds, serving_url = False, "kept", None, tmp_path, 0.0, None

    def arrived(run, fields) -> dict:  # the run as run_local and submit see it: given whole, or as its fields
        return (
            run
            or training.TrainingRun.of(**{k: v for k, v in fields.items() if k in training.TrainingRun.model_fields})
        ).spec

    monkeypatch.setattr(
        training, "run_local", lambda run=None, **kw: seen.append(("run_local", arrived(run, kw))) or Run()
    )
    monkeypatch.setattr(
        training, "submit", lambda host, run=None, **kw: seen.append(("submit", arrived(run, kw))) or "run-1"
    )
    contract = "configs/datasets/movielens-100k-mm.yaml"
    spec = ODD.model_dump_json()
    for args in (
        ["run", "--local", "--contract", contract, "--modalities", "text", "--spec", spec, "--no-deploy"],
        ["submit", "--host", "http://kfp", "--contract", contract, "--modalities", "text", "--spec", spec],
    ):
        res = CliRunner().invoke(pipeline_app, args)
        assert res.exit_code == 0, res.output
    # the monitoring loop's retrainer, here and on a cluster
    from pipelines.monitoring import retrainer

    for host in (None, "http://kfp"):
        retrainer(
            host,
            {
                "contract": contract,
                "registry": str(tmp_path),
                "modalities": ["text"],
                "spec": json.loads(spec),
                "pipeline_root": str(tmp_path),
            },
        )(None)
    assert [TrainSpec.parse(**s) for _, s in seen] == [ODD] * 4
    assert [w for w, _ in seen] == ["run_local", "submit", "run_local", "submit"]
    # the monitor command builds the retrainer's spec from the same options
    built = {}
    monkeypatch.setattr("pipelines.monitoring.retrainer", lambda host, training_: built.update(training_) or None)
    res = CliRunner().invoke(
        monitor_app,
        [
            "run",
            "--contract",
            contract,
            "--spec",
            spec,
            "--epochs",
            "9",
            "--set",
            f"monitoring.folder={tmp_path / 'mon'}",
        ],
    )
    assert res.exit_code == 0, res.output
    assert TrainSpec.parse(**built["spec"]) == ODD.model_copy(update={"epochs": 9})


def test_the_schedule_hands_the_spec_whole_to_every_run_it_starts():
    from types import SimpleNamespace

    from pipelines.monitoring import schedule

    class Client:
        params = None

        def create_experiment(self, name):
            return SimpleNamespace(experiment_id="e")

        def list_recurring_runs(self, **kw):
            return SimpleNamespace(recurring_runs=[])

        def create_recurring_run(self, **kw):
            Client.params = kw["params"]
            return SimpleNamespace(recurring_run_id="r")

    schedule("http://kfp", image="img", training={"spec": ODD.model_dump(mode="json")}, client=Client())
    assert TrainSpec.parse(**Client.params["training"]["spec"]) == ODD


def test_the_schedule_command_builds_the_spec_from_its_options(monkeypatch):
    from monitoring.cli import app as monitor_app

    got = {}
    monkeypatch.setattr("pipelines.monitoring.schedule", lambda host, **kw: got.update(kw["training"]) or "r")
    res = CliRunner().invoke(
        monitor_app,
        ["schedule", "--host", "http://kfp", "--contract", "c.yaml", "--spec", ODD.model_dump_json(), "--dim", "32"],
    )
    assert res.exit_code == 0, res.output
    assert TrainSpec.parse(**got["spec"]) == ODD.model_copy(update={"dim": 32})


def test_the_retrainer_refuses_a_parameter_it_does_not_know_when_it_is_made():
    from fusionrec.errors import ConfigError
    from pipelines.monitoring import retrainer

    with pytest.raises(ConfigError, match="epochs"):  # a training field at the wrong level: not silently dropped
        retrainer(None, {"contract": "c.yaml", "registry": "r", "epochs": 3})
