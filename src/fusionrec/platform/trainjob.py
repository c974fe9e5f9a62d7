"""Distributed training on a cluster: a Kubeflow Trainer ``TrainJob`` that runs ``fusionrec train`` under
torchrun across nodes and GPUs, rendered from its template and run to completion. The template is the
cluster's own (the bundle's ConfigMap ``fusionrec-trainjob``, mounted into the pipeline step at
:data:`CLUSTER_TEMPLATE`) where it is mounted, else the image's ``manifests/base/training/trainjob.yaml``.

The job reads its inputs from, and rank 0 writes the candidate artifact to, a folder on the registry
volume (the PVC ``cluster.registry_pvc`` of the settings), which the pipeline's step also mounts.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

from fusionrec.config import ClusterSettings, manifests_dir, read_yaml
from fusionrec.errors import ConfigError, FusionRecError

log = logging.getLogger(__name__)
GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
CLUSTER_TEMPLATE = Path("/etc/fusionrec/trainjob/trainjob.yaml")


class TrainJobFailed(FusionRecError):
    """The TrainJob failed or did not finish in time; no candidate was written."""

    exit_code = 1


def render_trainjob(
    *,
    name: str,
    image: str,
    job_dir: str,
    spec: dict[str, Any],
    nodes: int = 2,
    gpus_per_node: int = 1,
    namespace: str | None = None,
    registry_pvc: str | None = None,
    mount: str | None = None,
    template: Path | None = None,
) -> dict[str, Any]:
    """The TrainJob for one training run.

    ``job_dir`` (on the registry volume, under ``mount``) holds ``clean/``, ``embeddings/`` and
    ``features/``; the candidate goes to ``job_dir/candidate``. ``spec`` is the run's
    :class:`fusionrec.train.request.TrainSpec` (as a dict).
    """
    from fusionrec.train.request import TrainSpec

    s = TrainSpec.parse(**spec)
    cluster = ClusterSettings()
    registry_pvc, mount = registry_pvc or cluster.registry_pvc, mount or cluster.registry_mount
    if nodes < 1 or gpus_per_node < 0:
        raise ConfigError(
            f"a TrainJob needs at least one node and no negative GPU count (got {nodes}, {gpus_per_node})"
        )
    if template is None:
        template = (
            CLUSTER_TEMPLATE if CLUSTER_TEMPLATE.exists() else manifests_dir() / "base" / "training" / "trainjob.yaml"
        )
    job = copy.deepcopy(read_yaml(template))
    job["metadata"]["name"] = name
    if namespace:
        job["metadata"]["namespace"] = namespace
    trainer = job["spec"]["trainer"]
    trainer.update(image=image, numNodes=nodes, numProcPerNode=max(gpus_per_node, 1))
    d = job_dir.rstrip("/")
    # the spec whole, as JSON: never re-spelled as flags (a field a flag list forgot would train with its default)
    trainer["args"] = [
        "-m",
        "fusionrec",
        "train",
        f"{d}/clean",
        "--embeddings",
        f"{d}/embeddings",
        "--features",
        f"{d}/features",
        "--candidate",
        f"{d}/candidate",
        "--spec",
        s.model_dump_json(),
        "--no-progress",
    ]
    for part in ("requests", "limits"):
        res = trainer["resourcesPerNode"][part]
        if gpus_per_node:
            res["nvidia.com/gpu"] = str(gpus_per_node)
        else:
            res.pop("nvidia.com/gpu", None)
    pod = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod_spec = pod["template"]["spec"]["template"]["spec"]
    for v in pod_spec["volumes"]:
        if "persistentVolumeClaim" in v:
            v["persistentVolumeClaim"]["claimName"] = registry_pvc
    for m in pod_spec["containers"][0]["volumeMounts"]:
        if m["name"] == "registry":
            m["mountPath"] = mount
    return job


def run_trainjob(api, job: dict[str, Any], *, namespace: str, timeout_s: int = 6 * 3600, poll_s: float = 15.0) -> str:
    """Create the TrainJob and wait until it completes.

    Args:
        api: a ``kubernetes.client.CustomObjectsApi``.

    Raises:
        TrainJobFailed: the job's ``Failed`` condition became true, or ``timeout_s`` passed.
    """
    name = job["metadata"]["name"]
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status", {})
        conditions = {c["type"]: c for c in status.get("conditions", []) if c.get("status") == "True"}
        if "Failed" in conditions:
            raise TrainJobFailed(f"TrainJob {namespace}/{name} failed: {conditions['Failed'].get('message', '')}")
        if "Complete" in conditions:
            log.info("TrainJob %s/%s complete", namespace, name)
            return "Complete"
        time.sleep(poll_s)
    raise TrainJobFailed(f"TrainJob {namespace}/{name} did not complete within {timeout_s} s")


def train_on_cluster(
    dataset_dir: str,
    embeddings_dir: str,
    features_dir: str,
    spec: dict[str, Any],
    out: str,
    *,
    image: str,
    nodes: int,
    gpus_per_node: int,
    namespace: str | None = None,
    mount: str | None = None,
    run: str | None = None,
    api=None,
):
    """Stage the inputs on the registry volume, run the TrainJob, and copy its candidate to ``out``.

    Runs inside a pipeline step on the cluster (in-cluster Kubernetes credentials, the registry volume
    mounted at ``mount``). Returns the candidate's :class:`fusionrec.metrics.Metrics`.
    """
    import shutil
    import uuid

    name = run or f"fusionrec-train-{uuid.uuid4().hex[:8]}"
    job_dir = Path(mount or ClusterSettings().registry_mount) / "jobs" / name
    if namespace is None:
        ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        namespace = ns_file.read_text().strip() if ns_file.exists() else "default"
    if api is None:
        from kubernetes import client, config

        config.load_incluster_config()
        api = client.CustomObjectsApi()
    try:
        for part, src in (("clean", dataset_dir), ("embeddings", embeddings_dir), ("features", features_dir)):
            shutil.copytree(src, job_dir / part)
        job = render_trainjob(
            name=name,
            image=image,
            job_dir=str(job_dir),
            spec=spec,
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            namespace=namespace,
            mount=mount,
        )
        run_trainjob(api, job, namespace=namespace)
        if not (job_dir / "candidate" / "model.safetensors").exists():
            raise TrainJobFailed(f"TrainJob {namespace}/{name} completed without writing {job_dir / 'candidate'}")
        shutil.copytree(job_dir / "candidate", out, dirs_exist_ok=True)
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    from fusionrec import metrics as metrics_file

    return metrics_file.read(out)
