"""The training pipeline's compiled IR (what the Kubeflow UI uploads) and the checks on its parameters."""

import pytest
import yaml

from fusionrec.errors import ConfigError
from pipelines.training import Target, check_parameters, compile_pipeline, submit

pytestmark = pytest.mark.unit

IMAGE = "registry.example/fusionrec@sha256:" + "a" * 64


@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    path = compile_pipeline(tmp_path_factory.mktemp("ir") / "pipeline.yaml", Target(image=IMAGE, cluster=True, gpus=2))
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _tasks(spec):
    root = spec["root"]["dag"]["tasks"]
    cond = next(n for n in root if n.startswith("condition"))
    loop = next(n for n in root if n.startswith("for-loop"))
    inner = spec["components"][f"comp-{cond}"]["dag"]["tasks"]
    looped = spec["components"][f"comp-{loop}"]["dag"]["tasks"]
    return root, cond, loop, inner, looped


def test_the_dag_runs_validate_embed_per_modality_features_train_evaluate_gate(ir):
    spec, _ = ir
    root, cond, loop, inner, looped = _tasks(spec)
    assert set(root) == {"validate", loop, "collect", "features", "train", "evaluate", "gate", cond}
    assert set(looped) == {"embed"} and set(inner) == {"register", "deploy"}
    assert root[loop]["parameterIterator"]["items"] == {"inputParameter": "pipelinechannel--modalities"}
    assert root[loop]["dependentTasks"] == ["validate"]
    assert root["collect"]["dependentTasks"] == [loop]  # every modality's embeddings, collected
    assert set(root["train"]["dependentTasks"]) == {"validate", "collect", "features"}  # features come from Feast
    assert {"train", "evaluate"} <= set(root["gate"]["dependentTasks"])
    assert inner["deploy"]["dependentTasks"] == ["register"]


def test_register_and_deploy_run_only_under_the_gate(ir):
    spec, _ = ir
    root, cond, *_ = _tasks(spec)
    assert root[cond]["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--gate-Output'] == true"
    assert "gate" in root[cond]["dependentTasks"]


def test_parameters_name_the_contract_encoders_model_and_margin_and_no_secret(ir):
    spec, _ = ir
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"contract", "registry", "modalities", "spec", "settings", "margin", "baselines"} <= set(params)
    assert params["margin"] == {"defaultValue": 0.01, "isOptional": True, "parameterType": "NUMBER_DOUBLE"}
    assert params["settings"]["defaultValue"] == {"profile": "cluster"}
    assert not [p for p in params if any(w in p for w in ("password", "secret", "key", "token", "redis"))]


def test_caching_is_on_except_where_a_step_reads_the_registry(ir):
    spec, _ = ir
    root, _, _, inner, looped = _tasks(spec)
    for name in ("validate", "collect", "features", "train", "evaluate"):
        assert root[name]["cachingOptions"] == {"enableCache": True}, name
    assert looped["embed"]["cachingOptions"] == {"enableCache": True}
    assert root["gate"]["cachingOptions"] == {} and inner["register"]["cachingOptions"] == {}
    assert inner["deploy"]["cachingOptions"] == {}


def test_retries_on_the_steps_that_touch_the_network_only(ir):
    spec, _ = ir
    root, _, _, inner, looped = _tasks(spec)
    retried = {n for n, t in {**root, **inner, **looped}.items() if "retryPolicy" in t}
    assert retried == {"embed", "features", "register", "deploy"}
    assert root["features"]["retryPolicy"]["maxRetryCount"] == 3


def test_train_requests_gpus_and_every_step_runs_the_given_image_with_requests(ir):
    spec, _ = ir
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 9
    for name, ex in executors.items():
        assert ex["container"]["image"] == IMAGE, name
        assert ex["container"]["resources"]["resourceCpuRequest"], name
        assert ex["container"]["resources"]["resourceMemoryLimit"], name
    gpu = executors["exec-train"]["container"]["resources"]["accelerator"]
    assert (gpu["resourceType"], gpu["resourceCount"]) == ("nvidia.com/gpu", "2")
    assert not [n for n, ex in executors.items() if n != "exec-train" and "accelerator" in ex["container"]["resources"]]


def test_no_gpu_when_asked_for_none(tmp_path):
    spec, _ = yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", Target(cluster=True, gpus=0)).read_text())
    assert "accelerator" not in spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]


def test_credentials_reach_only_the_steps_that_use_them_as_kubernetes_secrets(ir):
    """Every step used to get the Redis and object-storage Secrets; now each gets what it reads, nothing more."""
    _, platform = ir
    assert len(platform) == 9
    want = {
        "exec-features": {"fusionrec-redis"},
        "exec-embed": {"fusionrec-object-storage"},
        "exec-train": {"fusionrec-object-storage"},
        "exec-evaluate": {"fusionrec-object-storage"},
    }
    for name, ex in platform.items():
        secrets = {s["secretName"]: {k["envVar"] for k in s["keyToEnv"]} for s in ex.get("secretAsEnv", [])}
        assert set(secrets) == want.get(name, set()), name
        if "fusionrec-redis" in secrets:
            assert secrets["fusionrec-redis"] == {"FUSIONREC__FEATURES__REDIS_CONNECTION"}
        if "fusionrec-object-storage" in secrets:
            assert "AWS_SECRET_ACCESS_KEY" in secrets["fusionrec-object-storage"], name
        labels = ex["podMetadata"]["labels"]  # the pipeline steps' NetworkPolicy selects them by it
        assert labels["fusionrec.io/pipeline-step"] == "true", name
    assert platform["exec-register"]["pvcMount"][0]["mountPath"] == "/mnt/registry"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"spec": {"fusion": "sum"}}, "training spec: fusion: Input should be 'gated' or 'concat' (got 'sum')"),
        (
            {"settings": {"encoders": {"image": {"kind": "resnet50"}}}},
            "'encoders.image.kind': Input should be 'efficientnet_lite0', 'efficientnet_lite1', "
            "'efficientnet_lite2' or 'hf' (got 'resnet50')",
        ),
        ({"settings": {"encoders": {"vision": {}}}}, "unknown key 'encoders.vision'"),
        ({"baselines": ["mostpop", "lightgcn"]}, "baselines: ['lightgcn'] unknown"),
        ({"modalities": ["text", "text"]}, "names one twice"),
        ({"spec": {"modalities": "audio"}}, "spec.modalities ['audio'] are not all embedded"),
        ({"margin": 1.5}, "margin: 1.5 is not a share"),
    ],
)
def test_a_bad_parameter_is_refused_before_the_run_with_its_name(kwargs, message):
    args = {"spec": {}, "settings": {}, "modalities": ["text", "image"], "baselines": ["mostpop"], "margin": 0.01}
    with pytest.raises(ConfigError) as err:
        check_parameters(**{**args, **kwargs})
    assert message in str(err.value)


def test_a_modality_the_dataset_lacks_is_refused_at_submit(tmp_path):
    contract = tmp_path / "c.yaml"
    contract.write_text(
        "name: tiny\nformat: raw_catalogue\ninteractions: {path: i.csv, roles: {user_id: u, item_id: i}}\n"
        "items: {path: items.csv, roles: {item_id: i, text: [title]}}\n"
    )
    with pytest.raises(ConfigError, match=r"has no \['image'\]; it has \['text'\]"):
        check_parameters(
            spec={}, settings={}, modalities=["text", "image"], baselines=[], margin=0.0, contract=str(contract)
        )


class _Client:
    """Records what kfp.Client would be asked (no Kubeflow API server can run here)."""

    def __init__(self):
        self.calls = []

    def create_run_from_pipeline_package(self, package, arguments, run_name, experiment_name, service_account=None):
        self.calls.append((yaml.safe_load_all(open(package).read()).__next__(), arguments, run_name, experiment_name))
        self.service_account = service_account
        return type("Run", (), {"run_id": "run-1"})()


def test_submit_names_the_run_after_what_it_trains_and_passes_no_credentials():
    client = _Client()
    run = submit(
        "http://kfp.example",
        contract="/data/movielens.yaml",
        registry="/mnt/registry",
        modalities=["text", "image"],
        spec={"protocol": "temporal", "fusion": "concat", "seed": 2},
        experiment="nightly",
        client=client,
    )
    ((spec, arguments, run_name, experiment),) = client.calls
    assert run == "run-1" and experiment == "nightly"
    assert run_name.startswith("movielens temporal s2 concat text+image ")
    assert spec["pipelineInfo"]["name"] == "fusionrec-training"
    assert arguments["settings"] == {"profile": "cluster"} and arguments["modalities"] == ["text", "image"]
    assert client.service_account == "fusionrec-training"  # the ServiceAccount the bundle gives rollout rights


def test_submit_refuses_an_unknown_encoder_without_calling_the_server():
    client = _Client()
    with pytest.raises(ConfigError, match="encoders.text.max_lenght"):
        submit(
            "http://kfp.example",
            contract="/data/x.yaml",
            registry="/r",
            modalities=["text"],
            settings={"encoders": {"text": {"max_lenght": 64}}},
            client=client,
        )
    assert client.calls == []


# -- the monitoring pipeline -------------------------------------------------------------------------


class _SchedulingClient:
    """Records what kfp.Client would be asked to schedule."""

    def __init__(self, existing=()):
        self.jobs, self.deleted = [], []
        self.existing = [type("Job", (), {"display_name": n, "recurring_run_id": i})() for n, i in existing]

    def create_experiment(self, name):
        return type("Experiment", (), {"experiment_id": f"exp-{name}"})()

    def list_recurring_runs(self, experiment_id, page_size):
        return type("Page", (), {"recurring_runs": self.existing or None})()

    def delete_recurring_run(self, job_id):
        self.deleted.append(job_id)

    def create_recurring_run(self, **kwargs):
        self.jobs.append({**kwargs, "package": next(yaml.safe_load_all(open(kwargs["pipeline_package_path"]).read()))})
        return type("Job", (), {"recurring_run_id": "job-1"})()


def test_monitoring_pipeline_reads_the_log_key_from_a_secret_and_never_caches(tmp_path):
    from pipelines.monitoring import compile_pipeline

    docs = list(yaml.safe_load_all(compile_pipeline(tmp_path / "m.yaml", "registry.example/fusionrec:1").read_text()))
    ir = docs[0]
    assert ir["pipelineInfo"]["name"] == "fusionrec-monitoring"
    task = ir["root"]["dag"]["tasks"]["monitor"]
    assert task["cachingOptions"].get("enableCache") is not True  # every turn reads a new window
    platform = yaml.safe_dump(docs)
    assert "fusionrec-monitoring" in platform and "FUSIONREC__MONITORING__LOG_KEY" in platform
    executor = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-monitor"]
    key = next(s for s in executor["secretAsEnv"] if s["secretName"] == "fusionrec-monitoring")
    assert key["optional"] is False  # a missing Secret fails the step: never a silent new key
    assert "registry.example/fusionrec:1" in platform and "log_key" not in ir["root"]["inputDefinitions"]["parameters"]


def test_the_recurring_run_is_hourly_one_at_a_time_without_catch_up():
    from pipelines.monitoring import schedule

    client = _SchedulingClient()
    job = schedule(
        "http://kfp.example", image="img:1", training={"contract": "/data/ml.yaml", "registry": "/mnt/r"}, client=client
    )
    (call,) = client.jobs
    assert job == "job-1" and call["experiment_id"] == "exp-fusionrec-monitoring"
    assert call["cron_expression"] == "0 5 * * * *" and call["max_concurrency"] == 1 and call["no_catchup"] is True
    assert call["params"]["training"]["contract"] == "/data/ml.yaml"
    assert call["package"]["pipelineInfo"]["name"] == "fusionrec-monitoring"


def test_scheduling_again_replaces_the_recurring_run_and_runs_as_the_bundles_service_accounts():
    from pipelines.monitoring import schedule

    client = _SchedulingClient(existing=[("fusionrec-monitoring-hourly", "old-7"), ("someone-elses", "x-1")])
    schedule(
        "http://kfp.example",
        image="reg/fusionrec@sha256:" + "c" * 64,
        training={"contract": "/c.yaml"},
        service_account="fusionrec-monitoring",
        training_service_account="fusionrec-training",
        client=client,
    )
    (call,) = client.jobs
    assert client.deleted == ["old-7"] and call["service_account"] == "fusionrec-monitoring"
    # the retraining runs it starts use the same image, as the ServiceAccount with the rollout rights
    assert call["params"]["training"]["image"] == "reg/fusionrec@sha256:" + "c" * 64
    assert call["params"]["training"]["service_account"] == "fusionrec-training"


class _UploadClient:
    def __init__(self, pipeline_id=None):
        self.pipeline_id, self.uploads = pipeline_id, []

    def get_pipeline_id(self, name):
        return self.pipeline_id

    def upload_pipeline(self, package, pipeline_name, description):
        self.uploads.append(("pipeline", pipeline_name))
        self.pipeline_id = "p-1"
        return type("P", (), {"pipeline_id": "p-1"})()

    def upload_pipeline_version(self, package, pipeline_version_name, pipeline_id):
        ir = next(yaml.safe_load_all(open(package).read()))
        self.uploads.append(("version", pipeline_version_name, pipeline_id, ir["pipelineInfo"]["name"]))
        return type("V", (), {"pipeline_version_id": f"v-{len(self.uploads)}"})()


def test_upload_creates_the_pipeline_once_then_adds_versions_named_after_the_image():
    from pipelines.training import Target, upload

    client = _UploadClient()
    first = upload("http://kfp", target=Target(image="reg/fusionrec@sha256:" + "d" * 64, cluster=True), client=client)
    second = upload("http://kfp", target=Target(image="reg/fusionrec:0.2", cluster=True), version="0.2", client=client)
    assert [u[0] for u in client.uploads] == ["pipeline", "version", "version"] and (first, second) == ("v-2", "v-3")
    assert client.uploads[1][1].startswith("fusionrec@" + "d" * 8) and client.uploads[1][2:] == (
        "p-1",
        "fusionrec-training",
    )
    assert client.uploads[2][1] == "0.2"


def test_on_a_cluster_the_steps_run_as_non_root_and_only_the_feature_writer_is_labelled_for_redis(tmp_path):
    from pipelines.training import Target, compile_pipeline

    docs = list(
        yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", Target(cluster=True, trainer="trainjob")).read_text())
    )
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    by_step = {name.removeprefix("exec-"): spec for name, spec in executors.items()}
    for step, spec in by_step.items():
        assert spec["securityContext"] == {"runAsUser": "10001", "runAsGroup": "10001", "runAsNonRoot": True}, (
            step
        )  # int64 as JSON string
    labelled = sorted(
        s
        for s, spec in by_step.items()
        if "fusionrec.io/feature-store-client" in spec.get("podMetadata", {}).get("labels", {})
    )
    assert labelled == ["features"]
    assert [(v["constant"], v["mountPath"]) for v in by_step["deploy"]["pvcMount"]] == [
        ("fusionrec-models", "/mnt/registry"),
        ("fusionrec-artifacts", "/mnt/artifacts"),
    ]
    (template,) = by_step["train-distributed"]["configMapAsVolume"]
    assert (template["configMapName"], template["mountPath"], template["optional"]) == (
        "fusionrec-trainjob",
        "/etc/fusionrec/trainjob",
        True,
    )  # the bundle's ConfigMap, where the step reads it


def test_an_api_that_refuses_the_call_is_unavailable_with_its_status():
    import kfp_server_api

    from fusionrec.errors import Unavailable
    from pipelines.training import kfp_api

    class Refusing:
        def get_pipeline_id(self, name):
            raise kfp_server_api.ApiException(status=403, reason="Forbidden")

    with pytest.raises(Unavailable, match="refused the call: 403 Forbidden"):
        with kfp_api("http://kfp.example", Refusing()) as client:
            client.get_pipeline_id("fusionrec-training")
    with pytest.raises(KeyError):  # any other error is not taken for the API's answer
        with kfp_api("http://kfp.example", Refusing()):
            raise KeyError("x")


def test_the_step_cache_is_keyed_by_the_code_the_steps_run(tmp_path, monkeypatch):
    """KFP keys a cached step by its component and inputs; an edited library under an unchanged component
    must not be answered from the cache of the code before (the local run's cache folder is per digest)."""
    import fusionrec
    from pipelines.training import code_digest

    fake = tmp_path / "fusionrec"
    (fake / "encoders").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "encoders" / "image.py").write_text("SIZE = 224\n")
    monkeypatch.setattr(fusionrec, "__file__", str(fake / "__init__.py"))
    before = code_digest()
    assert code_digest() == before  # the same code, the same cache
    (fake / "encoders" / "image.py").write_text("SIZE = 240\n")
    assert code_digest() != before
    (fake / "encoders" / "image.py").write_text("SIZE = 224\n")
    (fake / "notes.txt").write_text("not code")
    assert code_digest() == before  # only the code counts
