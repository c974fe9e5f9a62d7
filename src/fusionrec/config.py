"""Settings: one typed object, loaded from a YAML file plus environment overrides.

The only module that reads environment variables or settings files. Resolution order (later wins):

1. the ``default`` section of the settings file (``configs/settings.yaml`` unless
   ``FUSIONREC_CONFIG`` or an explicit path names another);
2. the section of the chosen profile under ``profiles`` (``FUSIONREC_PROFILE``, default ``local``);
3. environment variables ``FUSIONREC__<SECTION>__<KEY>=<value>`` (values parsed as YAML scalars, except
   secrets, which are taken as written), e.g. ``FUSIONREC__VALIDATION__MAX_IMAGE_PIXELS=40000000``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from fusionrec.errors import ConfigError

ENV_PREFIX = "FUSIONREC__"
DEFAULT_CONFIG = Path("configs/settings.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsSettings(_Strict):
    """Where the platform keeps what it writes."""

    artifacts: str = "artifacts"
    cache: str = "artifacts/cache"


class ValidationSettings(_Strict):
    """Bounds and default error budgets for data validation (a dataset contract may tighten them)."""

    default_budget: float = Field(0.0, ge=0.0, le=1.0)
    min_text_chars: int = Field(1, ge=0)
    max_text_chars: int = Field(10_000, ge=1)
    min_image_side: int = Field(16, ge=1)
    max_image_side: int = Field(8_192, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)  # decompression-bomb guard, checked before decoding
    max_image_bytes: int = Field(20_000_000, ge=1)
    min_timestamp: int = 0  # unix seconds; 1970-01-01
    future_tolerance_s: int = Field(86_400, ge=0)


class PrivacySettings(_Strict):
    """What the PII filter looks for and how it replaces it."""

    entities: tuple[str, ...] = (
        "EMAIL_ADDRESS",
        "PHONE_NUMBER",
        "CREDIT_CARD",
        "IBAN_CODE",
        "IP_ADDRESS",
        "PERSON",
    )
    score_threshold: float = Field(0.35, ge=0.0, le=1.0)
    person_dictionary: bool = True  # the first-name + surname rule; the cue rule always runs
    phone_regions: tuple[str, ...] = ("US", "GB", "DE", "FR", "IN", "CA", "BR", "AU")


class TextEncoderSettings(_Strict):
    """The text encoder: a local Hugging Face checkpoint folder or storage URI (default all-MiniLM-L6-v2)."""

    checkpoint: str | None = None
    max_length: int = Field(256, ge=8, le=8192)
    batch_size: int = Field(64, ge=1)


class ImageEncoderSettings(_Strict):
    """The image encoder: EfficientNet-Lite0 (default weights shipped offline) or a HF vision checkpoint."""

    kind: Literal["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "hf"] = "efficientnet_lite0"
    checkpoint: str | None = None
    batch_size: int = Field(32, ge=1)
    # camera-like views per catalogue photo embedded by the embed step, which train the photo head of query
    # by example (fusionrec.photohead); 0: none, photos are searched in the encoder's space as it is
    views: int = Field(2, ge=0, le=8)


class EncoderSettings(_Strict):
    """Which modalities are embedded with pretrained encoders, on which device."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    modalities: tuple[Literal["text", "image"], ...] = ("text", "image")
    text: TextEncoderSettings = TextEncoderSettings()
    image: ImageEncoderSettings = ImageEncoderSettings()


class FeatureSettings(_Strict):
    """The Feast feature store: which online store, where the repository and the tables are."""

    repo: str = "feature_repo"
    data_dir: str = "artifacts/movielens-100k-mm/features"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection: str = "localhost:6379"
    history_length: int = Field(20, ge=1, le=1000)
    # Interactions without timestamps (e.g. an MMRec .inter file) are stamped from this instant, one
    # second per row in file order, so that the file order is the history order (with a warning).
    default_event_time: str = "2000-01-01T00:00:00Z"


class CallerSettings(_Strict):
    """One caller of the transformer known by an API key (the key itself is never in the settings: its
    SHA-256, so that a settings file or a ConfigMap can be read without handing out the key)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@:-]+$")
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # service: a backend trusted to name any user; user: an end user, who may only ask for `user_id`
    role: Literal["service", "user"] = "service"
    user_id: str | None = Field(None, min_length=1, max_length=128)
    # a service that may learn which items a user has seen (exclude_seen over a candidate list)
    history: bool = False


class AuthSettings(_Strict):
    """Who may call the transformer, for which users, how often (docs/serving.md, "Callers")."""

    # api_key: callers send ``Authorization: Bearer <key>`` (or ``x-api-key``); mesh: the service mesh has
    # authenticated the caller (its mTLS principal in x-forwarded-client-cert, or an end user's verified JWT
    # subject in `user_header`, both set by the sidecar, which drops what a client sends under those names)
    mode: Literal["api_key", "mesh"] = "api_key"
    callers: tuple[CallerSettings, ...] = ()
    # api_key mode: a file holding one service key (a mounted Secret); unset locally: a random key made
    # once under <paths.artifacts>/serving/api.key (owner-only), which `fusionrec recommend` reads
    key_file: str | None = None
    service_principals: tuple[str, ...] = ()  # mesh: SPIFFE ids trusted to name any user
    # mesh: the proxies in front of the pod (Knative's local gateway, the activator); a request through one
    # is credited to the caller the proxy authenticated, as it forwarded it in x-forwarded-client-cert
    gateway_principals: tuple[str, ...] = (
        "spiffe://cluster.local/ns/istio-system/sa/cluster-local-gateway-service-account",
        "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
        "spiffe://cluster.local/ns/knative-serving/sa/controller",
    )
    history_principals: tuple[str, ...] = ()  # mesh: SPIFFE ids that may also learn seen items
    user_header: str = Field("x-fusionrec-user", pattern=r"^[a-z0-9-]+$")
    # token buckets per caller (services by name or principal, end users by subject): sustained rate, burst
    service_rate_per_s: float = Field(500.0, gt=0.0)
    service_burst: int = Field(1_000, ge=1)
    user_rate_per_s: float = Field(5.0, gt=0.0)
    user_burst: int = Field(20, ge=1)


Layout = Literal["collocated", "two_hops"]  # how the model servers run (ServingSettings.layout)
LAYOUTS: tuple[str, ...] = get_args(Layout)
Protocol = Literal["grpc-v2", "v2", "v1"]  # the transformer -> predictor hop (ServingSettings.protocol)
PROTOCOLS: tuple[str, ...] = get_args(Protocol)


class ServingSettings(_Strict):
    """The KServe predictor and transformer: where the model comes from, ports, limits on requests."""

    model_name: str = "fusionrec"
    # A model registry folder (its champion is served), one version folder, or KServe's /mnt/models mount.
    storage_uri: str = "artifacts/movielens-100k-mm/models"
    host: str = "127.0.0.1"  # where local clients reach the servers
    bind: str = "127.0.0.1"  # where the servers listen: loopback locally, every address in a pod (cluster profile)
    predictor_port: int = Field(8081, ge=1, le=65535)
    predictor_grpc_port: int = Field(8082, ge=1, le=65535)  # the predictor's gRPC (protocol "grpc-v2")
    transformer_port: int = Field(8080, ge=1, le=65535)
    predictor_timeout_s: int = Field(5, ge=1)  # the transformer answers 503 after this when the predictor is down
    max_k: int = Field(100, ge=1)
    max_history: int = Field(500, ge=1)  # items a request may give as a cold user's history
    max_candidates: int = Field(5_000, ge=1)
    max_batch: int = Field(64, ge=1)  # rows (instances) per request
    max_text_chars: int = Field(2_000, ge=1)
    max_image_bytes: int = Field(5_000_000, ge=1)
    max_id_chars: int = Field(128, ge=1)  # a user or item id in a request
    # Bytes of one request body, refused with a 413 before it is read (the Content-Length, or as it arrives)
    max_body_bytes: int = Field(8_000_000, ge=1_000)
    # Decoded pixels of one query image, and of all the images of one request; checked from the image's
    # header before it is decoded (a 100 KB PNG can hold 36 megapixels)
    max_image_pixels: int = Field(16_000_000, ge=1)
    max_request_pixels: int = Field(32_000_000, ge=1)
    image_formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
    # Admission: inference requests in flight in one server; beyond it a 429 with Retry-After, at once.
    # A request that waited longer than `queue_timeout_s` for the scoring thread is dropped (its caller,
    # the transformer, has given up by then): a 503, and the thread moves on to callers still waiting.
    max_inflight: int = Field(64, ge=1)
    queue_timeout_s: float = Field(5.0, gt=0.0)
    # Micro-batching (fusionrec.api.batching): the requests queued while the scorer is busy, and those
    # that come within `batch_wait_ms`, are scored as one batch of at most `batch_max_rows` rows; at most
    # `batch_queue` requests wait (more: a 429).
    batch_wait_ms: float = Field(2.0, ge=0.0, le=100.0)
    batch_max_rows: int = Field(256, ge=1)
    batch_queue: int = Field(1024, ge=1)
    # How `fusionrec serve` runs the model: one model server that runs the transformer's hooks itself
    # ("collocated": one hop), or the transformer and the predictor as two servers ("two_hops"), to scale
    # them apart (the encoders on a GPU, the lookups on CPUs).
    layout: Layout = "collocated"
    # Two hops: how the transformer calls the predictor. "grpc-v2": the open inference protocol over gRPC
    # (typed tensors, protobuf); "v2" or "v1": over REST (JSON).
    protocol: Protocol = "grpc-v2"
    auth: AuthSettings = AuthSettings()
    # Torch threads in the predictor. Scoring one request is a small matrix product; spare threads would
    # spin against the transformer and the HTTP stack for the same cores.
    torch_threads: int = Field(1, ge=1)
    # Model server processes per server, each with its own model, on the same ports (fusionrec.api.workers):
    # one request is scored on one core, so more than one uses more cores (each worker takes its own
    # memory for the model). 0 (auto): the collocated server runs one per core it may use (at most 4), each
    # of the two hops' servers one (the two already share the cores); chosen by benchmarks/serving.py.
    workers: int = Field(0, ge=0, le=32)
    # Query by example: how many nearest items each modality's index proposes before the exact rescoring
    # and the user re-rank, and the default weight of the user's taste in that re-rank (0: similarity
    # only, 1: taste only among the similar items), chosen by benchmarks/retrieval.py (docs/serving.md has
    # the table).
    search_pool: int = Field(100, ge=1)
    blend: float = Field(0.1, ge=0.0, le=1.0)
    # A query searching both spaces: the weight of the space it reaches through the bridge between text and
    # images (fusionrec.bridge) against 1 for its own; chosen by benchmarks/retrieval.py on a development
    # seed (docs/serving.md has the table).
    bridge_weight: float = Field(0.2, ge=0.0, le=10.0)
    # Catalogue-scale top-K (fusionrec.topk): above `ann_above` items a recommendation's top-K comes from an
    # HNSW index's shortlist (`ann_ef` candidates kept while searching the graph, `ann_pool` items
    # shortlisted, the history terms' best added), scored exactly; exact search below. Chosen by benchmarks/topk.py
    # (docs/serving.md has the table).
    ann_above: int = Field(50_000, ge=0)
    ann_ef: int = Field(400, ge=1)
    ann_pool: int = Field(200, ge=1)
    # The feature store lookup in the transformer: a lookup slower than this is abandoned and the request
    # is served from the model's own histories; after `breaker_failures` failures in a row the store is
    # not asked for `breaker_reset_s` seconds, then tried again.
    feature_timeout_s: float = Field(0.5, gt=0.0)
    breaker_failures: int = Field(3, ge=1)
    breaker_reset_s: float = Field(10.0, gt=0.0)


class MonitoringSettings(_Strict):
    """The inference log, drift detection and the retraining policy (docs/monitoring.md).

    The embedding-drift method and threshold were chosen by ``benchmarks/drift.py`` (A/A false alarms,
    detection strength); see the figures there before changing them.
    """

    folder: str | None = (
        None  # logs/, reference/, reports/, decisions.jsonl, workspace/; default <paths.artifacts>/monitoring
    )
    # Where the transformer's inference log goes: Parquet files under folder/logs ("parquet"); nothing,
    # because KServe's request logger sends the exchanges to the sink service in monitoring/ ("logger");
    # or nowhere ("none"; not "off", which YAML and the environment overrides read as false).
    inference_log: Literal["parquet", "logger", "none"] = "parquet"
    # The key of the keyed hash that pseudonymises user ids: from a Kubernetes Secret, as this variable
    # (FUSIONREC__MONITORING__LOG_KEY) or a mounted file. Unset locally: a random key is made once under
    # folder/log.key (never in the repository).
    log_key: SecretStr | None = None
    log_key_file: str | None = None
    log_batch: int = Field(512, ge=1)  # records per Parquet file at most
    log_flush_s: float = Field(2.0, gt=0.0)  # a partial batch is written after this long
    log_queue: int = Field(100_000, ge=1)  # records waiting to be written; beyond it they are dropped and counted
    # ... and their size (vectors, ids, scores): a queue of query records with 1,664 floats each is ~7 KB a
    # record, so 100,000 of them would be ~0.7 GB; this bounds the queue below the containers' memory
    log_queue_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    # Inference-log partitions (hour=...) and references of versions no longer in the registry older than
    # this are deleted by `fusionrec monitor run`
    retention_days: float = Field(30.0, gt=0.0)
    window_hours: float = Field(1.0, gt=0.0)  # the window `fusionrec monitor run` evaluates
    min_records: int = Field(100, ge=1)  # fewer records in a window (or a signal) than this: "not enough data"
    drift_sample: int = Field(2_000, ge=100)  # rows per side for the drift statistics (a 100k window is sampled)
    # Evidently's cosine distance between the window's mean and the reference's against the 95th percentile of
    # that distance under no drift (a bootstrap): chosen by benchmarks/drift.py on 20 development A/A windows and
    # their own shifted windows (no false alarm and the weakest shifts caught of every method tried; the
    # classifier test at its 99th percentile, the default before, alarmed on 2 of them) and reported on 100
    # fresh A/A windows (docs/monitoring.md). For the fixed-threshold methods the threshold is the score over
    # which a signal drifts.
    embedding_method: Literal["model", "distance", "mmd", "ratio", "model_bootstrap", "distance_bootstrap"] = (
        "distance_bootstrap"
    )
    embedding_threshold: float = Field(0.95, gt=0.0)
    value_threshold: float = Field(0.2, gt=0.0)  # PSI over which a request feature or an answer signal drifts
    drift_share: float = Field(0.5, gt=0.0, le=1.0)  # retrain when this share of the signals drifts
    # ... or when any one of these drifts: the embeddings of the users and of the queries
    fire_on: tuple[str, ...] = ("user_vector", "query_text", "query_image")
    consecutive: int = Field(1, ge=1)  # windows in a row that must drift before retraining
    cooldown_h: float = Field(24.0, ge=0.0)  # no second retrain within this long of the last one (debounce)
    # recommendation quality from feedback (later interactions pushed to Feast), when a feature store is there
    quality_k: int = Field(10, ge=1)
    quality_min_users: int = Field(20, ge=1)


class ClusterSettings(_Strict):
    """Where the platform's shared state lives on a Kubernetes cluster (the bundle's names): the namespace,
    the model registry's volume (mounted by the pipeline's steps and the TrainJob; read by KServe's storage
    initializer as ``pvc://<registry_pvc>``) and the artifacts' volume."""

    namespace: str = "fusionrec"
    registry_pvc: str = "fusionrec-models"
    registry_mount: str = "/mnt/registry"
    artifacts_pvc: str = "fusionrec-artifacts"
    artifacts_mount: str = "/mnt/artifacts"

    @property
    def registry_uri(self) -> str:
        """The registry as KServe's storage initializer reads it."""
        return f"pvc://{self.registry_pvc}"


class Settings(_Strict):
    """Everything configurable about a run. Build once at the entry point, pass down."""

    profile: Literal["local", "cluster"] = "local"
    paths: PathsSettings = PathsSettings()
    validation: ValidationSettings = ValidationSettings()
    privacy: PrivacySettings = PrivacySettings()
    encoders: EncoderSettings = EncoderSettings()
    features: FeatureSettings = FeatureSettings()
    serving: ServingSettings = ServingSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    cluster: ClusterSettings = ClusterSettings()


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _secret_paths(model: type[BaseModel] = None, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """The key paths of every secret-typed setting (``SecretStr``), e.g. ``("monitoring", "log_key")``."""
    import typing

    model = model or Settings
    out: set[tuple[str, ...]] = set()
    for name, info in model.model_fields.items():
        kinds = typing.get_args(info.annotation) or (info.annotation,)
        if SecretStr in kinds:
            out.add(prefix + (name,))
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                out |= _secret_paths(kind, prefix + (name,))
    return out


def nested_overrides(pairs: Iterable[tuple[str, Sequence[str], str]]) -> dict[str, Any]:
    """Settings overrides as a nested mapping, from ``(label, key path, text)`` triples: each text parsed as
    YAML, but a secret's, taken as written (never ``a: b``, ``123456``, ``x #y`` or ``null`` turned into
    something else). The one parser of ``KEY=VALUE`` overrides: environment variables and ``--set``.

    Raises:
        ConfigError: a text is not valid YAML, or two overrides conflict (``label`` names the first).
    """
    tree: dict[str, Any] = {}
    secrets = _secret_paths()
    for label, path, raw in pairs:
        keys = [k.lower() for k in path if k]
        if not keys:
            continue
        if tuple(keys) in secrets:
            value = raw
        else:
            try:
                value = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError:
                raise ConfigError(f"{label}: value {raw!r} is not valid YAML") from None
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{label} conflicts with another override")
        node[keys[-1]] = value
    return tree


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    return nested_overrides(
        (f"environment variable {name}", name[len(ENV_PREFIX) :].split("__"), raw)
        for name, raw in env.items()
        if name.startswith(ENV_PREFIX)
    )


def set_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` options (``KEY`` dotted, e.g. ``encoders.text.checkpoint``) as settings overrides.

    Raises:
        ConfigError: an item is not KEY=VALUE, or its value is not valid YAML.
    """
    pairs = []
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        pairs.append((f"--set {key}", key.split("."), raw))
    return nested_overrides(pairs)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file, turning every failure into a one-line ConfigError that names the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: file not found") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from e


def _shown(loc: tuple, value: Any) -> str:
    """A rejected value as an error message may show it: never a secret's (nor a value under a secret's key)."""
    keys = tuple(str(p) for p in loc)
    if any(keys[: len(path)] == path for path in _secret_paths()):
        return "<secret, not shown>"
    return repr(value)


def describe_pydantic_errors(err: ValidationError) -> str:
    """Every problem of a pydantic error on one line: ``field: message (got value)``, joined by '; '."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {_shown(e['loc'], e['input'])})" for e in err.errors()
    )


def describe_pydantic_error(source: str, err: ValidationError) -> str:
    """One line naming the first offending field and value of a pydantic error (a secret's value is not shown)."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{loc}' (value {_shown(first['loc'], first.get('input'))})"
    return f"{source}: '{loc}': {first['msg']} (got {_shown(first['loc'], first.get('input'))})"


def load_settings(
    path: str | Path | None = None,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings object.

    Args:
        path: settings YAML; default ``FUSIONREC_CONFIG`` or ``configs/settings.yaml`` when it exists.
        profile: ``local`` or ``cluster``; default ``FUSIONREC_PROFILE`` or ``local``.
        env: the environment to read overrides from (default ``os.environ``).
        overrides: a nested mapping applied last (a pipeline's ``settings`` parameter), e.g.
            ``{"encoders": {"text": {"checkpoint": "s3://..."}}}``.

    Raises:
        ConfigError: the file is malformed, names an unknown key or profile, or a value is invalid.
    """
    env = os.environ if env is None else env
    chosen = path or env.get("FUSIONREC_CONFIG")
    data: dict[str, Any] = {}
    source = "settings"
    if chosen or DEFAULT_CONFIG.exists():
        file = Path(chosen) if chosen else DEFAULT_CONFIG
        source = str(file)
        raw = read_yaml(file) or {}
        if not isinstance(raw, dict) or not set(raw) <= {"default", "profiles"}:
            raise ConfigError(f"{file}: expected top-level keys 'default' and 'profiles'")
        profile = profile or env.get("FUSIONREC_PROFILE", "local")
        profiles = raw.get("profiles") or {}
        if profile not in profiles and profile not in ("local", "cluster"):
            raise ConfigError(f"{file}: unknown profile {profile!r}; known: {sorted(profiles)}")
        data = _deep_merge(raw.get("default") or {}, profiles.get(profile) or {})
    else:
        profile = profile or env.get("FUSIONREC_PROFILE", "local")
    data = _deep_merge(data, _env_overrides(env))
    if overrides:
        data = _deep_merge(data, overrides)
        source += " + overrides"
    data["profile"] = profile
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_pydantic_error(source, e)) from e


def settings_from(values: Mapping[str, Any] | None) -> Settings:
    """Settings for a pipeline step: the settings file, the profile named in ``values["profile"]`` (default
    local), the environment (where a cluster's secrets arrive), then the rest of ``values`` as overrides."""
    values = dict(values or {})
    profile = values.pop("profile", None)
    return load_settings(profile=profile, overrides=values)


def monitoring_dir(settings: Settings) -> Path:
    """Where the inference log, the references, the reports, the decisions and the dashboard live."""
    return Path(settings.monitoring.folder or Path(settings.paths.artifacts) / "monitoring")


def manifests_dir() -> Path:
    """The folder of the Kubernetes manifest templates: ``manifests/`` of the source tree (a checkout, an
    editable install) or, in the images, of the working directory (``/app/manifests``)."""
    source = Path(__file__).resolve().parents[2] / "manifests"
    return source if source.is_dir() else Path.cwd() / "manifests"
