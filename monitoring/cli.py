"""Usage: fusionrec monitor run | ui | reference | compile | schedule

The ``monitor`` command group (plugged into the ``fusionrec`` CLI through the ``fusionrec.commands``
entry point). Parses arguments and calls :mod:`fusionrec.monitoring` and :mod:`pipelines.monitoring`.
"""

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli import Baselines, Dim, Epochs, Margin, Sets, Spec, _baselines, _modalities, _overrides, _spec

app = typer.Typer(help="Drift of the inference log, the retraining loop, and the SRE dashboard.", no_args_is_help=True)


def _settings(sets, profile):
    from fusionrec.config import settings_from

    return settings_from(_overrides(sets, profile))


@app.command("run")
def run_cmd(
    contract: Annotated[Path, typer.Option(help="The dataset contract a retraining run trains on.")] = Path(
        "configs/datasets/movielens-100k-mm.yaml"
    ),
    registry: Annotated[
        Optional[Path], typer.Option(help="The model registry (default: artifacts/<dataset>/models).")
    ] = None,
    root: Annotated[Path, typer.Option(help="The retraining run's pipeline root.")] = Path("artifacts/pipeline"),
    modalities: Annotated[Optional[str], typer.Option(help="Modalities to embed (default: the contract's).")] = None,
    spec: Spec = None,
    epochs: Epochs = None,
    dim: Dim = None,
    margin: Margin = None,
    baselines: Baselines = None,
    host: Annotated[
        Optional[str],
        typer.Option(
            help="Retrain on this Kubeflow Pipelines endpoint (kfp.Client); default: the KFP local runner here."
        ),
    ] = None,
    retrain: Annotated[bool, typer.Option(help="Start retraining when the policy fires (off: record only).")] = True,
    deploy: Annotated[bool, typer.Option(help="A local retraining ends with the servers on the new champion.")] = True,
    at: Annotated[
        Optional[str], typer.Option(help="Evaluate the window ending at this ISO time (default: now).")
    ] = None,
    sets: Sets = None,
    profile: Annotated[Optional[str], typer.Option(help="Settings profile.")] = None,
) -> None:
    """Evaluate the latest window, write the reports and the dashboard, and retrain when the policy fires."""
    from fusionrec.data.contract import load_contract
    from fusionrec.monitoring.loop import run_once
    from pipelines.monitoring import retrainer

    settings = _settings(sets, profile)
    name = load_contract(contract).name
    training = {
        "contract": str(contract),
        "registry": str(registry or Path("artifacts") / name / "models"),
        "modalities": _modalities(contract, modalities),
        "spec": _spec(spec, dim=dim, epochs=epochs),
        "settings": _overrides(sets, profile),
        "margin": margin,
        "baselines": _baselines(baselines),
    }
    if not host:
        training.update(pipeline_root=root, deploy=deploy)
    now = datetime.fromisoformat(at) if at else None
    if now is not None and now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    outcome = run_once(settings, now=now, retrain=retrainer(host, training) if retrain else None)
    d = outcome.decision
    typer.echo(
        json.dumps(
            {
                "status": d.status,
                "retrain": d.retrain,
                "debounced": d.debounced,
                "reason": d.reason,
                "records": d.records,
                "drifted": d.drifted,
                "share": d.share,
                "run": d.run,
                "report": str(outcome.reports[0]) if outcome.reports else None,
            },
            indent=2,
        )
    )


@app.command("ui")
def ui_cmd(
    port: Annotated[int, typer.Option(help="Port of the Evidently UI.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    secret_file: Annotated[
        Optional[Path],
        typer.Option(
            help="A file holding Evidently's write token (a mounted "
            "Secret): without one its API takes writes from anyone."
        ),
    ] = None,
    sets: Sets = None,
    profile: Annotated[Optional[str], typer.Option(help="Settings profile.")] = None,
) -> None:
    """Serve the monitoring dashboard (Evidently's UI over the workspace; sends nothing out)."""
    from fusionrec.config import monitoring_dir
    from fusionrec.monitoring import dashboard

    folder = monitoring_dir(_settings(sets, profile)) / "workspace"
    try:
        dashboard.project(dashboard.workspace(folder))  # the dashboard exists before the first window
    except OSError as e:  # a read-only workspace (the cluster's UI mounts it so): the monitoring step made it
        typer.echo(f"the workspace {folder} is not writable ({e.strerror}); serving it as it is", err=True)
    typer.echo(f"Evidently UI on http://{host}:{port} (workspace {folder})")
    evidently = Path(sys.executable).with_name("evidently")
    cmd = [
        str(evidently) if evidently.exists() else "evidently",
        "ui",
        "--workspace",
        str(folder),
        "--host",
        host,
        "--port",
        str(port),
    ]
    sys.stdout.flush()
    # the UI replaces this process: a signal to it (Ctrl-C, a supervisor's SIGTERM) reaches the server itself
    env = {**os.environ, "DO_NOT_TRACK": "1"}
    if secret_file is not None:
        from fusionrec.errors import ConfigError

        try:
            token = secret_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            raise ConfigError(f"--secret-file {secret_file}: cannot be read") from None
        if len(token) < 32:
            raise ConfigError(f"--secret-file {secret_file}: the token is shorter than 32 characters")
        env["EVIDENTLY_SECRET"] = token  # Evidently reads it from its environment only
    os.execvpe(cmd[0], cmd, env)


@app.command("reference")
def reference_cmd(
    start: Annotated[str, typer.Option(help="Window start, ISO time (UTC), of traffic you vouch for.")],
    end: Annotated[str, typer.Option(help="Window end, ISO time (UTC).")],
    sets: Sets = None,
    profile: Annotated[Optional[str], typer.Option(help="Settings profile.")] = None,
) -> None:
    """Pin the new users and queries of a window of logged traffic as the callers' drift reference.

    Known users and anonymous requests are compared with the served model's own answers; what callers
    bring (new users' histories, queries) is theirs, so a person says which window of it is normal.
    """
    from fusionrec.errors import ConfigError
    from fusionrec.monitoring.loop import pin_reference

    def parse(value: str, name: str) -> datetime:
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"--{name}: {value[:40]!r} is not an ISO time (e.g. 2026-12-01T10:00)") from None
        return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)

    t0, t1 = parse(start, "start"), parse(end, "end")
    if t1 <= t0:
        raise ConfigError("--end must be after --start")
    path = pin_reference(_settings(sets, profile), t0, t1)
    typer.echo(f"callers' window: {path}")


@app.command("compile")
def compile_cmd(
    out: Annotated[Path, typer.Option(help="Where to write the monitoring pipeline's IR YAML.")] = Path(
        "artifacts/monitoring-pipeline.yaml"
    ),
    image: Annotated[Optional[str], typer.Option(help="The component image.")] = None,
) -> None:
    """Compile the monitoring pipeline for the Kubeflow UI."""
    from pipelines.monitoring import compile_pipeline
    from pipelines.training import DEFAULT_IMAGE

    typer.echo(str(compile_pipeline(out, image or DEFAULT_IMAGE)))


@app.command("schedule")
def schedule_cmd(
    host: Annotated[str, typer.Option(help="The Kubeflow Pipelines API endpoint.")],
    contract: Annotated[str, typer.Option(help="The dataset contract as the steps see it.")],
    registry: Annotated[
        Optional[str],
        typer.Option(help="The registry folder as the steps see it (default: the settings' cluster.registry_mount)."),
    ] = None,
    cron: Annotated[str, typer.Option(help="KFP's six-field cron expression.")] = "0 5 * * * *",
    image: Annotated[Optional[str], typer.Option(help="The component image.")] = None,
    modalities: Annotated[str, typer.Option(help="Comma-separated modalities.")] = "text,image",
    spec: Spec = None,
    epochs: Epochs = None,
    dim: Dim = None,
    service_account: Annotated[
        Optional[str],
        typer.Option(help="The ServiceAccount the monitoring runs run as (the bundle's: fusionrec-monitoring)."),
    ] = None,
    training_service_account: Annotated[
        Optional[str],
        typer.Option(help="The ServiceAccount of the training runs it starts (the bundle's: fusionrec-training)."),
    ] = None,
) -> None:
    """Create (or replace) the recurring run of the monitoring pipeline on a cluster."""
    from fusionrec.config import ClusterSettings
    from pipelines.monitoring import schedule
    from pipelines.training import DEFAULT_IMAGE

    training = {
        "contract": contract,
        "registry": registry or ClusterSettings().registry_mount,
        "modalities": modalities.split(","),
        "spec": _spec(spec, dim=dim, epochs=epochs),
        "settings": {"profile": "cluster"},
    }
    job = schedule(
        host,
        image=image or DEFAULT_IMAGE,
        training=training,
        cron=cron,
        service_account=service_account,
        training_service_account=training_service_account,
    )
    typer.echo(f"recurring run {job} on {host}: {cron}")
