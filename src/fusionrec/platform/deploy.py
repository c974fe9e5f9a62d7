"""The cluster path: render the InferenceService in ``manifests/``, validate it offline against the
KServe API schema, and create or patch it through the KServe Python client with a canary that is
promoted when it is ready and answers, and rolled back when it does not.

Validation walks the manifest against the KServe SDK's generated models (``kserve.models`` and the
Kubernetes models they embed): the OpenAPI types the InferenceService CRD is generated from. Unknown
fields, wrong types, missing required fields and values outside an enum are reported with their path.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fusionrec.config import manifests_dir, read_yaml
from fusionrec.errors import ConfigError

log = logging.getLogger(__name__)
KINDS = {"InferenceService": "V1beta1InferenceService", "ServingRuntime": "V1alpha1ServingRuntime"}


# -- validation ---------------------------------------------------------------------------------------


def _model_class(name: str):
    import kserve.models
    import kubernetes.client.models

    for module in (kserve.models, kubernetes.client.models):
        if hasattr(module, name):
            return getattr(module, name)
    return None


def _check(value: Any, type_name: str, path: str, errors: list[str]) -> None:
    if value is None:
        return
    if type_name.startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for n, v in enumerate(value):
            _check(v, type_name[5:-1], f"{path}[{n}]", errors)
        return
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        for k, v in value.items():
            _check(v, inner, f"{path}.{k}", errors)
        return
    primitive = {
        "str": (str,),
        "int": (int,),
        "float": (int, float),
        "bool": (bool,),
        "datetime": (str,),
        "date": (str,),
    }
    if type_name in primitive:
        ok = isinstance(value, primitive[type_name]) and not (type_name in ("int", "float") and isinstance(value, bool))
        if not ok:
            errors.append(f"{path}: expected {type_name}, got {type(value).__name__} ({value!r})")
        return
    if type_name == "object":
        return
    cls = _model_class(type_name)
    if cls is None:
        return  # a type the SDK leaves open (e.g. quantities); the API server decides
    if not isinstance(value, dict):
        errors.append(f"{path}: expected an object ({type_name}), got {type(value).__name__}")
        return
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    unknown = sorted(set(value) - set(by_json))
    for key in unknown:
        errors.append(f"{path}.{key}: unknown field for {type_name}")
    for key, v in value.items():
        if key in by_json:
            _check(v, cls.openapi_types[by_json[key]], f"{path}.{key}", errors)
    try:  # the generated setters enforce required fields and enums
        cls(**{by_json[k]: v for k, v in value.items() if k in by_json})
    except ValueError as e:
        errors.append(f"{path}: {e}")
    except TypeError:
        pass


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """Everything in a KServe manifest (InferenceService or ServingRuntime) that the API would refuse."""
    if not isinstance(obj, dict):
        return ["manifest: expected a mapping"]
    kind = obj.get("kind")
    if kind not in KINDS:
        return [f"kind: expected one of {sorted(KINDS)}, got {kind!r}"]
    errors: list[str] = []
    want = "serving.kserve.io/v1beta1" if kind == "InferenceService" else "serving.kserve.io/v1alpha1"
    if obj.get("apiVersion") != want:
        errors.append(f"apiVersion: expected {want}, got {obj.get('apiVersion')!r}")
    if not (obj.get("metadata") or {}).get("name"):
        errors.append("metadata.name: required")
    if "spec" not in obj:
        errors.append("spec: required")
    _check(obj, KINDS[kind], kind, errors)
    if kind == "InferenceService":
        pred = (obj.get("spec") or {}).get("predictor") or {}
        pct = pred.get("canaryTrafficPercent")
        if pct is not None and isinstance(pct, int) and not 0 <= pct <= 100:
            errors.append(f"spec.predictor.canaryTrafficPercent: must be within 0..100, got {pct}")
        for part in ("predictor", "transformer"):
            spec = (obj.get("spec") or {}).get(part) or {}
            lo, hi = spec.get("minReplicas"), spec.get("maxReplicas")
            if isinstance(lo, int) and isinstance(hi, int) and hi < lo:
                errors.append(f"spec.{part}: maxReplicas {hi} < minReplicas {lo}")
    return errors


def validate(obj: dict[str, Any], source: str = "manifest") -> None:
    """Raises ConfigError listing every problem :func:`schema_errors` finds."""
    errors = schema_errors(obj)
    if errors:
        raise ConfigError(f"{source}: {len(errors)} problem(s): " + "; ".join(errors[:10]))


# -- rendering -----------------------------------------------------------------------------------------


def load_manifest(name: str = "base/serving/inferenceservice.yaml", folder: Path | None = None) -> dict[str, Any]:
    """A manifest template from ``folder`` (default: :func:`fusionrec.config.manifests_dir`)."""
    return read_yaml((folder or manifests_dir()) / name)


def render(
    base: dict[str, Any],
    *,
    storage_uri: str | None = None,
    image: str | None = None,
    namespace: str | None = None,
    gpu: int = 0,
    canary_percent: int | None = None,
) -> dict[str, Any]:
    """A copy of the InferenceService with the deploy's values filled in, validated.

    ``gpu``: GPUs per predictor replica (``nvidia.com/gpu`` limits; the encoders then run on CUDA).
    """
    isvc = copy.deepcopy(base)
    pred, trans = isvc["spec"]["predictor"], isvc["spec"].get("transformer")  # collocated: no transformer
    if storage_uri:
        pred["model"]["storageUri"] = storage_uri
    if image and trans is not None:
        for c in trans["containers"]:
            c["image"] = image
    if namespace:
        isvc["metadata"]["namespace"] = namespace
    if gpu:
        res = pred["model"].setdefault("resources", {})
        res.setdefault("limits", {})["nvidia.com/gpu"] = str(gpu)
        res.setdefault("requests", {})["nvidia.com/gpu"] = str(gpu)
        pred.setdefault("tolerations", []).append(
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        )
        pred["model"].setdefault("env", []).append({"name": "FUSIONREC__ENCODERS__DEVICE", "value": "cuda"})
    if canary_percent is not None:
        pred["canaryTrafficPercent"] = int(canary_percent)
    validate(isvc, "rendered InferenceService")
    return isvc


# -- deploy with a canary ------------------------------------------------------------------------------


@dataclass
class DeployResult:
    """What a deploy did."""

    action: str  # created | promoted | rolled_back
    name: str
    namespace: str
    reason: str
    steps: list[str] = field(default_factory=list)


def _not_found(error: Exception) -> bool:
    """Whether the KServe client's error says the object does not exist: the client re-raises the API's
    ``ApiException`` as a RuntimeError while handling it, so the API's status is the error's context."""
    from kubernetes.client.exceptions import ApiException

    cause = error.__cause__ or error.__context__
    return isinstance(cause, ApiException) and cause.status == 404


def _generation(obj: Any) -> int | None:
    try:
        return int(obj["metadata"]["generation"])
    except (TypeError, KeyError, ValueError):
        return None


def wait_generation(
    client, name: str, namespace: str, generation: int | None, timeout_s: float, poll_s: float = 2.0
) -> None:
    """Wait until the InferenceService's status describes ``generation`` (``status.observedGeneration``) and
    says Ready. Without a generation to wait for (an API server that reports none), the client's own wait.

    Raises:
        RuntimeError: not observed and Ready within ``timeout_s``.
    """
    if generation is None:
        client.wait_isvc_ready(name, namespace=namespace, timeout_seconds=int(timeout_s))
        return
    deadline = time.monotonic() + timeout_s
    while True:
        status = (client.get(name, namespace=namespace) or {}).get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        if int(status.get("observedGeneration") or 0) >= generation and ready:
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"generation {generation} was not observed Ready within {timeout_s:.0f} s "
                f"(observed {status.get('observedGeneration')}, ready {ready})"
            )
        time.sleep(poll_s)


def canary_url(client, name: str = "fusionrec", namespace: str = "fusionrec") -> str | None:
    """Where the canary's predictor answers on its own: the route Knative tags ``latest`` (the bundle sets
    ``serving.kserve.io/enable-tag-routing``), so that the smoke request reaches the new revision and not
    the 90% still on the old one. None before the status names one."""
    try:
        status = client.get(name, namespace=namespace).get("status") or {}
    except (RuntimeError, AttributeError):
        return None
    traffic = ((status.get("components") or {}).get("predictor") or {}).get("traffic") or []
    return next((t.get("url") for t in traffic if t.get("tag") == "latest" and t.get("url")), None)


def deploy(
    client,
    isvc: dict[str, Any],
    *,
    canary_percent: int = 10,
    timeout_s: int = 600,
    smoke: Callable[[], bool] | None = None,
    poll_s: float = 2.0,
) -> DeployResult:
    """Create the InferenceService, or roll a new revision out as a canary.

    A new service is created and waited for. An existing one is patched with the new spec and
    ``canaryTrafficPercent``; when the canary becomes ready (the status observed the patched generation
    and says Ready) and ``smoke()`` (a real request, by default none) passes, it is promoted to 100%;
    otherwise traffic is pinned back to the previous revision (``canaryTrafficPercent: 0``) and the
    result says why.

    Args:
        client: a ``kserve.KServeClient`` (or anything with its get/create/patch/wait_isvc_ready).
    """
    validate(isvc, "InferenceService")
    name, ns = isvc["metadata"]["name"], isvc["metadata"].get("namespace", "default")
    steps: list[str] = []
    try:
        client.get(name, namespace=ns)
        exists = True
    except RuntimeError as e:  # the client wraps the API's errors; only "not found" means "create it"
        if not _not_found(e):
            raise
        exists = False
    if not exists:
        client.create(isvc, namespace=ns)
        steps.append("create")
        client.wait_isvc_ready(name, namespace=ns, timeout_seconds=timeout_s)
        return DeployResult("created", name, ns, "first revision: 100% of traffic", steps)
    canary = copy.deepcopy(isvc)
    canary["spec"]["predictor"]["canaryTrafficPercent"] = canary_percent
    patched = client.patch(name, canary, namespace=ns)
    steps.append(f"patch canary {canary_percent}%")
    generation = _generation(patched) or _generation(client.get(name, namespace=ns))
    reason = ""
    try:
        # ready *for the patched spec*: a Ready status the controller has not updated since the patch
        # describes the previous revision and must not promote the new one
        wait_generation(client, name, ns, generation, timeout_s, poll_s)
        if smoke is not None and not smoke():
            reason = "the canary is ready but failed the smoke request"
    except RuntimeError as e:
        reason = f"the canary did not become ready: {e}"
    rollback = {
        "apiVersion": isvc["apiVersion"],
        "kind": isvc["kind"],
        "metadata": {"name": name, "namespace": ns},
        "spec": {"predictor": {"canaryTrafficPercent": 0 if reason else 100}},
    }
    client.patch(name, rollback, namespace=ns)
    if reason:
        steps.append("patch canary 0% (rollback)")
        log.warning("rolled back %s/%s: %s", ns, name, reason)
        return DeployResult("rolled_back", name, ns, reason, steps)
    steps.append("patch canary 100% (promote)")
    return DeployResult("promoted", name, ns, f"canary at {canary_percent}% was ready and answered; promoted", steps)


def smoke_check(
    url: str, model: str, timeout_s: float = 10.0, attempts: int = 3, headers: dict[str, str] | None = None
) -> Callable[[], bool]:
    """A smoke request against a deployed transformer: the popular items must come back (``headers``: the
    caller's credentials where the transformer asks for an API key)."""
    import httpx

    def check() -> bool:
        for _ in range(attempts):
            try:
                r = httpx.post(
                    f"{url}/v1/models/{model}:predict",
                    json={"instances": [{"k": 5}]},
                    timeout=timeout_s,
                    headers=headers,
                )
                if r.status_code == 200 and r.json()["predictions"][0]["items"]:
                    return True
            except (httpx.HTTPError, KeyError, IndexError, ValueError):
                pass
            time.sleep(2)
        return False

    return check


def rollout(
    client,
    storage_uri: str,
    *,
    name: str = "fusionrec",
    namespace: str = "fusionrec",
    canary_percent: int = 10,
    timeout_s: int = 600,
    smoke: Callable[[], bool] | None = None,
    poll_s: float = 2.0,
) -> DeployResult:
    """Roll a model version out on the live InferenceService that the bundle created: only
    ``spec.predictor.model.storageUri`` changes (images, replicas, resources and security settings stay the
    overlay's), as a canary that :func:`deploy` promotes or rolls back.

    Raises:
        ConfigError: the InferenceService does not exist (apply the bundle first).
    """
    try:
        live = client.get(name, namespace=namespace)
    except RuntimeError as e:
        if not _not_found(e):
            raise
        raise ConfigError(
            f"InferenceService {namespace}/{name} does not exist: apply the bundle first "
            "(fusionrec deploy render --overlay ... | kubectl apply -f -)"
        ) from e
    isvc = {
        "apiVersion": live["apiVersion"],
        "kind": live["kind"],
        "metadata": {"name": name, "namespace": namespace},
        "spec": copy.deepcopy(live["spec"]),
    }
    isvc["spec"]["predictor"]["model"]["storageUri"] = storage_uri
    isvc["spec"]["predictor"].pop("canaryTrafficPercent", None)
    return deploy(client, isvc, canary_percent=canary_percent, timeout_s=timeout_s, smoke=smoke, poll_s=poll_s)


def publish_features(features_dir: str | Path, data_dir: str | Path, *, keep_previous: bool = False) -> Path:
    """Put a pipeline run's feature tables (the Feast registry the transformer reads) at ``data_dir``,
    swapping the folder whole so that a reader never sees half of it. With ``keep_previous`` the folder it
    replaced stays beside it (``.<name>.previous``) until :func:`restore_features` or the next publish."""
    import shutil

    from fusionrec.io import atomic_dir

    data_dir = Path(data_dir)
    previous = data_dir.with_name(f".{data_dir.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)  # a later publish forgets the one before
    with atomic_dir(data_dir, keep=previous if keep_previous else None) as tmp:
        shutil.copytree(features_dir, tmp, dirs_exist_ok=True)
    return data_dir


def restore_features(data_dir: str | Path) -> bool:
    """Put back the folder :func:`publish_features` replaced (kept with ``keep_previous``); whether there was one."""
    import shutil

    data_dir = Path(data_dir)
    previous = data_dir.with_name(f".{data_dir.name}.previous")
    if not previous.is_dir():
        return False
    gone = data_dir.with_name(f".{data_dir.name}.rolled-back")
    shutil.rmtree(gone, ignore_errors=True)
    if data_dir.exists():
        data_dir.rename(gone)
    previous.rename(data_dir)
    shutil.rmtree(gone, ignore_errors=True)
    return True


def deploy_version(
    settings,
    *,
    registry: str,
    version: str,
    target: str,
    registry_uri: str | None = None,
    features_dir: str | None = None,
    canary_percent: int = 10,
    timeout_s: int = 600,
) -> str:
    """Put a registered model version into service; returns where it answers.

    ``local``: the predictor and transformer as detached local processes on loopback (replacing a
    running pair; ``fusionrec serve --stop`` stops them), their Feast lookups on ``features_dir``,
    checked with a real request. ``kserve``: ``features_dir`` published at the settings'
    ``features.data_dir`` (the transformer's volume), then ``<registry_uri>/versions/<version>`` (the URI
    KServe's storage initializer reads the registry by, e.g. ``pvc://fusionrec-models``) rolled out on
    the bundle's InferenceService as a canary that is promoted or rolled back (:func:`rollout`).

    Raises:
        ConfigError: an unknown target, or a version that is not in the registry (local).
        Unavailable: the local servers did not answer the smoke request.
    """
    from fusionrec.errors import Unavailable
    from fusionrec.registry import version_folder, version_uri

    uri = version_uri(registry_uri or registry, version)
    if target == "none":  # registered only (a local run in containers serves from the host afterwards)
        return "not deployed"
    if target == "local":
        from fusionrec.api.access import client_headers
        from fusionrec.platform.local import call, serve_detached

        version_folder(registry_uri or registry, version)
        env = {}
        if features_dir:
            env["FUSIONREC__FEATURES__DATA_DIR"] = str(Path(features_dir).resolve())
            settings = settings.model_copy(
                update={
                    "features": settings.features.model_copy(update={"data_dir": env["FUSIONREC__FEATURES__DATA_DIR"]})
                }
            )
        servers = serve_detached(settings, storage_uri=str(Path(uri).resolve()), env=env, feast=bool(features_dir))
        answer = call(
            servers.transformer_url, settings.serving.model_name, [{"k": 3}], headers=client_headers(settings)
        )
        served = answer["predictions"][0]["model_version"]
        if served != version:
            raise Unavailable(f"the local servers answer with model {served!r}, not {version!r}")
        log.info("serving %s at %s", version, servers.transformer_url)
        return servers.transformer_url
    if target == "kserve":
        from kserve import KServeClient

        from fusionrec.registry import demote

        client = KServeClient()
        if features_dir:
            publish_features(features_dir, settings.features.data_dir, keep_previous=True)

        def smoke() -> bool:  # asked once the canary is ready, when its tagged route exists
            url = canary_url(client)
            return url is not None and smoke_check(url, settings.serving.model_name)()

        result = rollout(client, uri, canary_percent=canary_percent, timeout_s=timeout_s, smoke=smoke)
        if result.action == "rolled_back":
            # the register step made this version the champion and the features its own: both go back, so
            # that production, the registry and the next run's gate agree on the model in service
            restored = demote(registry, version)
            if features_dir:
                restore_features(settings.features.data_dir)
            raise Unavailable(
                f"{result.namespace}/{result.name}: rolled back: {result.reason}; the champion is "
                f"{restored or 'none'} again"
            )
        return f"{result.action}: {result.namespace}/{result.name}"
    raise ConfigError(f"deploy target {target!r} is unknown; use local, kserve or none")
