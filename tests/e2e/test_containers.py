"""The images, really built and run: the component image built with podman (no registry: a debootstrap
base), one pipeline step run in it through KFP's DockerRunner on podman's Docker-compatible socket, and
the whole pipeline with every step in its container. Skipped with a message where podman is absent
(.ci/run installs it with scripts/podman-setup.sh)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.container]
REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/fusionrec:0.1.0-cpu"

if shutil.which("podman") is None:
    pytest.skip(
        "podman is not installed here (scripts/podman-setup.sh installs it; .ci/run does)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def image():
    r = subprocess.run(
        [str(REPO / "scripts" / "images.sh"), "component", "cpu"], capture_output=True, text=True, timeout=3600
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return IMAGE


@pytest.fixture(scope="module")
def docker_host(tmp_path_factory):
    """podman's Docker-compatible API on a socket of our own."""
    sock = tmp_path_factory.mktemp("podman") / "podman.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time", "0", f"unix://{sock}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if sock.exists():
            break
        time.sleep(0.1)
    yield f"unix://{sock}"
    service.terminate()
    service.wait(timeout=30)


def test_the_image_runs_as_a_non_root_user_with_fusionrec_kfp_and_the_manifest_templates(image):
    """The deploy and TrainJob steps render manifests: the installed package finds them in the image."""
    r = subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            image,
            "sh",
            "-c",
            "id -u && python -c 'import fusionrec, kfp, torch, components.training, serving.predictor; "
            "from fusionrec.platform.deploy import load_manifest; "
            "from fusionrec.platform.trainjob import render_trainjob; "
            "load_manifest(); render_trainjob(name=\"x\", image=\"i\", job_dir=\"/j\", spec={}); "
            "print(kfp.__version__, torch.__version__)'",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    uid, versions = r.stdout.split()[0], r.stdout.split()[1:]
    assert uid == "10001" and versions == ["2.17.3", "2.13.0+cpu"]


def test_a_pipeline_step_runs_in_its_container_through_the_docker_api(
    image, docker_host, synth_clean, tmp_path, monkeypatch
):
    """The validate component, as KFP's DockerRunner runs it on a laptop: its outputs land in the pipeline
    root, written by the image's user (uid 10001), not by root."""
    from docker.types import Mount
    from kfp import local

    from components.training import build
    from pipelines.training import docker_runner

    monkeypatch.setenv("DOCKER_HOST", docker_host)
    root = tmp_path / "root"
    root.mkdir()
    root.chmod(0o777)
    local.init(
        runner=docker_runner([Mount(str(synth_clean), str(synth_clean), type="bind")]), pipeline_root=str(root)
    )  # the runner mounts the pipeline root itself
    task = build(image)["validate"](contract=str(synth_clean / "dataset.yaml"), settings={})
    clean = Path(task.outputs["clean"].path)
    assert (clean / "items.parquet").exists() and (clean / "report.json").exists()
    report = Path(task.outputs["report"].path)
    assert "<html" in report.read_text().lower()
    assert report.stat().st_uid == 10001
    assert json.loads(Path(task.outputs["checks"].path).read_text())["failed/interactions.rating_in_range"] == 0


@pytest.mark.parametrize("code", [0, 3])
def test_a_step_reports_its_containers_own_exit_status_even_when_it_exits_at_once(
    image, docker_host, monkeypatch, capsys, code
):
    """kfp's own runner reads the status after an auto-removed container is gone: podman answers 500 (a CI
    run failed on it) and kfp takes a vanished container for success. Ours reads it first, then removes."""
    import docker

    from pipelines.training import run_container

    monkeypatch.setenv("DOCKER_HOST", docker_host)
    client = docker.from_env()
    before = {c.id for c in client.containers.list(all=True)}
    command = ["python", "-c", f"import sys; print('step {code}'); sys.exit({code})"]
    assert run_container(client, image, command, volumes={}) == code
    assert f"step {code}" in capsys.readouterr().out
    assert {c.id for c in client.containers.list(all=True)} == before


def test_the_whole_pipeline_runs_with_every_step_in_its_container(image, docker_host, synth_clean, tmp_path, free_port):
    env = {**os.environ, "DOCKER_HOST": docker_host, "FUSIONREC_PROFILE": "local"}
    options = [
        "--set",
        f"serving.predictor_port={free_port()}",
        "--set",
        f"serving.transformer_port={free_port()}",
        "--set",
        f"paths.artifacts={tmp_path / 'artifacts'}",
        "--set",
        f"paths.cache={tmp_path / 'cache'}",
    ]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusionrec",
            "pipeline",
            "run",
            "--local",
            "--runner",
            "docker",
            "--image",
            image,
            "--contract",
            str(synth_clean / "dataset.yaml"),
            "--registry",
            str(tmp_path / "models"),
            "--root",
            str(tmp_path / "root"),
            "--epochs",
            "2",
            "--dim",
            "16",
            *options,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    try:
        assert r.returncode == 0, r.stderr[-4000:]
        summary = json.loads(r.stdout[r.stdout.rindex('{\n  "promoted"') :])
        assert summary["promoted"] is True and summary["champion"] == "v0001"
        assert summary["serving"]  # served on the host after the run: a container's servers die with it
        (run,) = (tmp_path / "root").glob("fusionrec-training-*")
        # every step ran in the image: what its executor wrote is owned by the image's user, not by root
        for step in ("validate", "collect", "features", "train", "evaluate", "gate", "register", "deploy"):
            assert (run / step / "executor_output.json").stat().st_uid == 10001, step
        assert (run / "train" / "model" / "model.safetensors").stat().st_uid == 10001
        assert json.loads((tmp_path / "models" / "champion.json").read_text())["version"] == "v0001"
    finally:
        subprocess.run(
            [sys.executable, "-m", "fusionrec", "serve", "--stop"],
            capture_output=True,
            timeout=60,
            env={**env, "FUSIONREC__PATHS__ARTIFACTS": str(tmp_path / "artifacts")},
        )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", ["monitoring-sink", "evidently-ui"])
def test_the_bundles_services_run_in_the_image_as_their_manifests_say(image, name, tmp_path):
    """The dev overlay's Deployment, run by podman as the kubelet would: its image, command, environment,
    user, read-only root filesystem without capabilities, its volumes; its probes answer."""
    import httpx

    from fusionrec.platform.bundle import kustomize

    (dep,) = [
        d
        for d in kustomize(REPO / "manifests" / "overlays" / "dev")
        if d["kind"] == "Deployment" and d["metadata"]["name"] == name
    ]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == image and c["securityContext"]["readOnlyRootFilesystem"] is True
    user = pod["securityContext"]["runAsUser"]
    port = _free_port()  # host networking: the container's port must not collide with the servers here
    command = list(c["command"])
    command[command.index("--port") + 1] = str(port)
    args = [
        "podman",
        "run",
        "-d",
        "--network",
        "host",
        "--read-only",
        "--user",
        f"{user}:{user}",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--name",
        f"bundle-{name}-{port}",
    ]
    args += [a for e in c["env"] if "value" in e for a in ("-e", f"{e['name']}={e['value']}")]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in c["volumeMounts"]:
        v = volumes[m["name"]]
        if "emptyDir" in v:
            args += ["--tmpfs", f"{m['mountPath']}:mode=1777"]
            continue
        host = tmp_path / m["name"]
        host.mkdir()
        if "secret" in v:  # the Secret's keys as files, readable by the pod's group as with defaultMode 0440
            for item in v["secret"]["items"]:
                (host / item["path"]).write_text("k" * 64)
                (host / item["path"]).chmod(0o444)
        host.chmod(0o777)
        args += ["-v", f"{host}:{m['mountPath']}" + (":ro" if m.get("readOnly") else "")]
    container = subprocess.run(args + [image] + command, capture_output=True, text=True, timeout=120)
    assert container.returncode == 0, container.stderr
    cid = container.stdout.strip()
    try:
        answered = {}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(answered) < 2:
            for probe in ("readinessProbe", "livenessProbe"):
                try:
                    r = httpx.get(f"http://127.0.0.1:{port}{c[probe]['httpGet']['path']}", timeout=5)
                    if r.status_code == 200:
                        answered[probe] = r.status_code
                except httpx.HTTPError:
                    pass
            time.sleep(1)
        logs = subprocess.run(["podman", "logs", cid], capture_output=True, text=True).stdout[-3000:]
        assert answered == {"readinessProbe": 200, "livenessProbe": 200}, logs
        state = subprocess.run(["podman", "inspect", "-f", "{{.State.Running}}", cid], capture_output=True, text=True)
        assert state.stdout.strip() == "true", logs
    finally:
        subprocess.run(["podman", "rm", "-f", cid], capture_output=True)
