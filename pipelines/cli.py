"""Usage: fusionrec pipeline compile --out FILE | run --local | submit --host URL

The ``pipeline`` command group (plugged into the ``fusionrec`` CLI through the ``fusionrec.commands``
entry point). Parses arguments and calls :mod:`pipelines.training`.
"""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    help="The Kubeflow training pipeline: compile it for the UI, run it here, submit it to a cluster.",
    no_args_is_help=True,
)

Contract = Annotated[Path, typer.Option(help="The dataset contract YAML.")]
Modalities = Annotated[
    Optional[str],
    typer.Option(help="Comma-separated modalities to embed, one task each (default: every one the contract has)."),
]
Protocol = Annotated[Optional[str], typer.Option(help="Split: random (the default), temporal, cold_item, given.")]
Fusion = Annotated[Optional[str], typer.Option(help="gated (the default) or concat.")]
Image = Annotated[Optional[str], typer.Option(help="The component image (default: the CPU image's tag).")]
Gpus = Annotated[int, typer.Option(min=0, help="GPUs on the train step.")]
Sets = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set", help="A settings override KEY=VALUE, e.g. encoders.text.checkpoint=s3://m/minilm (repeatable)."
    ),
]


def _overrides(sets: list[str] | None, profile: str | None) -> dict:
    from fusionrec.config import set_overrides

    return {**({"profile": profile} if profile else {}), **set_overrides(sets or [])}


def _modalities(contract: Path, given: str | None) -> list[str]:
    if given:
        return [m.strip() for m in given.split(",") if m.strip()]
    from fusionrec.data.contract import load_contract

    return load_contract(contract).modality_names


def _spec(spec: str | None = None, **flags) -> dict:
    """The training spec of a command line (``--spec`` JSON and the flags given over it), whole, as a dict."""
    from fusionrec.train.request import TrainSpec

    return TrainSpec.from_options(spec, **flags).model_dump(mode="json", exclude_none=True)  # KFP takes no None


Spec = Annotated[
    Optional[str],
    typer.Option(
        help="The training spec as a JSON object (or @FILE): every field of "
        "fusionrec.train.request.TrainSpec; the flags override it."
    ),
]
Seed = Annotated[Optional[int], typer.Option(help="Seed of the split and the model (default: the spec's).")]
Dim = Annotated[Optional[int], typer.Option(help="Shared embedding size (default: the spec's).")]
Epochs = Annotated[Optional[int], typer.Option(help="Most epochs (default: the spec's).")]
Margin = Annotated[
    Optional[float],
    typer.Option(help="Promote only when NDCG@20 beats the champion's by this share (default: the gate's)."),
]
Baselines = Annotated[
    Optional[str], typer.Option(help="Comma-separated baselines for the comparison (default: the pipeline's).")
]


def _baselines(given: str | None) -> list[str] | None:
    return [b.strip() for b in given.split(",") if b.strip()] if given is not None else None


@app.command("compile")
def compile_cmd(
    out: Annotated[Path, typer.Option(help="Where to write the pipeline's IR YAML.")],
    image: Image = None,
    gpus: Gpus = 1,
    accelerator: Annotated[str, typer.Option(help="The GPU resource name.")] = "nvidia.com/gpu",
    trainer: Annotated[
        str,
        typer.Option(
            help="component (train in the step) or trainjob (a Kubeflow Trainer TrainJob: "
            "torchrun across --nodes nodes of --gpus GPUs)."
        ),
    ] = "component",
    nodes: Annotated[int, typer.Option(min=1, help="TrainJob nodes.")] = 2,
) -> None:
    """Compile the training pipeline for a Kubeflow cluster (upload the YAML in the Kubeflow UI)."""
    from pipelines.training import DEFAULT_IMAGE, Target, compile_pipeline

    path = compile_pipeline(
        out,
        Target(
            image=image or DEFAULT_IMAGE, cluster=True, gpus=gpus, accelerator=accelerator, trainer=trainer, nodes=nodes
        ),
    )
    typer.echo(f"wrote {path}")


@app.command("upload")
def upload_cmd(
    host: Annotated[
        str, typer.Option(help="The Kubeflow Pipelines API endpoint, e.g. http://ml-pipeline.kubeflow:8888")
    ],
    image: Image = None,
    gpus: Gpus = 1,
    trainer: Annotated[str, typer.Option(help="component or trainjob (see compile).")] = "component",
    version: Annotated[
        Optional[str], typer.Option(help="The version's name (default: the image and the time).")
    ] = None,
) -> None:
    """Register the training pipeline on Kubeflow Pipelines (a new version), to start it from the UI."""
    from pipelines.training import DEFAULT_IMAGE, Target, upload

    done = upload(
        host, target=Target(image=image or DEFAULT_IMAGE, cluster=True, gpus=gpus, trainer=trainer), version=version
    )
    typer.echo(f"registered the training pipeline on {host}: version {done}")


@app.command("run")
def run_cmd(
    local_: Annotated[
        bool, typer.Option("--local", help="Run with the KFP local runner (required: the cluster path is 'submit').")
    ] = False,
    contract: Contract = Path("configs/datasets/movielens-100k-mm.yaml"),
    registry: Annotated[
        Optional[Path], typer.Option(help="The model registry (default: artifacts/<dataset>/models).")
    ] = None,
    root: Annotated[Path, typer.Option(help="The pipeline root: every step's artifacts, and the step cache.")] = Path(
        "artifacts/pipeline"
    ),
    modalities: Modalities = None,
    spec: Spec = None,
    protocol: Protocol = None,
    seed: Seed = None,
    fusion: Fusion = None,
    dim: Dim = None,
    epochs: Epochs = None,
    model_modalities: Annotated[Optional[str], typer.Option(help="Modalities the model uses (default: all).")] = None,
    margin: Margin = None,
    baselines: Baselines = None,
    runner: Annotated[
        str,
        typer.Option(
            help="subprocess (steps as local processes) or docker (steps in their "
            "containers; DOCKER_HOST may point at podman's socket)."
        ),
    ] = "subprocess",
    image: Annotated[Optional[str], typer.Option(help="The component image for --runner docker.")] = None,
    cache: Annotated[bool, typer.Option(help="Reuse the outputs of steps whose inputs did not change.")] = True,
    deploy: Annotated[bool, typer.Option(help="End with the local model servers up on the champion.")] = True,
    sets: Sets = None,
    profile: Annotated[Optional[str], typer.Option(help="Settings profile for the steps.")] = None,
) -> None:
    """Run the whole training pipeline on this machine; a promoted model ends up served on loopback."""
    from fusionrec.errors import ConfigError
    from pipelines.training import DEFAULT_IMAGE, run_local

    if not local_:
        raise ConfigError("'pipeline run' runs here with --local; to run on a cluster use 'pipeline submit --host URL'")
    from fusionrec.data.contract import load_contract

    name = load_contract(contract).name
    result = run_local(
        contract=str(contract),
        registry=registry or Path("artifacts") / name / "models",
        pipeline_root=root,
        modalities=_modalities(contract, modalities),
        spec=_spec(
            spec, protocol=protocol, seed=seed, fusion=fusion, dim=dim, epochs=epochs, modalities=model_modalities
        ),
        settings=_overrides(sets, profile),
        margin=margin,
        baselines=_baselines(baselines),
        runner=runner,
        image=image or DEFAULT_IMAGE,
        cache=cache,
        deploy=deploy,
    )
    typer.echo(
        json.dumps(
            {
                "promoted": result.promoted,
                "gate": result.reason,
                "champion": result.champion,
                "serving": result.serving_url,
                "artifacts": str(result.pipeline_root),
                "seconds": round(result.seconds, 1),
            },
            indent=2,
        )
    )


@app.command("submit")
def submit_cmd(
    host: Annotated[str, typer.Option(help="The Kubeflow Pipelines API endpoint, e.g. http://ml-pipeline-ui.kubeflow")],
    contract: Annotated[
        str,
        typer.Option(
            help="The dataset contract as the steps will see it (a path in the image or on a mounted volume)."
        ),
    ],
    registry: Annotated[
        Optional[str],
        typer.Option(help="The registry folder as the steps see it (default: the settings' cluster.registry_mount)."),
    ] = None,
    modalities: Annotated[str, typer.Option(help="Comma-separated modalities to embed.")] = "text,image",
    spec: Spec = None,
    protocol: Protocol = None,
    seed: Seed = None,
    fusion: Fusion = None,
    dim: Dim = None,
    epochs: Epochs = None,
    margin: Margin = None,
    baselines: Baselines = None,
    experiment: Annotated[str, typer.Option(help="The Kubeflow experiment.")] = "fusionrec",
    image: Image = None,
    gpus: Gpus = 1,
    sets: Sets = None,
) -> None:
    """Compile for the cluster and start a run through kfp.Client (credentials come from Kubernetes Secrets)."""
    from fusionrec.config import ClusterSettings
    from pipelines.training import DEFAULT_IMAGE, Target, submit

    run_id = submit(
        host,
        contract=contract,
        registry=registry or ClusterSettings().registry_mount,
        modalities=_modalities(Path(contract), modalities),
        spec=_spec(spec, protocol=protocol, seed=seed, fusion=fusion, dim=dim, epochs=epochs),
        settings=_overrides(sets, "cluster"),
        margin=margin,
        baselines=_baselines(baselines),
        experiment=experiment,
        target=Target(image=image or DEFAULT_IMAGE, cluster=True, gpus=gpus),
    )
    typer.echo(f"submitted run {run_id} to {host} (experiment {experiment})")
