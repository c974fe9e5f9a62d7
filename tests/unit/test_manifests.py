"""The cluster path offline: the manifests against the KServe API schema, rendering, and the canary
deploy's decisions (against an in-memory stand-in for the Kubernetes API, which cannot run here)."""

import copy

import pytest

from fusionrec.errors import ConfigError, Unavailable
from fusionrec.platform.deploy import deploy, load_manifest, publish_features, render, rollout, schema_errors

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["base/serving/inferenceservice.yaml", "base/serving/servingruntime.yaml"])
def test_shipped_manifests_are_valid(name):
    assert schema_errors(load_manifest(name)) == []


def test_inferenceservice_has_what_the_cluster_needs():
    isvc = load_manifest()
    pred, trans = isvc["spec"]["predictor"], isvc["spec"]["transformer"]
    assert pred["model"]["storageUri"] and pred["model"]["modelFormat"]["name"] == "fusionrec"
    assert pred["minReplicas"] <= pred["maxReplicas"] and pred["scaleTarget"] > 0
    # the predictor's exchanges (privacy-filtered requests, answers with the logged vectors) go to the sink
    assert pred["logger"]["mode"] == "all" and pred["logger"]["url"].endswith("/events") and "logger" not in trans
    assert trans["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


@pytest.mark.parametrize(
    "mutate,words",
    [
        (lambda m: m["spec"]["predictor"]["model"].__setitem__("storageURI", "gs://x"), "storageURI: unknown field"),
        (lambda m: m["spec"]["predictor"].__setitem__("minReplicas", "one"), "minReplicas: expected int"),
        (lambda m: m["spec"]["transformer"]["containers"][0].pop("name"), "`name`, must not be `None`"),
        (lambda m: m["spec"]["transformer"].__setitem__("containers", {"name": "x"}), "expected a list"),
        (lambda m: m["spec"]["predictor"].__setitem__("canaryTrafficPercent", 150), "within 0..100"),
        (lambda m: m["spec"]["predictor"].__setitem__("maxReplicas", 0), "maxReplicas 0 < minReplicas"),
        (lambda m: m.__setitem__("apiVersion", "serving.kserve.io/v1"), "apiVersion"),
    ],
)
def test_schema_errors_name_the_bad_field(mutate, words):
    isvc = copy.deepcopy(load_manifest())
    mutate(isvc)
    errors = schema_errors(isvc)
    assert any(words in e for e in errors), errors


def test_render_fills_in_the_deploy_and_stays_valid():
    isvc = render(
        load_manifest(),
        storage_uri="gs://bucket/v0007",
        image="registry/fusionrec:1.2",
        gpu=1,
        canary_percent=10,
        namespace="prod",
    )
    pred = isvc["spec"]["predictor"]
    assert pred["model"]["storageUri"] == "gs://bucket/v0007" and pred["canaryTrafficPercent"] == 10
    assert pred["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert isvc["spec"]["transformer"]["containers"][0]["image"] == "registry/fusionrec:1.2"
    assert isvc["metadata"]["namespace"] == "prod" and schema_errors(isvc) == []
    assert "canaryTrafficPercent" not in load_manifest()["spec"]["predictor"]  # the source is untouched


def test_render_refuses_an_invalid_result():
    base = copy.deepcopy(load_manifest())
    base["spec"]["predictor"]["replicas"] = 3
    with pytest.raises(ConfigError, match="replicas: unknown field"):
        render(base)


def kserve_error(status: int, reason: str):
    """Raise as KServeClient does: the API's ApiException re-raised as a RuntimeError while handling it."""
    from kubernetes.client.exceptions import ApiException

    try:
        raise ApiException(status=status, reason=reason)
    except ApiException as e:
        raise RuntimeError(f"Exception when calling CustomObjectsApi->get_namespaced_custom_object: {e}")


class FakeKServe:
    """The KServeClient calls deploy() makes, over a dict instead of a cluster. Every patch bumps
    ``metadata.generation``; the "controller" observes it and says Ready when ``ready``, or leaves the
    status of the previous generation (Ready) in place when ``stale``."""

    def __init__(self, ready=True, stale=False):
        self.objects, self.calls, self.ready, self.stale = {}, [], ready, stale

    def get(self, name, namespace=None):
        if (namespace, name) not in self.objects:
            kserve_error(404, "Not Found")
        obj = self.objects[(namespace, name)]
        generation = obj["metadata"].setdefault("generation", 1)
        if not self.stale:
            obj["status"] = {
                "observedGeneration": generation,
                "conditions": [{"type": "Ready", "status": "True" if self.ready else "False"}],
            }
        return obj

    def create(self, obj, namespace=None):
        self.calls.append("create")
        self.objects[(namespace, obj["metadata"]["name"])] = {
            **copy.deepcopy(obj),
            "metadata": {**obj["metadata"], "generation": 1},
            "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]},
        }

    def patch(self, name, obj, namespace=None):
        pct = obj["spec"]["predictor"].get("canaryTrafficPercent")
        self.calls.append(f"patch {pct}")
        current = self.objects[(namespace, name)]
        if "model" in obj["spec"]["predictor"]:
            current["spec"] = copy.deepcopy(obj["spec"])
        current["spec"]["predictor"]["canaryTrafficPercent"] = pct
        current["metadata"]["generation"] += 1
        return copy.deepcopy(current)

    def wait_isvc_ready(self, name, namespace=None, timeout_seconds=600):
        if not self.ready:
            raise RuntimeError(f"Timeout to start the InferenceService {name}.")


def test_first_deploy_creates_then_a_good_canary_is_promoted():
    kube = FakeKServe()
    first = deploy(kube, render(load_manifest(), storage_uri="gs://m/v1"))
    assert first.action == "created" and kube.calls == ["create"]
    second = deploy(kube, render(load_manifest(), storage_uri="gs://m/v2"), canary_percent=20, smoke=lambda: True)
    assert second.action == "promoted" and kube.calls[1:] == ["patch 20", "patch 100"]
    assert kube.objects[("fusionrec", "fusionrec")]["spec"]["predictor"]["model"]["storageUri"] == "gs://m/v2"


@pytest.mark.parametrize(
    "ready,stale,smoke,why",
    [
        (False, False, None, "did not become ready"),
        (True, False, lambda: False, "smoke"),
        (True, True, lambda: True, "generation 2 was not observed"),
    ],
)
def test_a_failing_canary_is_rolled_back(ready, stale, smoke, why):
    """A stale Ready (the status of the revision before the patch) used to promote an unverified canary."""
    kube = FakeKServe()
    deploy(kube, render(load_manifest(), storage_uri="gs://m/v1"))
    kube.ready, kube.stale = ready, stale
    result = deploy(
        kube,
        render(load_manifest(), storage_uri="gs://m/bad"),
        canary_percent=10,
        smoke=smoke,
        timeout_s=0.2,
        poll_s=0.05,
    )
    assert result.action == "rolled_back" and why in result.reason
    assert kube.calls[1:] == ["patch 10", "patch 0"]  # traffic pinned back to the previous revision


def test_an_api_error_other_than_not_found_is_not_taken_for_a_new_service():
    class Forbidden(FakeKServe):
        def get(self, name, namespace=None):
            kserve_error(403, "Forbidden")

    with pytest.raises(RuntimeError, match="403"):
        deploy(Forbidden(), render(load_manifest()))


def test_a_rollout_changes_only_the_model_of_the_live_service():
    """The bundle's overlay (replicas, images, security settings) survives the pipeline's deploy step."""
    kube = FakeKServe()
    live = copy.deepcopy(load_manifest())
    live["spec"]["predictor"]["minReplicas"] = 3
    live["spec"]["transformer"]["containers"][0]["image"] = "reg/serving@sha256:" + "f" * 64
    kube.objects[("fusionrec", "fusionrec")] = copy.deepcopy(live)
    result = rollout(kube, "pvc://fusionrec-models/versions/v0009", smoke=lambda: True)
    assert result.action == "promoted" and kube.calls == ["patch 10", "patch 100"]
    now = kube.objects[("fusionrec", "fusionrec")]
    assert now["spec"]["predictor"]["model"]["storageUri"] == "pvc://fusionrec-models/versions/v0009"
    live["spec"]["predictor"]["model"]["storageUri"] = "pvc://fusionrec-models/versions/v0009"
    live["spec"]["predictor"]["canaryTrafficPercent"] = 100
    assert now["spec"] == live["spec"]


def test_a_rollout_needs_the_bundle_applied_first():
    with pytest.raises(ConfigError, match="apply the bundle first"):
        rollout(FakeKServe(), "pvc://fusionrec-models/versions/v0001", namespace="ml")


def test_publishing_features_replaces_the_folder_whole(tmp_path):
    old, new = tmp_path / "served", tmp_path / "run"
    old.mkdir(), new.mkdir()
    (old / "registry.db").write_text("old"), (old / "stale.parquet").write_text("x")
    (new / "registry.db").write_text("new"), (new / "features.json").write_text("{}")
    assert publish_features(new, old) == old
    assert sorted(p.name for p in old.iterdir()) == ["features.json", "registry.db"]
    assert (old / "registry.db").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == [
        "run",
        "served",
    ]
    # kept for a rollback, and given back
    from fusionrec.platform.deploy import restore_features

    (new / "registry.db").write_text("newer")
    publish_features(new, old, keep_previous=True)
    assert (old / "registry.db").read_text() == "newer" and (
        tmp_path / ".served.previous" / "registry.db"
    ).read_text() == "new"
    assert restore_features(old) and (old / "registry.db").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "served"]


def test_a_rolled_back_canary_gives_back_the_champion_and_the_features(tmp_path, monkeypatch):
    """The register step promotes before the canary; a rollback used to leave champion.json and the Feast
    registry on the version that is not in service."""
    import json

    from fusionrec.config import load_settings
    from fusionrec.platform import deploy as deploy_module
    from fusionrec.registry import champion, register_judged

    registry = tmp_path / "registry"
    for n, ndcg in ((1, 0.2), (2, 0.3)):
        cand = tmp_path / f"c{n}"
        cand.mkdir()
        (cand / "model.safetensors").write_bytes(f"w{n}".encode())
        (cand / "metrics.json").write_text(json.dumps({"test": {"ndcg@20": ndcg}}))
        register_judged(registry, cand)
    assert champion(registry).name == "v0002"
    live, new = tmp_path / "features", tmp_path / "new-features"
    for folder, tag in ((live, "old"), (new, "new")):
        folder.mkdir()
        (folder / "registry.db").write_text(tag)
    kube = FakeKServe()
    deploy(kube, render(load_manifest(), storage_uri="pvc://fusionrec-models/versions/v0001"))
    kube.ready = False
    monkeypatch.setattr("kserve.KServeClient", lambda: kube)
    monkeypatch.setattr(
        deploy_module, "wait_generation", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("not ready"))
    )
    settings = load_settings(env={"FUSIONREC__FEATURES__DATA_DIR": str(live)})
    with pytest.raises(Unavailable, match="the champion is v0001 again"):
        deploy_module.deploy_version(
            settings,
            registry=str(registry),
            version="v0002",
            target="kserve",
            registry_uri="pvc://fusionrec-models",
            features_dir=str(new),
        )
    assert champion(registry).name == "v0001" and (live / "registry.db").read_text() == "old"
