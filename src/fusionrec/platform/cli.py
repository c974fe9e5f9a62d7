"""Usage: fusionrec deploy render|validate|apply ...

The cluster's command group, plugged into ``fusionrec`` by entry point (``fusionrec.commands``): render the
bundle with a model version and image digests, validate KServe manifests offline, roll a version out as a
canary (promote or roll back). The settings are the ones ``fusionrec --config/--profile`` built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fusionrec.errors import ConfigError

app = typer.Typer(
    help="The cluster: render, validate and deploy the InferenceService (canary, rollback).", no_args_is_help=True
)


RegistryUri = Annotated[
    Optional[str],
    typer.Option(
        help="The registry as KServe's storage initializer reads it (default: the settings' cluster.registry_pvc)."
    ),
]
Namespace = Annotated[
    Optional[str], typer.Option(help="Kubernetes namespace (default: the settings' cluster.namespace).")
]


def _settings():
    from fusionrec.cli import state

    return state.settings()


@app.command("render")
def deploy_render(
    overlay: Annotated[str, typer.Option(help="The bundle's overlay: dev or prod (manifests/overlays).")] = "dev",
    model_version: Annotated[
        Optional[str],
        typer.Option(help="The registry version to serve, e.g. v0007 (a pipeline run's register output)."),
    ] = None,
    registry: Annotated[
        Optional[Path],
        typer.Option(
            help="A registry folder: serve its champion (what the last "
            "pipeline run promoted) unless --model-version says."
        ),
    ] = None,
    registry_uri: RegistryUri = None,
    images: Annotated[
        Optional[list[str]],
        typer.Option(
            "--image",
            help="ROLE=REFERENCE for the roles fusionrec, "
            "fusionrec-serving, redis (repeatable); prod "
            "takes REPOSITORY@sha256:DIGEST only.",
        ),
    ] = None,
    namespace: Namespace = None,
    gpu: Annotated[int, typer.Option(min=0, help="GPUs per predictor replica.")] = 0,
    crds: Annotated[
        Optional[Path],
        typer.Option(help="The CRDs to validate KServe and Trainer objects against (default: ../shared/schemas/crds)."),
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write the YAML here (default: print it).")] = None,
) -> None:
    """Render the whole cluster bundle (kustomize overlay) with a deploy's model version and image digests,
    validated offline; apply it with 'kubectl apply -f'."""
    import yaml

    from fusionrec.io import atomic_write_text
    from fusionrec.platform.bundle import Deploy, kind_name, render_bundle

    if registry and not model_version:
        from fusionrec.registry import champion

        best = champion(registry)
        if best is None:
            raise ConfigError(f"{registry}: no champion yet (champion.json); run the training pipeline first")
        model_version = best.name
    roles = {}
    for item in images or []:
        role, eq, ref = item.partition("=")
        if not eq or not role or not ref:
            raise ConfigError(f"--image {item!r}: expected ROLE=REFERENCE")
        roles[role] = ref
    cluster = _settings().cluster
    docs = render_bundle(
        overlay,
        Deploy(
            model_version=model_version,
            registry_uri=registry_uri or cluster.registry_uri,
            images=roles,
            namespace=namespace or cluster.namespace,
            gpu=gpu,
        ),
        crds=crds,
    )
    text = yaml.safe_dump_all(docs, sort_keys=False)
    if out is None:
        typer.echo(text)
    else:
        atomic_write_text(out, text)
        typer.echo(f"wrote {out}: {len(docs)} objects ({', '.join(kind_name(d) for d in docs[:4])}, ...)")


@app.command("validate")
def deploy_validate(
    files: Annotated[list[Path], typer.Argument(help="KServe manifests (InferenceService, ServingRuntime).")],
) -> None:
    """Validate manifests offline against the KServe API schema; exit 1 listing every problem."""
    from fusionrec.config import read_yaml
    from fusionrec.platform.deploy import schema_errors

    bad = 0
    for f in files:
        errors = schema_errors(read_yaml(f))
        bad += bool(errors)
        typer.echo(f"{f}: " + ("ok" if not errors else f"{len(errors)} problem(s)"))
        for e in errors:
            typer.echo(f"  - {e}")
    if bad:
        raise typer.Exit(1)


@app.command("apply")
def deploy_apply(
    model_version: Annotated[
        Optional[str], typer.Option(help="The registry version to serve (or --storage-uri).")
    ] = None,
    registry_uri: RegistryUri = None,
    storage_uri: Annotated[
        Optional[str], typer.Option(help="The model version's URI, instead of --model-version.")
    ] = None,
    namespace: Namespace = None,
    canary: Annotated[int, typer.Option(min=1, max=100, help="Traffic share for the new revision.")] = 10,
    smoke_url: Annotated[Optional[str], typer.Option(help="The service URL to send a smoke request to.")] = None,
    timeout: Annotated[int, typer.Option(help="Seconds to wait for readiness.")] = 600,
    registry: Annotated[
        Optional[Path],
        typer.Option(
            help="The registry folder (mounted): once promoted, the version becomes its champion again (a rollback)."
        ),
    ] = None,
) -> None:
    """Roll a model version out on the bundle's InferenceService as a canary: promote or roll back. Also
    the way back to an earlier version: --model-version of the previous champion (with --registry)."""
    from kserve import KServeClient

    from fusionrec.platform.deploy import rollout, smoke_check
    from fusionrec.registry import reinstate, version_folder, version_uri

    if bool(model_version) == bool(storage_uri):
        raise ConfigError("give --model-version or --storage-uri (one of them)")
    if registry and not model_version:
        raise ConfigError("--registry goes with --model-version (the version to make the champion again)")
    if registry:  # refused before the cluster is touched
        version_folder(registry, model_version)
    uri = storage_uri or version_uri(registry_uri or _settings().cluster.registry_uri, model_version)
    smoke = smoke_check(smoke_url, "fusionrec") if smoke_url else None
    result = rollout(
        KServeClient(),
        uri,
        namespace=namespace or _settings().cluster.namespace,
        canary_percent=canary,
        timeout_s=timeout,
        smoke=smoke,
    )
    typer.echo(f"{result.action}: {result.namespace}/{result.name}: {result.reason} ({' -> '.join(result.steps)})")
    if result.action == "rolled_back":
        raise typer.Exit(1)
    if registry:
        done = reinstate(registry, model_version)
        typer.echo(f"champion of {registry}: {model_version} (was {done.champion_before})")
