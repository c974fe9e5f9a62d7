"""The training pipeline (KFP v2): validate -> embed, one task per modality in parallel -> collect ->
features (Feast) -> train -> evaluate (baselines) -> gate -> only when the gate says so: register ->
deploy.

:func:`build_pipeline` returns the pipeline for an image and a target (a laptop or a cluster);
:func:`compile_pipeline` writes the IR YAML to upload in the Kubeflow UI; :func:`run_local` runs it
with the KFP local runner; :func:`submit` sends it to a Kubeflow Pipelines endpoint.
"""

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fusionrec.config import ClusterSettings
from fusionrec.errors import ConfigError, FusionRecError
from fusionrec.train.request import BASELINES, MARGIN

log = logging.getLogger(__name__)

PIPELINE_NAME = "fusionrec-training"
DEFAULT_IMAGE = "localhost/fusionrec:0.1.0-cpu"
# Secrets on a cluster: Kubernetes Secret -> environment variables the settings read (never parameters).
SECRETS = {
    "fusionrec-redis": {"connection": "FUSIONREC__FEATURES__REDIS_CONNECTION"},
    "fusionrec-object-storage": {
        "access_key": "AWS_ACCESS_KEY_ID",
        "secret_key": "AWS_SECRET_ACCESS_KEY",
        "endpoint": "AWS_ENDPOINT_URL",
    },
}
# ... and only to the steps that use them: Redis to the step that materialises the online store, object
# storage to the steps that read encoder checkpoints or write training checkpoints by URI.
STEP_SECRETS = {
    "features": ("fusionrec-redis",),
    "embed": ("fusionrec-object-storage",),
    "train": ("fusionrec-object-storage",),
    "train_distributed": ("fusionrec-object-storage",),
    "evaluate": ("fusionrec-object-storage",),
}
# Every step's pod carries this label: the NetworkPolicy of the pipeline steps (their egress) selects it.
PIPELINE_STEP = ("fusionrec.io/pipeline-step", "true")
_CLUSTER = ClusterSettings()  # the bundle's names (settings section ``cluster``)
REGISTRY_PVC, REGISTRY_MOUNT = _CLUSTER.registry_pvc, _CLUSTER.registry_mount  # the model registry's volume
# What the transformer reads beside the model (the Feast registry of the serving features): the deploy
# step publishes it on this volume (manifests/base/storage/volumes.yaml), at the cluster profile's
# features.data_dir.
ARTIFACTS_PVC, ARTIFACTS_MOUNT = _CLUSTER.artifacts_pvc, _CLUSTER.artifacts_mount
# The steps run as the images' user (uid 10001), never as root, on a cluster as here.
STEP_USER = 10001
# Pods that may reach the Feast online store (Redis): its NetworkPolicy admits pods with this label.
FEATURE_STORE_CLIENT = ("fusionrec.io/feature-store-client", "true")
# The ServiceAccount training runs run as (manifests/base/security): the deploy step's rollout rights.
TRAINING_SERVICE_ACCOUNT = "fusionrec-training"
# Steps that read or write state outside their inputs (the registry, the serving cluster) are never cached.
UNCACHED = ("gate", "register", "deploy")
# Steps that reach the network (a checkpoint's storage, Redis, the registry's volume, the Kubernetes API)
# retry with backoff. Not validate: a check over its budget fails the same way every time, and its
# report should not wait for three retries.
RETRIED = ("embed", "features", "register", "deploy")
# The trainer: "component" (the train step itself, on one node's GPUs) or "trainjob" (a Kubeflow Trainer
# TrainJob the step launches: torchrun across nodes; manifests/trainjob.yaml).
TRAINERS = ("component", "trainjob")


class TrainingRun(BaseModel):
    """One run of the training pipeline: every parameter, its default written once. The pipeline's signature,
    :func:`run_local`, :func:`submit`, the CLI, the monitoring loop's retrainer and its schedule read it."""

    model_config = ConfigDict(extra="forbid")

    contract: str  # the dataset contract as the steps see it
    registry: str  # the model registry folder as the steps see it
    modalities: list[str] = Field(default_factory=lambda: ["text", "image"])  # embedded, one task each
    spec: dict[str, Any] = Field(default_factory=dict)  # a fusionrec.train.request.TrainSpec's fields
    settings: dict[str, Any] = Field(default_factory=dict)  # settings overrides for every step
    margin: float = MARGIN  # promote only when NDCG@20 beats the champion's by this share
    baselines: list[str] = Field(default_factory=lambda: list(BASELINES))

    @classmethod
    def of(cls, **values: Any) -> "TrainingRun":
        """A run from keyword values (paths as strings); a bad or unknown one raises ConfigError naming it."""
        from pydantic import ValidationError

        from fusionrec.config import describe_pydantic_errors

        values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items() if v is not None}
        try:
            return cls(**values)
        except ValidationError as e:
            raise ConfigError(f"training run: {describe_pydantic_errors(e)}") from None

    @field_validator("spec")
    @classmethod
    def _set_fields_only(cls, spec: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in spec.items() if v is not None}  # an unset field is left out: KFP takes no None

    def arguments(self) -> dict[str, Any]:
        """The pipeline's parameters for this run."""
        return self.model_dump()


def _default(name: str):
    """A TrainingRun field's default (for the pipeline's signature)."""
    f = TrainingRun.model_fields[name]
    return f.default_factory() if f.default_factory is not None else f.default


@dataclass(frozen=True)
class Target:
    """Where the pipeline runs: a laptop (local runner) or a Kubeflow cluster."""

    image: str = DEFAULT_IMAGE
    cluster: bool = False
    gpus: int = 1  # on the train step (cluster only; the local runner has no scheduler), per node with a TrainJob
    accelerator: str = "nvidia.com/gpu"
    trainer: str = "component"  # or "trainjob": train as a Kubeflow Trainer TrainJob (torchrun across nodes)
    nodes: int = 2  # TrainJob nodes
    resources: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {
            # step: (cpu request, memory request)
            "validate": ("1", "2G"),
            "embed": ("2", "4G"),
            "collect": ("500m", "1G"),
            "features": ("1", "4G"),
            "train": ("4", "16G"),
            "evaluate": ("2", "8G"),
            "gate": ("1", "4G"),
            "register": ("500m", "1G"),
            "deploy": ("500m", "1G"),
            "train_distributed": ("500m", "2G"),
        }
    )


def as_step_user(task):
    """On a cluster: the step runs as the images' user, never as root."""
    from kfp import kubernetes

    return kubernetes.set_security_context(task, run_as_user=STEP_USER, run_as_group=STEP_USER, run_as_non_root=True)


def build_pipeline(target: Target = Target()):
    """The training pipeline as a KFP pipeline function for ``target``."""
    from typing import List, NamedTuple

    from kfp import dsl

    from components.training import build

    if target.trainer not in TRAINERS:
        raise ConfigError(f"trainer {target.trainer!r} is unknown; use {' or '.join(TRAINERS)}")
    if target.trainer == "trainjob" and not target.cluster:
        raise ConfigError("a TrainJob needs a cluster (Kubeflow Trainer); train in the step locally")
    c = build(target.image)

    def configure(task, name: str):
        task.set_display_name(name)
        task.set_caching_options(name not in UNCACHED)
        if name in RETRIED:
            task.set_retry(num_retries=3, backoff_duration="30s", backoff_factor=2.0)
        if target.cluster:
            from kfp import kubernetes

            cpu, memory = target.resources[name]
            task.set_cpu_request(cpu).set_memory_request(memory).set_memory_limit(memory)
            as_step_user(task)
            kubernetes.add_pod_label(task, *PIPELINE_STEP)
            for secret in STEP_SECRETS.get(name, ()):
                kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=SECRETS[secret], optional=True)
            if name in ("evaluate", "gate", "register", "deploy", "train_distributed"):
                kubernetes.mount_pvc(task, pvc_name=REGISTRY_PVC, mount_path=REGISTRY_MOUNT)
            if name == "features":  # materialises the online store
                kubernetes.add_pod_label(task, *FEATURE_STORE_CLIENT)
            if name == "deploy":  # publishes the serving features' registry for the transformer
                kubernetes.mount_pvc(task, pvc_name=ARTIFACTS_PVC, mount_path=ARTIFACTS_MOUNT)
            if name == "train_distributed":  # the cluster's TrainJob template (the bundle's ConfigMap)
                from fusionrec.platform.trainjob import CLUSTER_TEMPLATE

                kubernetes.use_config_map_as_volume(
                    task, config_map_name="fusionrec-trainjob", mount_path=str(CLUSTER_TEMPLATE.parent), optional=True
                )
            if name == "train" and target.gpus:
                task.set_accelerator_type(target.accelerator).set_accelerator_limit(target.gpus)
        return task

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Validate, embed per modality, build Feast features, train the fusion model, compare it "
        "with the baselines, and register and deploy it only when it beats the champion.",
    )
    def fusionrec_training(
        contract: str,
        registry: str,
        modalities: List[str] = _default("modalities"),
        spec: dict = _default("spec"),
        settings: dict = {"profile": "cluster"} if target.cluster else _default("settings"),
        margin: float = _default("margin"),
        baselines: List[str] = _default("baselines"),
        deploy_target: str = "kserve" if target.cluster else "local",
        serving_registry_uri: str = _CLUSTER.registry_uri if target.cluster else "",
        checkpoints: str = "",
    ) -> NamedTuple("Outputs", [("promoted", bool), ("decision", dsl.Markdown), ("features", dsl.Dataset)]):
        validate = configure(c["validate"](contract=contract, settings=settings), "validate")
        clean = validate.outputs["clean"]
        with dsl.ParallelFor(modalities, name="per-modality") as modality:
            embed = configure(c["embed"](dataset=clean, modality=modality, settings=settings), "embed")
        collect = configure(c["collect"](parts=dsl.Collected(embed.outputs["embeddings"])), "collect")
        embeddings = collect.outputs["embeddings"]
        features = configure(c["features"](dataset=clean, embeddings=embeddings, settings=settings), "features")
        tables = features.outputs["tables"]
        if target.trainer == "trainjob":  # the step launches the TrainJob and waits; the GPUs are the job's
            train = configure(
                c["train_distributed"](
                    dataset=clean,
                    embeddings=embeddings,
                    tables=tables,
                    spec=spec,
                    image=target.image,
                    nodes=target.nodes,
                    gpus_per_node=target.gpus,
                ),
                "train_distributed",
            )
        else:
            train = configure(
                c["train"](
                    dataset=clean,
                    embeddings=embeddings,
                    tables=tables,
                    spec=spec,
                    settings=settings,
                    checkpoints=checkpoints,
                ),
                "train",
            )
        model = train.outputs["model"]
        evaluate = configure(
            c["evaluate"](dataset=clean, embeddings=embeddings, model=model, baselines=baselines, settings=settings),
            "evaluate",
        )
        gate = configure(c["gate"](dataset=clean, model=model, registry=registry, margin=margin), "gate")
        gate.after(evaluate)  # the comparison is in the run before the decision
        with dsl.If(gate.outputs["Output"] == True, name="promoted"):  # noqa: E712 (a KFP condition, not Python)
            register = configure(c["register"](model=model, registry=registry, margin=margin), "register")
            configure(
                c["deploy"](
                    version=register.output,
                    registry=registry,
                    registry_uri=serving_registry_uri,
                    tables=tables,
                    target=deploy_target,
                    settings=settings,
                ),
                "deploy",
            )
        outputs = NamedTuple("Outputs", [("promoted", bool), ("decision", dsl.Markdown), ("features", dsl.Dataset)])
        return outputs(gate.outputs["Output"], gate.outputs["decision"], tables)

    return fusionrec_training


# -- parameters: checked before anything runs ------------------------------------------------------


def check_parameters(
    *,
    spec: dict[str, Any],
    settings: dict[str, Any],
    modalities: list[str],
    baselines: list[str],
    margin: float,
    contract: str | None = None,
) -> None:
    """Refuse, with a message, parameters that would fail an hour into the run: an unknown encoder,
    fusion type or protocol, a modality the dataset lacks, an unknown baseline.

    Raises:
        ConfigError: naming the parameter and the value.
    """
    from fusionrec.config import settings_from
    from fusionrec.train.request import TrainSpec
    from fusionrec.train.run import check_baselines

    parsed = TrainSpec.parse(**spec)
    settings_from(settings)
    if not modalities:
        raise ConfigError("modalities: at least one modality to embed")
    if len(set(modalities)) != len(modalities):
        raise ConfigError(f"modalities: {modalities} names one twice")
    check_baselines(baselines)
    if not 0 <= margin < 1:
        raise ConfigError(f"margin: {margin} is not a share in [0, 1)")
    if parsed.modalities and not set(parsed.modalities) <= set(modalities):
        raise ConfigError(
            f"spec.modalities {sorted(parsed.modalities)} are not all embedded (modalities: {modalities})"
        )
    if contract and "://" not in contract and Path(contract).exists():
        from fusionrec.data.contract import load_contract

        have = load_contract(contract).modality_names
        missing = [m for m in modalities if m not in have]
        if missing:
            raise ConfigError(f"modalities: {contract} has no {missing}; it has {have}")


def compile_pipeline(out: str | Path, target: Target = Target()) -> Path:
    """Write the pipeline's IR YAML (what the Kubeflow UI uploads)."""
    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(target), str(out))
    return out


# -- running it ------------------------------------------------------------------------------------


@dataclass
class LocalRun:
    """How a local run ended."""

    promoted: bool
    reason: str
    champion: str | None  # the registry's champion after the run
    pipeline_root: Path
    seconds: float
    serving_url: str | None = None


def code_digest() -> str:
    """A digest of the code the pipeline's steps run: the ``fusionrec`` package, the components and the
    pipelines (every ``.py`` file's path and bytes)."""
    import hashlib

    import components
    import fusionrec

    h = hashlib.sha256()
    for package in (fusionrec, components, __import__("pipelines")):
        base = Path(package.__file__).resolve().parent
        for path in sorted(base.rglob("*.py")):
            h.update(f"{package.__name__}/{path.relative_to(base)}".encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def run_local(
    run: TrainingRun | None = None,
    *,
    pipeline_root: str | Path,
    runner: str = "subprocess",
    image: str = DEFAULT_IMAGE,
    cache: bool = True,
    deploy: bool = True,
    **fields: Any,
) -> LocalRun:
    """Run the whole pipeline (``run``, or a :class:`TrainingRun` of ``fields``) on this machine with the KFP
    local runner.

    ``runner``: ``subprocess`` (each step a process of this Python) or ``docker`` (each step in its
    container, through the Docker API; podman's socket works). Cached steps are reused across runs
    (``cache``). With ``deploy`` a promoted model ends up served by local model servers on loopback.

    Raises:
        ConfigError: a parameter is refused (before anything runs).
        RuntimeError: a step failed (KFP's message names it; nothing downstream ran).
    """
    import time

    from kfp import local

    from fusionrec.registry import champion

    run = run or TrainingRun.of(**fields)
    contract, modalities, spec, settings = run.contract, run.modalities, run.spec, dict(run.settings)
    check_parameters(
        spec=spec,
        settings=settings,
        modalities=modalities,
        baselines=run.baselines,
        margin=run.margin,
        contract=contract,
    )
    root = Path(pipeline_root).resolve()
    registry = Path(run.registry).resolve()
    registry.mkdir(parents=True, exist_ok=True)
    if runner == "subprocess":
        kfp_runner = local.SubprocessRunner(use_venv=False)
    elif runner == "docker":
        from docker.types import Mount

        from fusionrec.config import settings_from

        # every path a step reads or writes is mounted at the same place in its container, the embedding
        # cache too (so that a second run finds it warm); the image's user (uid 10001) writes them
        cache_dir = Path(settings_from(settings).paths.cache).resolve()
        settings = {**settings, "paths": {**settings.get("paths", {}), "cache": str(cache_dir)}}
        for writable in (root, cache_dir, registry, registry / "versions"):
            _writable_by_step_user(writable)
        mounts = sorted(
            {
                str(registry),
                str(cache_dir),
                str(Path(contract).resolve().parent),
                *(str(Path(p).resolve()) for p in _data_roots(contract)),
            }
            - {str(root)}
        )  # KFP mounts the root
        as_user = {} if os.getuid() == 0 else {"user": f"{os.getuid()}:{os.getgid()}"}  # a non-root host: its own uid
        kfp_runner = docker_runner(
            [Mount(m, m, type="bind") for m in mounts], network_mode="host", environment=_forwarded_env(), **as_user
        )
    else:
        raise ConfigError(f"runner {runner!r} is unknown; use subprocess or docker")
    # one step cache per version of the code the steps run: KFP keys a step by its component and inputs, and
    # neither changes when the library under it does (a cluster's pinned image digest plays this part)
    cache_root = root / ".kfp_cache" / code_digest()
    local.init(runner=kfp_runner, pipeline_root=str(root), enable_caching=cache, cache_root=str(cache_root))
    pipeline = build_pipeline(Target(image=image, cluster=False))
    start = time.perf_counter()
    try:
        task = pipeline(
            **run.model_copy(
                update={
                    "contract": str(Path(contract).resolve()) if "://" not in contract else contract,
                    "registry": str(registry),
                    "settings": settings,
                }
            ).arguments(),
            deploy_target="local" if deploy and runner == "subprocess" else "none",
        )
    except RuntimeError as e:
        raise PipelineFailed(_failure(str(e), root)) from e
    best = champion(registry)
    decision = Path(task.outputs["decision"].path).read_text(encoding="utf-8").strip().splitlines()
    result = LocalRun(
        bool(task.outputs["promoted"]), decision[-1], best.name if best else None, root, time.perf_counter() - start
    )
    if deploy and best is not None:
        from fusionrec.config import settings_from
        from fusionrec.platform.deploy import deploy_version

        # the subprocess runner's deploy step left the servers up; a container's servers die with it, so
        # under docker (or when this run kept the champion) they are started here, on the host
        s = settings_from(settings)
        url = f"http://{s.serving.host}:{s.serving.transformer_port}"
        if not (result.promoted and runner == "subprocess"):
            url = deploy_version(
                s, registry=str(registry), version=best.name, target="local", features_dir=task.outputs["features"].path
            )
        result.serving_url = url
    return result


def _writable_by_step_user(folder: Path) -> None:
    """Let the steps' user (uid :data:`STEP_USER` in the container) write ``folder``, and nobody else: owned by
    that uid where this process may give it away (root); a non-root host runs the steps as its own uid
    instead (see run_local). Never world-writable."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:
        os.chown(folder, STEP_USER, STEP_USER)
        folder.chmod(0o770)
    elif folder.stat().st_mode & 0o002:
        folder.chmod(folder.stat().st_mode & ~0o002)


def docker_runner(mounts: list, **run_args):
    """KFP's DockerRunner, its steps run by :func:`run_container`."""
    from kfp import local
    from kfp.local import docker_task_handler

    docker_task_handler.run_docker_container = run_container
    return local.DockerRunner(mounts=mounts, **run_args)


def run_container(client, image: str, command: list[str], volumes: dict[str, Any], **run_args) -> int:
    """One step in its container, its log streamed, its exit status read before the container is removed.

    Stands in for kfp.local's own, which starts the container with ``auto_remove=True`` and reads its log
    and exit status afterwards: on podman a short step can be gone by then (an HTTP 500, which kfp does
    not expect, failed a CI run), and kfp takes a container that vanished for a step that succeeded.
    """
    from kfp.local import docker_task_handler

    container = client.containers.run(
        image=docker_task_handler.add_latest_tag_if_not_present(image),
        command=command,
        detach=True,
        stdout=True,
        stderr=True,
        volumes=volumes,
        **{**run_args, "auto_remove": False},
    )
    try:
        for line in container.logs(stream=True, follow=True):
            print(line.decode(errors="replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)


def _forwarded_env() -> dict[str, str]:
    """The settings' environment overrides and the storage credentials, passed on to the containers."""
    import os

    keep = ("FUSIONREC__", "FUSIONREC_PROFILE", "AWS_", "HF_HUB_OFFLINE")
    return {k: v for k, v in os.environ.items() if k.startswith(keep)}


class PipelineFailed(FusionRecError):
    """A pipeline step failed; nothing downstream of it ran."""

    exit_code = 1


def _failure(message: str, root: Path) -> str:
    """One message for a failed local run: the step, where its outputs are, the validation report."""
    import re

    plain = re.sub(r"\x1b\[[0-9;]*m", "", message)
    step = re.search(r"Inner task failed: '([^']+)'", plain)
    runs = sorted(root.glob(f"{PIPELINE_NAME}-*"), key=lambda p: p.stat().st_mtime)
    where = runs[-1] if runs else root
    text = (
        f"step '{step.group(1)}' failed; nothing downstream of it ran (its log is above; outputs in {where})"
        if step
        else plain
    )
    rejected = sorted(where.glob("validate/*.rejected/report.json"))
    if rejected:
        report = json.loads(rejected[0].read_text(encoding="utf-8"))
        over = [
            f"{c['key']} ({c['failed']:,} of {c['records']:,} records, budget {c['budget']:.2%})"
            for c in report["checks"]
            if not c["passed"]
        ]
        text += f"\nchecks over budget: {'; '.join(over)}\nvalidation report: {rejected[0].with_suffix('.html')}"
    return text


def _data_roots(contract: str) -> list[Path]:
    """The folders a dataset contract reads (for the containers' mounts)."""
    if "://" in contract:
        return []
    from fusionrec.data.contract import load_contract

    return [load_contract(contract).root_dir]


def run_name(spec: dict[str, Any], contract: str, modalities: list[str]) -> str:
    """A run name that says what was trained: dataset, split, fusion, modalities and when."""
    from fusionrec.train.request import TrainSpec

    s = TrainSpec.parse(**spec)
    dataset = Path(contract).stem
    if "://" not in contract and Path(contract).exists():
        from fusionrec.data.contract import load_contract

        dataset = load_contract(contract).name
    used = s.modalities or modalities
    return f"{dataset} {s.protocol} s{s.seed} {s.fusion} {'+'.join(used)} {datetime.now(timezone.utc):%Y-%m-%d %H:%M}Z"


@contextmanager
def kfp_api(host: str, client=None):
    """A ``kfp.Client`` for ``host`` (or ``client``, given), with an API that does not answer, or refuses,
    turned into one clear error."""
    import kfp_server_api
    import urllib3

    from fusionrec.errors import Unavailable

    try:
        if client is None:
            import kfp

            client = kfp.Client(host=host)
        yield client
    except urllib3.exceptions.HTTPError as e:
        raise Unavailable(f"Kubeflow Pipelines at {host} does not answer: {getattr(e, 'reason', e)}") from e
    except kfp_server_api.ApiException as e:  # the API answered with an error
        raise Unavailable(
            f"Kubeflow Pipelines at {host} refused the call: {getattr(e, 'status', '')} "
            f"{getattr(e, 'reason', '')}: {str(getattr(e, 'body', '') or '')[:300]}"
        ) from e


def submit(
    host: str,
    run: TrainingRun | None = None,
    *,
    experiment: str = "fusionrec",
    target: Target = Target(cluster=True),
    service_account: str | None = TRAINING_SERVICE_ACCOUNT,
    client=None,
    **fields: Any,
) -> str:
    """Compile for the cluster and start ``run`` (or a :class:`TrainingRun` of ``fields``; its settings
    default to the cluster profile) through ``kfp.Client``; returns the run id.

    Credentials are not parameters: the steps read them from Kubernetes Secrets (:data:`SECRETS`). The
    run runs as ``service_account`` (None: the namespace's default for pipeline runs).
    """
    import tempfile

    run = run or TrainingRun.of(**fields)
    if not run.settings:
        run = run.model_copy(update={"settings": {"profile": "cluster"}})
    check_parameters(
        spec=run.spec,
        settings=run.settings,
        modalities=run.modalities,
        baselines=run.baselines,
        margin=run.margin,
        contract=run.contract,
    )
    with kfp_api(host, client) as client, tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / "pipeline.yaml", target)
        started = client.create_run_from_pipeline_package(
            str(package),
            arguments=run.arguments(),
            run_name=run_name(run.spec, run.contract, run.modalities),
            experiment_name=experiment,
            service_account=service_account,
        )
    return started.run_id


def upload(host: str, *, target: Target = Target(cluster=True), version: str | None = None, client=None) -> str:
    """Register the training pipeline for ``target`` on Kubeflow Pipelines as a new version of the
    pipeline :data:`PIPELINE_NAME` (created the first time), so that it can be started from the UI;
    returns the version's id. The version is named after the image (and the time) unless given."""
    import tempfile

    image = target.image.rsplit("/", 1)[-1]
    name = version or f"{image.replace('@sha256:', '@')[:48]} {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}Z"
    with kfp_api(host, client) as client, tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / "pipeline.yaml", target)
        pipeline_id = client.get_pipeline_id(PIPELINE_NAME)
        if pipeline_id is None:
            created = client.upload_pipeline(
                str(package),
                pipeline_name=PIPELINE_NAME,
                description="fusionrec: validate, embed, features, train, evaluate, gate, register, deploy",
            )
            pipeline_id = created.pipeline_id
        done = client.upload_pipeline_version(str(package), pipeline_version_name=name, pipeline_id=pipeline_id)
    return done.pipeline_version_id
