"""Usage: fusionrec [--config FILE] [--profile local|cluster] COMMAND ...

The command line of the platform. Parses arguments, builds the settings once, calls the core.
"""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from fusionrec.errors import ConfigError, FusionRecError

app = typer.Typer(
    name="fusionrec",
    help="Multimodal-fusion recommender: validate data, embed, train, evaluate and serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(
    help="Datasets: validate a dataset against its contract, generate a synthetic one.", no_args_is_help=True
)
privacy_app = typer.Typer(help="The PII filter.", no_args_is_help=True)
config_app = typer.Typer(help="Settings.", no_args_is_help=True)
features_app = typer.Typer(
    help="The Feast feature store: build the offline tables, apply, materialise.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(privacy_app, name="privacy")
app.add_typer(config_app, name="config")


class _State:
    config: Optional[Path] = None
    profile: Optional[str] = None

    def settings(self):
        from fusionrec.config import load_settings

        return load_settings(self.config, self.profile)


state = _State()
Validated = Annotated[Path, typer.Argument(help="A validated dataset folder (the --out of 'fusionrec data validate').")]
Embeddings = Annotated[Path, typer.Option(help="The embeddings folder ('fusionrec embed --out').")]


@app.callback()
def _root(
    config: Annotated[Optional[Path], typer.Option(help="Settings YAML (default: configs/settings.yaml).")] = None,
    profile: Annotated[Optional[str], typer.Option(help="Settings profile: local (default) or cluster.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in (
        "great_expectations",
        "presidio-analyzer",
        "presidio-anonymizer",
        "tldextract",
        "feast",
        "httpx",
        "urllib3",
        "filelock",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)
    state.config, state.profile = config, profile


@data_app.command("validate")
def data_validate(
    contract: Annotated[
        Path, typer.Argument(help="The dataset contract YAML, e.g. configs/datasets/movielens-100k-mm.yaml.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for the clean dataset and its report (replaced atomically).")],
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Check a dataset with Great Expectations; write the clean tables, the quarantine and a report.

    Exits 1 when a check exceeds its error budget (nothing is written to OUT; the report goes to
    OUT.rejected/), 2 when the contract or a file cannot be read.
    """
    from fusionrec.validation import validate_dataset

    outcome = validate_dataset(contract, out, state.settings().validation, progress=progress)
    _print_checks(outcome)
    typer.echo(f"report: {out / 'report.html'}")


def _print_checks(outcome) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{outcome.clean.contract.name}: {len(outcome.results)} checks, {outcome.seconds:.1f} s")
    for col in ("check", "action", "failed", "share", "budget", "status"):
        table.add_column(col, justify="right" if col in ("failed", "share", "budget") else "left")
    for r in outcome.results:
        table.add_row(
            escape(r.key),
            r.action,
            f"{r.failed:,}",
            f"{r.share:.2%}",
            f"{r.budget:.2%}",
            "[green]ok[/]" if r.passed else "[red]over budget[/]",
        )
    Console(stderr=False).print(table)
    q = outcome.quarantine
    typer.echo(
        f"quarantine: {int((q['action'] == 'dropped').sum())} records dropped, "
        f"{int((q['action'] == 'masked').sum())} kept with a field masked"
    )


class Catalogue(str, Enum):
    """The synthetic generator's catalogues (fusionrec.data.synth.SynthConfig.catalogue)."""

    dense = "dense"
    longtail = "longtail"


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder for the dataset and its contract (replaced atomically).")],
    users: Annotated[int, typer.Option(min=1, help="Number of users.")] = 1000,
    items: Annotated[int, typer.Option(min=1, help="Number of items.")] = 500,
    interactions: Annotated[
        Optional[int], typer.Option(min=1, help="Number of interactions (default 30 per user).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same dataset.")] = 0,
    image_size: Annotated[int, typer.Option(min=16, max=512, help="Side of the rendered images in pixels.")] = 64,
    catalogue: Annotated[
        Catalogue,
        typer.Option(
            help="dense (movie-like) or longtail (shop-like: product families in several colours, most items "
            "bought once or twice, 8 interactions per user by default).",
        ),
    ] = Catalogue.dense,
    shop_titles: Annotated[
        bool,
        typer.Option(
            help="A shop's catalogue: titles that name shape, colour (and the pattern for half the families), "
            "and each family's own print on its photos."
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Generate a synthetic multimodal dataset: items with text and rendered images, users with planted tastes."""
    from fusionrec.data.synth import SynthConfig, generate

    cfg = SynthConfig(
        users=users,
        items=items,
        interactions=interactions,
        seed=seed,
        image_size=image_size,
        catalogue=catalogue.value,
        titles="shop" if shop_titles else "names",
    )
    result = generate(cfg, out, progress=progress)
    typer.echo(json.dumps(result.summary(), indent=2))
    typer.echo(f"contract: {result.contract_path}")


@app.command("embed")
def embed(
    dataset: Validated,
    out: Annotated[Path, typer.Option(help="Folder for the embeddings (replaced atomically).")],
    modalities: Annotated[
        Optional[str], typer.Option(help="Comma-separated modalities (default: every one the dataset has).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Embed every item modality: text and images with the pretrained encoders, precomputed vectors as given.

    Unchanged items come from the embedding cache; items lacking a modality are masked with a reason
    (masked.csv).
    """
    from fusionrec.encoders.pipeline import embed_to_folder

    wanted = {m.strip() for m in modalities.split(",") if m.strip()} if modalities else None
    embeddings = embed_to_folder(dataset, out, state.settings(), modalities=wanted, progress=progress)
    for name, m in embeddings.items():
        typer.echo(
            f"{name:>8}: {m.dim}-d, {int(m.mask.sum()):,}/{len(m.mask):,} items, "
            f"{m.stats.get('cached', 0):,} from cache, {m.stats.get('computed', 0):,} computed, "
            f"{m.stats.get('seconds', 0):.1f} s  [{m.identity}]"
        )
    typer.echo(f"embeddings: {out}")


@features_app.command("build")
def features_build(
    dataset: Validated,
    embeddings: Embeddings,
    out: Annotated[
        Optional[Path], typer.Option(help="Folder for the offline tables (default: features.data_dir).")
    ] = None,
) -> None:
    """Write the offline feature tables (Parquet) that the Feast repository reads."""
    from fusionrec.features.store import write_tables

    cfg = state.settings().features
    out = out or Path(cfg.data_dir)
    manifest = write_tables(dataset, embeddings, out, cfg)
    typer.echo(
        f"feature tables for {manifest.dataset}: modalities {manifest.modalities}, "
        f"{manifest.interactions:,} interactions -> {out}"
    )


@features_app.command("apply")
def features_apply(
    data_dir: Annotated[Optional[Path], typer.Option(help="The offline tables (default: features.data_dir).")] = None,
) -> None:
    """Register the entities, feature views and feature services in the Feast registry."""
    from fusionrec.features.store import apply, feature_store

    cfg = state.settings().features
    data_dir = data_dir or Path(cfg.data_dir)
    names = apply(feature_store(cfg, data_dir), data_dir)
    typer.echo(f"applied to the {cfg.online_store} profile: {', '.join(names)}")


@features_app.command("materialize")
def features_materialize(
    data_dir: Annotated[Optional[Path], typer.Option(help="The offline tables (default: features.data_dir).")] = None,
) -> None:
    """Load the latest value of every feature into the online store (SQLite locally, Redis in production)."""
    from fusionrec.features.store import feature_store, materialize

    cfg = state.settings().features
    end = materialize(feature_store(cfg, data_dir or Path(cfg.data_dir)))
    typer.echo(f"materialised up to {end.isoformat(timespec='seconds')} into the {cfg.online_store} online store")


@app.command("train")
def train_cmd(
    dataset: Validated,
    embeddings: Embeddings,
    models: Annotated[
        Optional[Path], typer.Option(help="The model registry folder (versions/ and champion.json).")
    ] = None,
    candidate: Annotated[
        Optional[Path],
        typer.Option(
            help="Write the candidate artifact here instead (no registry, no gate: what a pipeline's TrainJob does)."
        ),
    ] = None,
    spec: Annotated[
        Optional[str],
        typer.Option(
            help="The training spec as a JSON object (or @FILE): every field of "
            "fusionrec.train.request.TrainSpec; the flags below override it."
        ),
    ] = None,
    protocol: Annotated[
        Optional[str], typer.Option(help="Split: random (8:1:1 per user), temporal, cold_item, given.")
    ] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for the split, the initialisation and the batches.")] = None,
    modalities: Annotated[
        Optional[str], typer.Option(help="Comma-separated modalities (default: all embedded).")
    ] = None,
    fusion: Annotated[Optional[str], typer.Option(help="gated (the default) or concat.")] = None,
    dim: Annotated[Optional[int], typer.Option(help="Shared embedding size.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Most epochs (early stopping on validation NDCG@20).")] = None,
    ranking_head: Annotated[
        Optional[bool], typer.Option("--ranking-head/--no-ranking-head", help="Also train the ranking head (log loss).")
    ] = None,
    softmax: Annotated[
        Optional[str],
        typer.Option(
            help="Retrieval loss: full, sampled (logQ-corrected; for large "
            "catalogues) or auto (sampled above 5,000 items)."
        ),
    ] = None,
    margin: Annotated[
        Optional[float],
        typer.Option(help="Promote only when NDCG@20 beats the champion's by this share (default: the gate's, 0.01)."),
    ] = None,
    features: Annotated[
        Optional[Path],
        typer.Option(help="Read the training set from these Feast tables ('fusionrec features build --out')."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train the fusion model, measure it on the test split, write a versioned artifact, run the gate.

    Interrupted runs resume from the last epoch's checkpoint (kept under MODELS/checkpoints/). A loss
    that turns NaN stops training with a diagnosis and writes no artifact. With --features the
    training rows and item embeddings come from Feast's training feature service.
    """
    from fusionrec.train.request import TrainSpec
    from fusionrec.train.run import train_and_register, train_candidate

    # checked before anything is read or computed
    spec_ = TrainSpec.from_options(
        spec,
        protocol=protocol,
        seed=seed,
        modalities=modalities,
        fusion=fusion,
        dim=dim,
        epochs=epochs,
        ranking_head=ranking_head,
        softmax=softmax,
    )
    if (models is None) == (candidate is None):
        raise ConfigError("give one of --models (train, register, gate) or --candidate (train only)")
    settings = state.settings()
    if candidate is not None:
        made = train_candidate(
            dataset,
            embeddings,
            spec_,
            candidate,
            device=settings.encoders.device,
            checkpoints=candidate.parent / "checkpoints",
            features_dir=features,
            feature_settings=settings.features,
            progress=progress,
        )
        if made is not None:  # rank 0 (or a single process)
            typer.echo(
                json.dumps(
                    {
                        "candidate": str(made.path),
                        "run": made.run_id,
                        "source": made.source,
                        "test": {k: round(float(v), 4) for k, v in made.test.items()},
                    },
                    indent=2,
                )
            )
        return
    outcome = train_and_register(
        dataset,
        embeddings,
        spec_,
        models,
        margin=margin,
        device=settings.encoders.device,
        features_dir=features,
        feature_settings=settings.features,
        progress=progress,
    )
    if outcome is not None:
        typer.echo(json.dumps(outcome.summary(), indent=2))


@app.command("evaluate")
def evaluate_cmd(
    dataset: Validated,
    embeddings: Embeddings,
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, comparison.md and comparison.png.")],
    protocol: Annotated[Optional[str], typer.Option(help="Split: random, temporal, cold_item, given.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for the split and every model.")] = None,
    models: Annotated[
        Optional[str],
        typer.Option(
            help="Comma-separated names of fusionrec.train.models.MODELS (default: fusionrec.train.compare.COMPARED)."
        ),
    ] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Most epochs for the trained models.")] = None,
    dim: Annotated[Optional[int], typer.Option(help="Embedding size of every model that has one.")] = None,
) -> None:
    """Compare the fusion model with its variants and the baselines on one split, in one run (the run's
    defaults are the training request's: fusionrec.train.request.TrainSpec)."""
    from fusionrec.train.compare import COMPARED, comparison_table
    from fusionrec.train.request import TrainSpec
    from fusionrec.train.run import compare_on_split

    settings = state.settings()
    spec = TrainSpec.from_options(protocol=protocol, seed=seed, epochs=epochs, dim=dim)
    names = tuple(m.strip() for m in models.split(",")) if models else COMPARED
    results = compare_on_split(
        dataset, embeddings, out, spec=spec, models=names, device=settings.encoders.device
    ).results
    typer.echo(comparison_table(results))
    typer.echo(f"comparison: {out / 'comparison.md'}, {out / 'comparison.png'}")


@app.command("serve")
def serve_cmd(
    storage_uri: Annotated[
        Optional[str],
        typer.Option(help="Model registry (its champion), version folder or URI (default: serving.storage_uri)."),
    ] = None,
    predictor_port: Annotated[Optional[int], typer.Option(help="Default: serving.predictor_port.")] = None,
    transformer_port: Annotated[Optional[int], typer.Option(help="Default: serving.transformer_port.")] = None,
    protocol: Annotated[
        Optional[str],
        typer.Option(help="Two hops: transformer -> predictor protocol, grpc-v2, v2 or v1. Default: serving.protocol."),
    ] = None,
    feast: Annotated[bool, typer.Option(help="Look up user histories in Feast's online store.")] = True,
    layout: Annotated[
        Optional[str],
        typer.Option(
            help="collocated (one model server runs the transformer's hooks and the scoring) or two_hops "
            "(the transformer and the predictor apart). Default: serving.layout."
        ),
    ] = None,
    detach: Annotated[
        bool,
        typer.Option(help="Return once ready and leave the servers running ('fusionrec serve --stop' stops them)."),
    ] = False,
    stop: Annotated[bool, typer.Option(help="Stop servers started with --detach.")] = False,
) -> None:
    """Start the model servers on loopback (real HTTP): one collocated server, or the transformer and the
    predictor as two KServe model servers (--layout two_hops)."""
    from fusionrec.platform.local import serve, serve_detached, serving_layout, serving_protocol, stop_from_pids

    settings = state.settings()
    run_dir = Path(settings.paths.artifacts) / "serving"
    pids = run_dir / "servers.json"
    if stop:
        stopped = stop_from_pids(pids)
        typer.echo(f"stopped {len(stopped)} server processes" if stopped else "no detached servers recorded")
        return
    protocol = serving_protocol(settings, protocol)  # both refused before any running server is stopped
    layout = serving_layout(settings, layout)
    if detach:
        servers = serve_detached(
            settings,
            storage_uri=storage_uri,
            predictor_port=predictor_port,
            transformer_port=transformer_port,
            protocol=protocol,
            feast=feast,
            layout=layout,
        )
    else:
        stop_from_pids(pids)  # a detached pair would hold the ports
        servers = serve(
            settings,
            storage_uri=storage_uri,
            predictor_port=predictor_port,
            transformer_port=transformer_port,
            protocol=protocol,
            feast=feast,
            layout=layout,
            log_dir=run_dir,
        )
    m, s = settings.serving.model_name, settings.serving
    front = "service    " if servers.predictor is None else "transformer"
    grpc = f"; gRPC, the transformer's hop: {s.host}:{s.predictor_grpc_port}" if protocol == "grpc-v2" else ""
    typer.echo(
        (
            f"predictor   {servers.predictor_url}/v1/models/{m}:predict  (v2: /v2/models/{m}/infer{grpc})\n"
            if servers.predictor
            else ""
        )
        + f"{front} {servers.transformer_url}/v1/models/{m}:predict  metrics: {servers.transformer_url}/metrics\n"
        f"logs: {run_dir}/"
    )
    if detach:
        return
    typer.echo("serving; Ctrl-C stops it")
    try:
        servers.transformer.wait()
    except KeyboardInterrupt:
        pass
    finally:
        servers.stop()


@app.command("recommend")
def recommend_cmd(
    user: Annotated[
        Optional[str], typer.Option(help="A user id (with a query: re-rank the similar items by taste).")
    ] = None,
    image: Annotated[Optional[Path], typer.Option(help="An image file: items that look like it.")] = None,
    text: Annotated[Optional[str], typer.Option(help="A text: items that read like it.")] = None,
    like: Annotated[Optional[str], typer.Option(help="An item id: more items like this one.")] = None,
    history: Annotated[Optional[str], typer.Option(help="Comma-separated item ids (a new user's history).")] = None,
    blend: Annotated[
        Optional[float],
        typer.Option(
            min=0.0,
            max=1.0,
            help="With a query and a user or history: the weight of taste against similarity (default: the server's).",
        ),
    ] = None,
    space: Annotated[
        Optional[str],
        typer.Option(
            help="With a query: where it searches: both (its own space, and the other through the bridge between "
            "text and images), text or image (default: both).",
        ),
    ] = None,
    k: Annotated[int, typer.Option(help="How many items.")] = 10,
    url: Annotated[Optional[str], typer.Option(help="Transformer URL (default: the local one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")] = False,
) -> None:
    """Ask the running transformer for recommendations (a user, a history), for items like an example
    (an image, a text, an item), or both; each item with the terms of its score."""
    import base64

    from fusionrec.api.access import client_headers, key_file
    from fusionrec.platform.local import call

    settings = state.settings()
    instance: dict = {"k": k}
    if image is not None:
        if not image.is_file():
            raise ConfigError(f"--image {image}: no such file")
        instance["image"] = base64.b64encode(image.read_bytes()).decode("ascii")
    for name, value in (("text", text), ("like", like), ("user_id", user), ("blend", blend), ("space", space)):
        if value is not None:
            instance[name] = value
    if history:
        instance["history"] = [h.strip() for h in history.split(",") if h.strip()]
    url = url or f"http://{settings.serving.host}:{settings.serving.transformer_port}"
    # the local service key when there is one (a remote transformer behind a mesh asks for none; without
    # a key a transformer that wants one answers 401 with what to send)
    headers = client_headers(settings) if key_file(settings).exists() else None
    answer = call(url, settings.serving.model_name, [instance], headers=headers)
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    pred = answer["predictions"][0]
    query = " and ".join(
        w for w in ("an image" if image else "", "a text" if text else "", f"item {like}" if like else "") if w
    )
    who = f"user {user}" if user else "a new user's history" if history else ""
    what = (
        f"items like {query}" + (f", re-ranked for {who}" if who else "") if query else who or "anyone (popular items)"
    )
    flags = ", ".join(
        f
        for f in (
            "fallback" if pred["fallback"] else "",
            "cold user" if pred["cold"] else "",
            "feature store unavailable" if pred.get("online_features") == "unavailable" else "",
        )
        if f
    )
    bridged = "; ".join(
        f"{t} space reached from the {s} through the bridge" for t, s in pred.get("bridged", {}).items()
    )
    flags = "; ".join(f for f in (flags, bridged) if f)
    typer.echo(f"top {len(pred['items'])} for {what} (model {pred['model_version']}{'; ' + flags if flags else ''}):")
    for n, item in enumerate(pred["items"], 1):
        terms = " ".join(f"{t} {v:+.2f}" for t, v in item["explanation"].items())
        found = f"; found in {'+'.join(item['found_in'])}" if item.get("found_in") else ""
        typer.echo(
            f"{n:>3}. {item['item_id']:<10} {item['title'] or '':<45.45} {item['score']:8.3f}  "
            f"[{item['driver']}; {terms}{found}]"
        )


@privacy_app.command("redact")
def privacy_redact(
    text: Annotated[Optional[str], typer.Argument(help="Text to filter; omit to read lines from stdin.")] = None,
) -> None:
    """Print the text with personal data replaced by <ENTITY_TYPE> placeholders."""
    from fusionrec.privacy import PiiFilter

    pii = PiiFilter(state.settings().privacy)
    lines = [text] if text is not None else (line.rstrip("\n") for line in sys.stdin)
    for line in lines:
        typer.echo(pii.redact(line))


@config_app.command("show")
def config_show() -> None:
    """Print the resolved settings (file, profile and environment overrides applied)."""
    typer.echo(json.dumps(state.settings().model_dump(mode="json"), indent=2))


def _plug_in_commands() -> None:
    """Add the command groups that live outside the core (``fusionrec.commands`` entry points: the pipelines'
    ``pipeline``, the monitor's ``monitor`` and the platform's ``deploy``): the core never imports them."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="fusionrec.commands"):
        app.add_typer(ep.load(), name=ep.name)


def main() -> None:
    """Console-script entry point: one-line errors, exit codes by error kind."""
    try:
        _plug_in_commands()
        app()
    except FusionRecError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
