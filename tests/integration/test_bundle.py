"""The cluster bundle offline, with the tools a cluster's own CI would use: `kubectl kustomize` builds every
overlay, kubernetes-validate checks the core objects, the CRDs in ../shared/schemas/crds check the KServe
and Trainer objects (unknown fields included), checkov scans the manifests and the Containerfiles, and
hadolint lints the Containerfiles. Each check is also shown to fail on the breakage it names."""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fusionrec.errors import ConfigError
from fusionrec.platform.bundle import Deploy, default_crds, kustomize, render_bundle, validate_bundle

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
OVERLAYS = ("dev", "prod", "collocated")
DIGEST = "@sha256:" + "e" * 64
CHECKOV = Path(sys.prefix) / "tools" / "checkov" / "bin" / "checkov"  # make install puts it beside this venv
# what the platform is made of, written out here rather than read from the manifests
EXPECTED = {
    ("InferenceService", "fusionrec"),
    ("ServingRuntime", "fusionrec"),
    ("StatefulSet", "redis"),
    ("Service", "redis"),
    ("Deployment", "monitoring-sink"),
    ("Service", "monitoring-sink"),
    ("Deployment", "evidently-ui"),
    ("Service", "evidently-ui"),
    ("PersistentVolumeClaim", "fusionrec-models"),
    ("PersistentVolumeClaim", "fusionrec-artifacts"),
    ("PersistentVolumeClaim", "fusionrec-monitoring"),
    ("Job", "fusionrec-pipelines-setup"),
    ("ConfigMap", "fusionrec-pipelines"),
    ("ConfigMap", "fusionrec-trainjob"),
    ("Role", "fusionrec-deployer"),
    ("Role", "fusionrec-retrainer"),
}
SECRETS = {"fusionrec-redis", "fusionrec-monitoring", "fusionrec-object-storage", "fusionrec-evidently"}


@pytest.fixture(scope="module")
def built():
    return {o: kustomize(MANIFESTS / "overlays" / o) for o in OVERLAYS}


def _by(docs, kind, name):
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _pod_specs(doc):
    """(where, pod spec, containers) of every workload, the KServe components included."""
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "Job"):
        yield kind, spec["template"]["spec"], spec["template"]["spec"]["containers"]
    elif kind == "InferenceService":
        yield "predictor", spec["predictor"], [spec["predictor"]["model"]]
        if "transformer" in spec:  # the collocated overlay has none
            yield "transformer", spec["transformer"], spec["transformer"]["containers"]


# -- kustomize and the schemas -------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_builds_into_the_whole_platform_in_one_namespace(built, overlay):
    docs = built[overlay]
    have = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert EXPECTED <= have, sorted(EXPECTED - have)
    assert not [d for d in docs if d["kind"] == "Secret"]  # Secrets are created by the SRE, never shipped
    cluster_scoped = {"Namespace", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] not in cluster_scoped} == {"fusionrec"}
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"} == {"fusionrec"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_core_object_passes_its_kubernetes_schema(built, overlay):
    core = [d for d in built[overlay] if not d["apiVersion"].startswith(("serving.kserve.io", "trainer.kubeflow.org"))]
    assert len(core) >= 30
    assert validate_bundle(core, crds=default_crds(), require_crds=False) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_kserve_and_trainer_object_passes_its_crd(built, overlay):
    if not default_crds().is_dir():
        pytest.skip(f"the CRDs are absent: {default_crds()} (../shared/schemas/crds)")
    docs = built[overlay]
    custom = [d for d in docs if d["apiVersion"].startswith(("serving.kserve.io", "trainer.kubeflow.org"))]
    assert sorted({d["kind"] for d in custom}) == ["InferenceService", "ServingRuntime"]
    assert validate_bundle(docs) == []  # the TrainJob template (a ConfigMap's data) is checked as a TrainJob too


@pytest.mark.parametrize(
    "where,mutate,words",
    [
        (
            "InferenceService",
            lambda d: d["spec"]["predictor"]["model"].__setitem__("storageURI", "pvc://x"),
            "'storageURI' was unexpected",
        ),
        (
            "InferenceService",
            lambda d: d["spec"]["transformer"].__setitem__("minReplicas", "two"),
            "'two' is not of type",
        ),
        (
            "ServingRuntime",
            lambda d: d["spec"]["containers"][0]["securityContext"].__setitem__("runAsNonroot", True),
            "'runAsNonroot' was unexpected",
        ),
        (
            "ConfigMap",
            lambda d: d["data"].__setitem__("trainjob.yaml", d["data"]["trainjob.yaml"].replace("numNodes:", "nodes:")),
            "'nodes' was unexpected",
        ),
    ],
)
def test_the_crd_check_refuses_what_the_api_server_would_prune_or_reject(built, where, mutate, words):
    if not default_crds().is_dir():
        pytest.skip(f"the CRDs are absent: {default_crds()} (../shared/schemas/crds)")
    docs = copy.deepcopy(built["dev"])
    (doc,) = [d for d in docs if d["kind"] == where and d["metadata"]["name"] in ("fusionrec", "fusionrec-trainjob")]
    mutate(doc)
    errors = validate_bundle(docs)
    assert len(errors) == 1 and words in errors[0], errors


@pytest.mark.parametrize(
    "mutate,words",
    [
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"].__setitem__(
                "readOnlyRootFS", True
            ),
            "'readOnlyRootFS' was unexpected",
        ),
        (lambda d: d["spec"].__setitem__("replicas", "1"), "'1' is not of type 'integer'"),
    ],
)
def test_the_core_check_refuses_unknown_fields_and_wrong_types(built, mutate, words):
    docs = copy.deepcopy(built["dev"])
    mutate(_by(docs, "Deployment", "monitoring-sink"))
    errors = validate_bundle(docs, require_crds=False)
    assert len(errors) == 1 and errors[0].startswith("Deployment/monitoring-sink: ") and words in errors[0], errors


def test_without_the_crds_the_gate_says_so_instead_of_passing(built, tmp_path):
    errors = validate_bundle(built["dev"], crds=tmp_path / "absent")
    assert sorted(e.split(":")[0] for e in errors) == [
        "ConfigMap/fusionrec-trainjob",
        "InferenceService/fusionrec",
        "ServingRuntime/fusionrec",
    ]
    assert all("not checked: the CRDs are absent" in e for e in errors)


# -- what the bundle promises --------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_non_root_read_only_limited_and_probed(built, overlay):
    checked = 0
    for doc in built[overlay]:
        for where, pod, containers in _pod_specs(doc):
            assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] >= 10000, (
                where
            )
            for c in containers:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, where
                assert sc["capabilities"]["drop"] == ["ALL"], where
                assert {"cpu", "memory"} <= set(c["resources"]["limits"]) and c["resources"]["requests"], where
                assert "readinessProbe" in c and "livenessProbe" in c, where
                checked += 1
    # redis, sink, UI, setup Job, predictor, transformer (collocated: no transformer)
    assert checked == (5 if overlay == "collocated" else 6)


def test_secrets_are_referenced_by_name_only(built):
    text = yaml.safe_dump_all(built["prod"])
    referenced = set(re.findall(r"secretName: (\S+)", text)) | {
        ref["name"]
        for d in built["prod"]
        for _, _, cs in _pod_specs(d)
        for c in cs
        for e in c.get("env", [])
        for ref in [e.get("valueFrom", {}).get("secretKeyRef")]
        if ref
    }
    assert referenced and referenced <= SECRETS, referenced
    assert not re.search(r"(?i)password\s*[:=]\s*[^\s\"$(]", text)


def test_the_deploy_step_may_patch_only_its_own_inferenceservice_and_the_monitor_may_only_create_runs(built):
    docs = built["prod"]
    deployer = _by(docs, "Role", "fusionrec-deployer")["rules"]
    (isvc_rule,) = [r for r in deployer if "inferenceservices" in r["resources"]]
    assert isvc_rule["resourceNames"] == ["fusionrec"] and sorted(isvc_rule["verbs"]) == ["get", "patch"]
    (retrain,) = _by(docs, "Role", "fusionrec-retrainer")["rules"]
    assert retrain["resources"] == ["runs"] and "delete" not in retrain["verbs"] and "create" in retrain["verbs"]
    # no wildcard anywhere, no cluster-wide role
    roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole")]
    assert {d["kind"] for d in roles} == {"Role"}
    assert not [r for d in roles for r in d["rules"] if "*" in r["verbs"] + r["resources"] + r["apiGroups"]]
    for kind, name in (("Deployment", "monitoring-sink"), ("Deployment", "evidently-ui"), ("StatefulSet", "redis")):
        assert _by(docs, kind, name)["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_the_redis_network_policy_selects_the_redis_pods(built):
    """The flows themselves are checked against docs/deploy.md in tests/unit/test_security.py."""
    docs = built["prod"]
    redis_pod = _by(docs, "StatefulSet", "redis")["spec"]["template"]["metadata"]["labels"]
    assert _by(docs, "NetworkPolicy", "redis")["spec"]["podSelector"]["matchLabels"].items() <= redis_pod.items()


def test_the_model_storage_is_a_uri_the_storage_initializer_reads(built):
    uri = _by(built["dev"], "InferenceService", "fusionrec")["spec"]["predictor"]["model"]["storageUri"]
    assert re.fullmatch(r"pvc://fusionrec-models/versions/v\d{4}", uri)
    assert _by(built["dev"], "PersistentVolumeClaim", "fusionrec-models")["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_collocated_overlay_serves_one_hop_with_the_transformers_rights_and_its_own_inference_log(built):
    from fusionrec.config import load_settings

    docs = built["collocated"]
    isvc = _by(docs, "InferenceService", "fusionrec")["spec"]
    assert "transformer" not in isvc and "logger" not in isvc["predictor"]  # no logger sees unfiltered requests
    runtime = _by(docs, "ServingRuntime", isvc["predictor"]["model"]["runtime"])["spec"]["containers"][0]
    assert runtime["command"] == ["python", "-m", "serving.service"]
    env = {e["name"]: e for e in runtime["env"]}
    assert env["FUSIONREC__MONITORING__INFERENCE_LOG"]["value"] == "parquet"
    workers = load_settings(
        profile="cluster", env={"FUSIONREC__SERVING__WORKERS": env["FUSIONREC__SERVING__WORKERS"]["value"]}
    )
    assert 1 < workers.serving.workers <= int(isvc["predictor"]["model"]["resources"]["limits"]["cpu"])  # a core each
    assert env["FUSIONREC__FEATURES__REDIS_CONNECTION"]["valueFrom"]["secretKeyRef"]["key"] == "reader-connection"
    mounts = {m["mountPath"]: m["name"] for m in isvc["predictor"]["model"]["volumeMounts"]}
    cluster = load_settings(profile="cluster", env={})
    assert mounts[cluster.monitoring.folder] == "monitoring" and mounts["/mnt/artifacts"] == "artifacts"
    assert Path(env["FUSIONREC__MONITORING__LOG_KEY_FILE"]["value"]).parent.as_posix() in mounts
    # the network: callers from the gateways in, Redis out (nothing else); Redis admits the pods
    labels = {
        "serving.kserve.io/inferenceservice": "fusionrec",
        "component": "predictor",
        **isvc["predictor"]["labels"],
    }
    policy = _by(docs, "NetworkPolicy", "fusionrec-predictor")["spec"]
    gateways = [f for f in policy["ingress"][0]["from"] if "matchExpressions" in f.get("podSelector", {})]
    assert gateways and "ingressgateway" in gateways[0]["podSelector"]["matchExpressions"][0]["values"]
    assert [t["podSelector"]["matchLabels"] for e in policy["egress"] for t in e["to"]] == [
        {"app.kubernetes.io/name": "redis"}
    ]
    redis_from = [
        f["podSelector"]["matchLabels"] for f in _by(docs, "NetworkPolicy", "redis")["spec"]["ingress"][0]["from"]
    ]
    assert any(m.items() <= labels.items() for m in redis_from)
    # the mesh: the gateways may call it, and Redis takes its service account
    principals = _by(docs, "AuthorizationPolicy", "fusionrec-predictor")["spec"]["rules"][0]["from"][0]["source"]
    assert "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account" in principals["principals"]
    redis_principals = _by(docs, "AuthorizationPolicy", "redis")["spec"]["rules"][0]["from"][0]["source"]["principals"]
    assert f"cluster.local/ns/fusionrec/sa/{isvc['predictor']['serviceAccountName']}" in redis_principals
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("NetworkPolicy", "fusionrec-transformer") not in kinds  # no policy left for pods that do not exist


# -- fusionrec deploy render ---------------------------------------------------------------------------


def test_render_collocated_in_another_namespace_with_a_gpu():
    docs = render_bundle("collocated", Deploy(model_version="v0012", namespace="recs", gpu=1))
    isvc = _by(docs, "InferenceService", "fusionrec")
    pred = isvc["spec"]["predictor"]
    assert isvc["metadata"]["namespace"] == "recs" and "transformer" not in isvc["spec"]
    assert (
        pred["model"]["storageUri"].endswith("/versions/v0012")
        and pred["model"]["resources"]["limits"]["nvidia.com/gpu"]
    )
    principals = _by(docs, "AuthorizationPolicy", "redis")["spec"]["rules"][0]["from"][0]["source"]["principals"]
    assert f"cluster.local/ns/recs/sa/{pred['serviceAccountName']}" in principals


def test_render_prod_pins_every_image_by_digest_and_serves_the_runs_model_version():
    images = {
        "fusionrec": "reg.example/fusionrec" + DIGEST,
        "fusionrec-serving": "reg.example/serving" + DIGEST,
        "redis": "reg.example/redis" + DIGEST,
    }
    docs = render_bundle("prod", Deploy(model_version="v0012", images=images, namespace="recs"))
    found = {img for d in docs for _, _, cs in _pod_specs(d) for c in cs for img in [c.get("image")] if img}
    found |= {c["image"] for d in docs if d["kind"] == "ServingRuntime" for c in d["spec"]["containers"]}
    assert found == set(images.values())
    isvc = _by(docs, "InferenceService", "fusionrec")
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "pvc://fusionrec-models/versions/v0012"
    cluster_scoped = {"Namespace", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] not in cluster_scoped} == {"recs"}
    assert _by(docs, "Namespace", "recs")  # the Namespace itself, and the strings that name it, move too
    principals = {
        p
        for d in docs
        if d["kind"] == "AuthorizationPolicy"
        for r in d["spec"].get("rules", [])
        for f in r.get("from", [])
        for p in f["source"].get("principals", [])
    }
    assert (
        not [p for p in principals if "/ns/fusionrec/" in p]
        and "cluster.local/ns/recs/sa/fusionrec-transformer" in principals
    )
    policy = _by(docs, "ValidatingAdmissionPolicy", "recs-deployer-rollout-only")
    assert "system:serviceaccount:recs:fusionrec-training" in policy["spec"]["matchConditions"][0]["expression"]
    binding = _by(docs, "ValidatingAdmissionPolicyBinding", "recs-deployer-rollout-only")
    assert binding["spec"]["policyName"] == "recs-deployer-rollout-only"
    assert isvc["spec"]["predictor"]["logger"]["url"] == "http://monitoring-sink.recs.svc.cluster.local/events"
    job = [d for d in docs if d["kind"] == "Job"][0]
    assert job["metadata"]["name"] == "fusionrec-pipelines-setup-eeeeeeeeeeee"  # a new image registers again
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FUSIONREC_IMAGE"] == images["fusionrec"]  # the pipelines it registers run on the same image


@pytest.mark.parametrize(
    "images,words",
    [
        ({}, "prod pins every image by digest"),
        (
            {"fusionrec": "reg/fusionrec:1.0", "fusionrec-serving": "reg/s" + DIGEST, "redis": "reg/r" + DIGEST},
            "Deployment/evidently-ui: reg/fusionrec:1.0",
        ),
        ({"fusionrec": "reg/fusionrec@sha256:abc"}, "a digest is sha256: and 64 hex digits"),
        ({"postgres": "reg/pg" + DIGEST}, "--image postgres: no such image in the bundle"),
    ],
)
def test_render_refuses_prod_images_without_digests(images, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        render_bundle("prod", Deploy(images=images))


def test_render_from_the_command_line_writes_a_bundle_kubectl_can_apply(tmp_path):
    out = tmp_path / "bundle.yaml"
    args = [
        sys.executable,
        "-m",
        "fusionrec",
        "deploy",
        "render",
        "--overlay",
        "prod",
        "--model-version",
        "v0003",
        "--out",
        str(out),
    ]
    for role in ("fusionrec", "fusionrec-serving", "redis"):
        args += ["--image", f"{role}=reg.example/{role}{DIGEST}"]
    done = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"wrote {out}: 50 objects" in done.stdout
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    assert len(docs) == 50 and _by(docs, "InferenceService", "fusionrec")["spec"]["predictor"]["model"][
        "storageUri"
    ].endswith("/versions/v0003")
    registry = tmp_path / "models"
    registry.mkdir()
    (registry / "champion.json").write_text(json.dumps({"version": "v0005", "metric": "ndcg@20", "value": 0.3}))
    last = subprocess.run(
        [sys.executable, "-m", "fusionrec", "deploy", "render", "--registry", str(registry)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )  # what the last pipeline run promoted
    assert last.returncode == 0 and "storageUri: pvc://fusionrec-models/versions/v0005" in last.stdout, last.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "fusionrec", "deploy", "render", "--overlay", "staging"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert (
        bad.returncode != 0 and "overlay 'staging' is unknown; use one of ['collocated', 'dev', 'prod']" in bad.stderr
    )


# -- policy scan and lint ------------------------------------------------------------------------------


def _checkov(*args, cwd):
    if not CHECKOV.exists():
        pytest.fail(f"checkov is not installed at {CHECKOV}: run 'make install'")
    done = subprocess.run(
        [str(CHECKOV), "--skip-download", "--output", "json", "--quiet", *args], capture_output=True, text=True, cwd=cwd
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]
    reports = json.loads(done.stdout) if done.stdout.strip() else []
    reports = reports if isinstance(reports, list) else [reports]
    return {(c["check_id"], c["resource"]) for r in reports for c in r.get("results", {}).get("failed_checks", [])}


def _containerfiles(tmp_path):
    """The Containerfiles under names checkov's Dockerfile scanner recognises."""
    folder = tmp_path / "containerfiles"
    folder.mkdir()
    for part in ("components", "serving"):
        shutil.copyfile(REPO / part / "Containerfile", folder / f"{part}.Dockerfile")
    return folder


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_policy_scan_passes_on_every_overlay(built, overlay, tmp_path):
    (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(built[overlay]))
    assert _checkov("-f", f"{overlay}.yaml", "--framework", "kubernetes", "secrets", cwd=tmp_path) == set()


def test_the_policy_scan_passes_on_the_containerfiles(tmp_path):
    folder = _containerfiles(tmp_path)
    assert _checkov("-d", str(folder), "--framework", "dockerfile", "secrets", cwd=tmp_path) == set()


def test_the_policy_scan_fails_on_root_writable_unlimited_containers_and_inlined_secrets(built, tmp_path):
    docs = copy.deepcopy(built["prod"])
    sink = _by(docs, "Deployment", "monitoring-sink")
    pod = sink["spec"]["template"]["spec"]
    container = pod["containers"][0]
    del container["resources"]["limits"]
    pod["securityContext"] = {"runAsUser": 0}
    container["securityContext"] = {"readOnlyRootFilesystem": False}
    container["env"].append({"name": "AWS_ACCESS_KEY_ID", "value": "AKIAIOSFODNN7EXAMPLE"})
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump_all(docs))
    failed = {
        check for check, resource in _checkov("-f", "broken.yaml", "--framework", "kubernetes", "secrets", cwd=tmp_path)
    }
    # CPU and memory limits, root containers, UID, read-only root filesystem; a secret in the manifest
    assert {"CKV_K8S_11", "CKV_K8S_13", "CKV_K8S_23", "CKV_K8S_40", "CKV_K8S_22"} <= failed, failed
    assert any(c.startswith("CKV_SECRET_") for c in failed), failed


def test_the_policy_scan_fails_on_a_containerfile_that_runs_as_root(tmp_path):
    folder = _containerfiles(tmp_path)
    f = folder / "components.Dockerfile"
    f.write_text(re.sub(r"(?m)^USER .*$", "", f.read_text()))
    failed = _checkov("-d", str(folder), "--framework", "dockerfile", cwd=tmp_path)
    assert {c for c, _ in failed} == {"CKV_DOCKER_3"}  # "Ensure that a user for the container has been created"


def test_hadolint_passes_on_the_containerfiles_and_fails_on_a_bad_one(tmp_path):
    hadolint = Path(sys.executable).with_name("hadolint")
    files = [str(REPO / p / "Containerfile") for p in ("components", "serving")]
    done = subprocess.run([str(hadolint), *files], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM debian:bookworm\nRUN apt-get install -y python3\nUSER 10001\n")
    done = subprocess.run([str(hadolint), str(bad)], capture_output=True, text=True)
    assert done.returncode == 1 and "DL3008" in done.stdout and "DL3015" in done.stdout


def test_the_setup_jobs_command_is_one_the_image_runs(built, tmp_path):
    """The Job's shell command, with the environment the bundle gives it, parses with the real CLI and
    stops only where the Kubeflow Pipelines API (absent here) is called."""
    docs = built["dev"]
    job = _by(docs, "Job", "fusionrec-pipelines-setup")["spec"]["template"]["spec"]["containers"][0]
    env = dict(_by(docs, "ConfigMap", "fusionrec-pipelines")["data"])
    env.update({e["name"]: e["value"] for e in job["env"] if "value" in e})
    env.update(KFP_HOST="http://127.0.0.1:9", PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin", HOME=str(tmp_path))
    assert job["command"] == ["sh", "-c"]
    work, _, after = job["args"][0].partition("; status=$?;")
    assert "quitquitquit" in after and after.strip().endswith("exit $status")  # the sidecar stops, the status stays
    commands = work.split(" && ")
    assert [c.split()[:3] for c in commands] == [
        ["fusionrec", "pipeline", "upload"],
        ["fusionrec", "monitor", "schedule"],
    ]
    for command in commands:  # each on its own: the first stops the second where the API is absent
        done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode != 0 and "No such option" not in done.stderr and "Usage:" not in done.stderr, done.stderr
        assert (
            done.stderr.strip()
            .splitlines()[-1]
            .startswith("error: Kubeflow Pipelines at http://127.0.0.1:9 does not answer")
        ), done.stderr[-1000:]
    whole = subprocess.run(job["command"] + job["args"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert (
        whole.returncode == 2 and "Traceback" not in whole.stderr
    )  # the failing step's status, not the sidecar call's


def test_the_redis_statefulset_runs_as_written_keeps_its_data_and_refuses_strangers(built, tmp_path):
    """The StatefulSet's own command and readiness probe, with Debian's redis-server (the image cannot be
    pulled here) and its volumes as folders: the password comes from the Secret's file, the append-only
    file on the data volume survives a restart, and a client without the password is refused."""
    import socket
    import time

    import redis

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does this)")
    pod = _by(built["prod"], "StatefulSet", "redis")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    mounts = {m["mountPath"]: tmp_path / m["name"] for m in c["volumeMounts"]}
    for folder in mounts.values():
        folder.mkdir()
    (mounts["/etc/redis-auth"] / "password").write_text("s3cret-from-the-secret")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def local(text):  # the pod's paths -> the folders standing in for its volumes, and a free port
        for path, folder in mounts.items():
            text = text.replace(path, str(folder))
        return text + f" --port {port} --bind 127.0.0.1" if text.startswith("exec redis-server") else text

    def start():
        server = subprocess.Popen(c["command"] + [local(c["args"][0])], stdout=subprocess.DEVNULL)
        probe = [
            a.replace("redis-cli ", f"redis-cli -p {port} ") for a in map(local, c["readinessProbe"]["exec"]["command"])
        ]
        for _ in range(100):
            if subprocess.run(probe).returncode == 0:
                return server
            time.sleep(0.1)
        server.kill()
        pytest.fail("the readiness probe never passed")

    server = start()
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        redis.Redis(port=port, password="s3cret-from-the-secret").set("feast:user:42", "history")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert list((mounts["/data"]).rglob("*.aof")), "no append-only file on the data volume"
    server = start()
    try:
        assert redis.Redis(port=port, password="s3cret-from-the-secret").get("feast:user:42") == b"history"
        # the Secret's `connection` key as docs/deploy.md writes it, read the way Feast's Redis store reads it
        from feast.infra.online_stores.redis import RedisOnlineStore

        (node,), params = RedisOnlineStore._parse_connection_string(f"127.0.0.1:{port},password=s3cret-from-the-secret")
        assert redis.Redis(host=node["host"], port=int(node["port"]), **params).get("feast:user:42") == b"history"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_cluster_settings_name_the_registry_and_the_namespace_the_bundle_renders(tmp_path):
    registry = tmp_path / "models"
    registry.mkdir()
    (registry / "champion.json").write_text(json.dumps({"version": "v0002", "metric": "ndcg@20", "value": 0.3}))
    env = {**os.environ, "FUSIONREC__CLUSTER__REGISTRY_PVC": "shared-models", "FUSIONREC__CLUSTER__NAMESPACE": "recs"}
    done = subprocess.run(
        [sys.executable, "-m", "fusionrec", "deploy", "render", "--registry", str(registry)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    isvc = _by(docs, "InferenceService", "fusionrec")
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "pvc://shared-models/versions/v0002"
    assert isvc["metadata"]["namespace"] == "recs"
