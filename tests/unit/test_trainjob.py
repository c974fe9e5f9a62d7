"""Distributed training on a cluster: the TrainJob against Kubeflow Trainer's own CRD schema, its
command, the pipeline option that launches it, and the wait on its conditions."""

import json
from pathlib import Path

import pytest
import yaml

from fusionrec.config import manifests_dir, read_yaml
from fusionrec.platform.bundle import CrdSchemas
from fusionrec.platform.trainjob import TrainJobFailed, render_trainjob, run_trainjob
from fusionrec.train.request import TrainSpec

pytestmark = pytest.mark.unit
CRD = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "crds" / "trainer.kubeflow.org_trainjobs.yaml"


@pytest.fixture(scope="module")
def validator():
    if not CRD.exists():
        pytest.skip(f"the Trainer CRD is absent: {CRD} (../shared/schemas/crds)")
    return CrdSchemas(CRD.parent)


def _errors(validator, obj):
    return validator.errors(obj)


def test_the_manifest_and_a_rendered_job_pass_the_trainjob_crd(validator):
    assert _errors(validator, read_yaml(manifests_dir() / "base" / "training" / "trainjob.yaml")) == []
    job = render_trainjob(
        name="fusionrec-train-ab12",
        image="registry.example/fusionrec@sha256:" + "b" * 64,
        job_dir="/mnt/registry/jobs/fusionrec-train-ab12",
        spec={"epochs": 30, "fusion": "concat"},
        nodes=4,
        gpus_per_node=8,
        namespace="ml",
    )
    assert _errors(validator, job) == []


def test_the_validator_refuses_what_the_api_server_would_prune(validator):
    job = render_trainjob(name="x", image="i", job_dir="/mnt/registry/jobs/x", spec={})
    job["spec"]["trainer"]["numGPUs"] = 4  # not a TrainJob field
    assert any("numGPUs" in e for e in _errors(validator, job))


def test_the_job_runs_the_same_trainer_under_torchrun_and_writes_a_candidate():
    job = render_trainjob(
        name="run-7",
        image="img",
        job_dir="/mnt/registry/jobs/run-7/",
        spec={"protocol": "temporal", "seed": 3, "modalities": "text,image"},
        nodes=3,
        gpus_per_node=2,
    )
    t = job["spec"]["trainer"]
    assert t["command"] == ["torchrun"] and (t["numNodes"], t["numProcPerNode"]) == (3, 2)
    assert t["args"][:4] == ["-m", "fusionrec", "train", "/mnt/registry/jobs/run-7/clean"]
    args = dict(zip(t["args"][4::2], t["args"][5::2]))
    assert args["--features"] == "/mnt/registry/jobs/run-7/features"  # the training set comes from Feast
    assert args["--candidate"] == "/mnt/registry/jobs/run-7/candidate"  # no registry: the pipeline's gate decides
    assert json.loads(args["--spec"]) == {
        **TrainSpec().model_dump(mode="json"),
        "protocol": "temporal",
        "seed": 3,
        "modalities": ["text", "image"],
    }  # the spec whole, never re-spelled
    assert t["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "2"
    pod = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    spec = pod["template"]["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert {"name": "registry", "persistentVolumeClaim": {"claimName": "fusionrec-models"}} in spec["volumes"]


def test_a_cpu_job_requests_no_gpu_and_a_bad_spec_is_refused():
    from fusionrec.errors import ConfigError

    job = render_trainjob(name="c", image="i", job_dir="/j", spec={}, nodes=2, gpus_per_node=0)
    assert "nvidia.com/gpu" not in job["spec"]["trainer"]["resourcesPerNode"]["limits"]
    with pytest.raises(ConfigError, match="fusion"):
        render_trainjob(name="c", image="i", job_dir="/j", spec={"fusion": "sum"})


class _Api:
    """What kubernetes.client.CustomObjectsApi answers (no API server runs here): the given conditions in turn."""

    def __init__(self, *statuses):
        self.statuses, self.created = list(statuses), []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.created.append((group, version, namespace, plural, body["metadata"]["name"]))

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        return {"status": {"conditions": self.statuses.pop(0)}}


def test_waiting_on_the_job_follows_its_conditions():
    job = render_trainjob(name="w", image="i", job_dir="/j", spec={})
    api = _Api([], [{"type": "Created", "status": "True"}], [{"type": "Complete", "status": "True"}])
    assert run_trainjob(api, job, namespace="ml", poll_s=0) == "Complete"
    assert api.created == [("trainer.kubeflow.org", "v1alpha1", "ml", "trainjobs", "w")]
    failing = _Api([{"type": "Failed", "status": "True", "message": "node 1: OOMKilled"}])
    with pytest.raises(TrainJobFailed, match="TrainJob ml/w failed: node 1: OOMKilled"):
        run_trainjob(failing, job, namespace="ml", poll_s=0)


def test_the_pipeline_can_launch_the_trainjob_instead_of_training_in_the_step(tmp_path):
    from pipelines.training import Target, compile_pipeline

    path = compile_pipeline(tmp_path / "p.yaml", Target(cluster=True, trainer="trainjob", nodes=4, gpus=8))
    spec, platform = yaml.safe_load_all(path.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert "train-distributed" in tasks and "train" not in tasks
    params = tasks["train-distributed"]["inputs"]["parameters"]
    assert params["nodes"]["runtimeValue"]["constant"] == 4 and params["gpus_per_node"]["runtimeValue"]["constant"] == 8
    launcher = spec["deploymentSpec"]["executors"]["exec-train-distributed"]["container"]["resources"]
    assert "accelerator" not in launcher  # the GPUs are the TrainJob's, not the launching step's
    mounts = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-distributed"]["pvcMount"]
    assert mounts[0]["mountPath"] == "/mnt/registry"


def test_a_trainjob_needs_a_cluster():
    from fusionrec.errors import ConfigError
    from pipelines.training import Target, build_pipeline

    with pytest.raises(ConfigError, match="a TrainJob needs a cluster"):
        build_pipeline(Target(cluster=False, trainer="trainjob"))


def test_the_clusters_template_from_the_bundles_configmap_wins_over_the_images(tmp_path, monkeypatch):
    """The pipeline step mounts the ConfigMap fusionrec-trainjob at CLUSTER_TEMPLATE: an SRE's change there
    (another runtime, other node resources) reaches the next TrainJob without a new image."""
    import fusionrec.platform.trainjob as trainjob

    template = read_yaml(manifests_dir() / "base" / "training" / "trainjob.yaml")
    template["spec"]["runtimeRef"]["name"] = "torch-distributed-a100"
    mounted = tmp_path / "trainjob.yaml"
    mounted.write_text(yaml.safe_dump(template))
    assert (
        render_trainjob(name="x", image="i", job_dir="/j", spec={})["spec"]["runtimeRef"]["name"] == "torch-distributed"
    )
    monkeypatch.setattr(trainjob, "CLUSTER_TEMPLATE", mounted)
    assert (
        render_trainjob(name="x", image="i", job_dir="/j", spec={})["spec"]["runtimeRef"]["name"]
        == "torch-distributed-a100"
    )
