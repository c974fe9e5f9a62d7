"""The InferenceService's model servers as local processes: one collocated server (the transformer's
hooks and the scoring in one process; ``serving.layout: collocated``, the default), or the predictor and
the transformer as two KServe model servers talking real HTTP on loopback exactly as they do behind an
InferenceService with a transformer (``two_hops``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fusionrec.api.http import error_message
from fusionrec.api.workers import stop_processes
from fusionrec.config import LAYOUTS, PROTOCOLS, Settings
from fusionrec.errors import ConfigError, FusionRecError, Unavailable, UpstreamError


@dataclass
class Servers:
    """The running model servers: ``transformer`` is the one callers reach (collocated: the only one, and
    ``predictor`` is None)."""

    predictor: subprocess.Popen | None
    transformer: subprocess.Popen
    predictor_url: str | None
    transformer_url: str
    model_name: str

    @property
    def layout(self) -> str:
        return "collocated" if self.predictor is None else "two_hops"

    def stop(self, timeout: float = 10.0) -> None:
        stop_processes([p for p in (self.transformer, self.predictor) if p is not None], timeout)


def _server_command(module: str, settings: Settings, port: int) -> list[str]:
    """The command line of one of the two KServe model servers (``serving.predictor`` or ``serving.transformer``)."""
    return [sys.executable, "-m", module, "--model_name", settings.serving.model_name, "--http_port", str(port),
            "--enable_grpc", "false"]  # fmt: skip


def predictor_command(
    settings: Settings, port: int, storage_uri: str | None = None, grpc_port: int | None = None
) -> list[str]:
    """The predictor's command line; with ``grpc_port``, its gRPC endpoint too (the transformer's hop)."""
    cmd = _server_command("serving.predictor", settings, port)
    if grpc_port is not None:
        cmd[cmd.index("--enable_grpc") + 1] = "true"
        cmd += ["--grpc_port", str(grpc_port)]
    return cmd + (["--storage_uri", storage_uri] if storage_uri else [])


def transformer_command(
    settings: Settings, port: int, predictor_port: int, protocol: str = "v2", feast: bool = True
) -> list[str]:
    """The transformer's command line: the predictor at ``predictor_port`` (its gRPC port for "grpc-v2")."""
    cmd = _server_command("serving.transformer", settings, port) + [
        "--predictor_host",
        f"{settings.serving.host}:{predictor_port}",
        "--predictor_protocol",
        protocol,
        "--predictor_request_timeout_seconds",
        str(settings.serving.predictor_timeout_s),
    ]
    return cmd + ([] if feast else ["--no_feast"])


def service_command(settings: Settings, port: int, storage_uri: str | None = None, feast: bool = True) -> list[str]:
    """The collocated model server's command line (``serving.service``)."""
    cmd = _server_command("serving.service", settings, port) + (["--storage_uri", storage_uri] if storage_uri else [])
    return cmd + ([] if feast else ["--no_feast"])


def wait_ready(url: str, model: str, proc: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Poll ``GET /v1/models/<model>`` until it answers ready; fail early when the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise FusionRecError(
                f"{' '.join(proc.args[2:4])} exited with {proc.returncode} before it was ready"
                + (f"; its log ends:\n{tail}" if tail else "")
            )
        try:
            r = httpx.get(f"{url}/v1/models/{model}", timeout=2.0)
            if r.status_code == 200 and r.json().get("ready"):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise Unavailable(f"{url} was not ready within {timeout:.0f} s")


def wait_answering(url: str, timeout: float = 30.0) -> bool:
    """Poll ``url`` (a health route) until something answers it, at most ``timeout`` seconds; whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return True
        except httpx.TransportError:
            time.sleep(0.3)
    return False


def start_process(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        return subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )


def serving_layout(settings: Settings, layout: str | None = None) -> str:
    """``layout``, or ``serving.layout`` when None; an unknown one is a ConfigError."""
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"--layout {layout!r} is unknown; use {' or '.join(LAYOUTS)}")
    return layout or settings.serving.layout


def serving_protocol(settings: Settings, protocol: str | None = None) -> str:
    """``protocol``, or ``serving.protocol`` when None; an unknown one is a ConfigError."""
    if protocol is not None and protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r} is unknown; use {', '.join(PROTOCOLS)}")
    return protocol or settings.serving.protocol


def serve(
    settings: Settings,
    *,
    storage_uri: str | None = None,
    predictor_port: int | None = None,
    transformer_port: int | None = None,
    protocol: str | None = None,
    feast: bool = True,
    layout: str | None = None,
    log_dir: Path,
    timeout: float = 180.0,
    env: dict[str, str] | None = None,
) -> Servers:
    """Start the model servers of ``layout`` (default ``serving.layout``) and wait until they are ready:
    collocated, one server on the transformer's port; two hops, the predictor, then the transformer, which
    calls it on ``protocol`` (default ``serving.protocol``; "grpc-v2" on ``serving.predictor_grpc_port``)."""
    s = settings.serving
    layout = serving_layout(settings, layout)
    protocol = serving_protocol(settings, protocol)
    grpc_port = s.predictor_grpc_port if protocol == "grpc-v2" else None
    pp, tp = predictor_port or s.predictor_port, transformer_port or s.transformer_port
    if feast and not (Path(settings.features.data_dir) / "registry.db").exists():
        raise ConfigError(
            f"no Feast registry under {settings.features.data_dir}: run 'fusionrec features build/apply/"
            "materialize' first (make run does), or serve without Feast (--no-feast)"
        )
    if s.auth.mode == "api_key":
        from fusionrec.api.access import ensure_key_file

        # made before either server starts, and named to them: the servers' settings come from their
        # environment, which may not carry this process's overrides (paths.artifacts)
        key = ensure_key_file(settings)
        env = {"FUSIONREC__SERVING__AUTH__KEY_FILE": str(key.resolve()), **(env or {})}
    plog, tlog = log_dir / "predictor.log", log_dir / "transformer.log"
    purl, turl = f"http://{s.host}:{pp}", f"http://{s.host}:{tp}"
    if layout == "collocated":
        proc = start_process(service_command(settings, tp, storage_uri, feast), tlog, env)
        try:
            wait_ready(turl, s.model_name, proc, timeout, tlog)
        except BaseException:
            proc.kill()
            raise
        return Servers(None, proc, None, turl, s.model_name)
    pred = start_process(predictor_command(settings, pp, storage_uri, grpc_port), plog, env)
    try:
        wait_ready(purl, s.model_name, pred, timeout, plog)
        hop = grpc_port if grpc_port is not None else pp
        trans = start_process(transformer_command(settings, tp, hop, protocol, feast), tlog, env)
        try:
            wait_ready(turl, s.model_name, trans, timeout, tlog)
        except BaseException:
            trans.kill()
            raise
    except BaseException:
        pred.kill()
        raise
    return Servers(pred, trans, purl, turl, s.model_name)


def serve_detached(
    settings: Settings, *, storage_uri: str | None = None, env: dict[str, str] | None = None, **options: Any
) -> Servers:
    """Replace the detached pair (if any) with a new one that outlives this process; record its pids.

    The pids go to ``<paths.artifacts>/serving/servers.json``, where ``fusionrec serve --stop`` finds
    them; the logs beside them. Takes :func:`serve`'s options.
    """
    run_dir = Path(settings.paths.artifacts) / "serving"
    stop_from_pids(run_dir / "servers.json")  # the previous pair holds the ports
    servers = serve(settings, storage_uri=storage_uri, log_dir=run_dir, env=env, **options)
    write_pids(servers, run_dir / "servers.json")
    return servers


def write_pids(servers: Servers, path: Path) -> None:
    path.write_text(
        json.dumps(
            {
                "predictor": servers.predictor.pid if servers.predictor is not None else None,
                "transformer": servers.transformer.pid,
                "predictor_url": servers.predictor_url,
                "transformer_url": servers.transformer_url,
            }
        )
    )


def stop_from_pids(path: Path, timeout_s: float = 30.0) -> list[int]:
    """Stop detached servers recorded in ``path`` and wait until their ports are free (a server still
    shutting down would answer a new pair's readiness check and then go); returns the pids signalled."""
    if not path.exists():
        return []
    pids = json.loads(path.read_text())
    stopped = []
    for key in ("transformer", "predictor"):
        if not isinstance(pids.get(key), int):  # collocated: no predictor
            continue
        try:
            os.killpg(pids[key], signal.SIGTERM)
            stopped.append(pids[key])
        except (ProcessLookupError, PermissionError):
            pass
    urls = [pids[k] for k in ("transformer_url", "predictor_url") if pids.get(k)]
    if not _released(urls, timeout_s):
        for pid in stopped:  # still holding a port after the grace period
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        _released(urls, 5.0)
    path.unlink()
    return stopped


def _released(urls: list[str], timeout_s: float) -> bool:
    """Whether every ``http://host:port`` of ``urls`` refuses connections within ``timeout_s``."""
    import socket
    from urllib.parse import urlsplit

    deadline = time.monotonic() + timeout_s
    while True:
        busy = []
        for url in urls:
            u = urlsplit(url)
            try:
                with socket.create_connection((u.hostname, u.port), timeout=0.5):
                    busy.append(url)
            except OSError:
                pass
        if not busy:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def call(
    url: str, model: str, instances: list[dict[str, Any]], timeout: float = 30.0, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """POST v1 instances to a model server (``headers``: the caller's credentials, see
    :func:`fusionrec.api.access.client_headers`); a 4xx/5xx comes back as an error with the server's message."""
    try:
        r = httpx.post(
            f"{url}/v1/models/{model}:predict", json={"instances": instances}, timeout=timeout, headers=headers
        )
    except httpx.TransportError as e:
        raise Unavailable(f"{url} does not answer ({type(e).__name__}); start it with 'fusionrec serve'") from None
    if r.status_code != 200:
        raise UpstreamError(f"{r.status_code}: {error_message(r)}", r.status_code)
    return r.json()
