"""What both model servers share on the HTTP side: the routes they answer, the guards in front of them,
and errors as a status and ``{"error": message}``.

KServe's stock ``ModelServer`` opens every route it has (``/v2/repository/models/*/load|unload``, ``:explain``,
``/docs``) on every address. :func:`run_model_server` starts the same KServe REST server with:

- only the routes the platform uses (:data:`ROUTES`); everything else is a 404 before KServe sees it;
- readiness (``/v2/health/ready``, ``/v1/models/<name>``, ``/v2/models/<name>/ready``) that answers 503
  until the model says it is loaded (``kserve.Model.healthy``);
- the listen address from the settings (``serving.bind``: loopback locally);
- a byte limit on request bodies, enforced before the body is read (413), and an admission limit on
  inference requests in flight (429 with ``Retry-After`` when full) (:class:`Guard`);
- one fixed message for any error the code did not raise on purpose (no type names, no addresses).
"""

from __future__ import annotations

import json
import logging
import re

from fusionrec.api import workers
from fusionrec.errors import FusionRecError, PayloadTooLarge

log = logging.getLogger(__name__)

# (method, path) of every route either server answers; the transformer drops the v2 inference route
ROUTES = frozenset(
    {
        ("GET", "/"),
        ("GET", "/metrics"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/{model_name}"),
        ("POST", "/v1/models/{model_name}:predict"),
        ("GET", "/v2"),
        ("GET", "/v2/health/live"),
        ("GET", "/v2/health/ready"),
        ("GET", "/v2/models"),
        ("GET", "/v2/models/{model_name}"),
        ("GET", "/v2/models/{model_name}/ready"),
        ("POST", "/v2/models/{model_name}/infer"),
    }
)
INFERENCE = ("/v1/models/", "/v2/models/")  # path prefixes of the routes the admission limit counts
INTERNAL_ERROR = "internal error; the server logged it"


def _pattern(path: str) -> re.Pattern:
    """A route template as a regex: ``{model_name}`` matches one path segment without a colon."""
    return re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/:]+", re.escape(path)) + "$")


READY_PATHS = ("/v2/health/ready", "/v1/models/{model_name}", "/v2/models/{model_name}/ready")


class Guard:
    """ASGI middleware in front of KServe's app: only ``allowed`` routes (a 404 for the rest, before KServe
    sees them), readiness from the models themselves, the body's byte limit before it is read, and at
    most ``max_inflight`` inference requests at once (more get a 429 with ``Retry-After``, unread)."""

    def __init__(self, app, models, max_body_bytes: int, max_inflight: int, allowed=ROUTES) -> None:
        self.app, self.models = app, models
        self.max_body_bytes, self.max_inflight = max_body_bytes, max_inflight
        self.allowed = [(method, _pattern(path)) for method, path in sorted(allowed)]
        self.ready_paths = [_pattern(p) for p in READY_PATHS]
        self.inflight = 0

    async def _answer(self, send, status: int, body: dict, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def loaded(self) -> bool:
        for m in self.models:  # kserve.Model.healthy(): ready, and what the model class adds to it
            if not (m.ready and await m.healthy()):
                return False
        return True

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope.get("method", ""), scope.get("path", "")
        probe = "GET" if method == "HEAD" else method
        if not any(m == probe and rx.match(path) for m, rx in self.allowed):
            return await self._answer(send, 404, {"error": "not found"})
        if probe == "GET" and any(rx.match(path) for rx in self.ready_paths) and not await self.loaded():
            return await self._answer(
                send, 503, {"ready": False, "error": "the model is not loaded"}, {"retry-after": "1"}
            )
        length = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        limit = self.max_body_bytes
        if length is not None:
            if not length.isdigit() or len(length) > 19:
                return await self._answer(send, 400, {"error": "Content-Length is not a number"})
            if int(length) > limit:
                return await self._answer(send, 413, {"error": f"the request body is over {limit:,} bytes"})
        counted = method == "POST" and path.startswith(INFERENCE)
        if counted and self.inflight >= self.max_inflight:
            return await self._answer(
                send,
                429,
                {"error": "the server is at its limit of requests in flight; retry shortly"},
                {"retry-after": "1"},
            )
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # a chunked body (no Content-Length) that grows past the limit
                    raise PayloadTooLarge(f"the request body is over {limit:,} bytes")
            return message

        if counted:
            self.inflight += 1
        try:
            await self.app(scope, limited, send)
        finally:
            if counted:
                self.inflight -= 1


def install_error_handlers(app=None) -> None:
    """Answer every :class:`FusionRecError` with its status and ``{"error": message}`` (and ``Retry-After``
    where it has one), FastAPI's own validation errors as a 400 naming the field, and anything else as a
    500 with one fixed message (the cause goes to the log, never to the caller)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from kserve import errors as kerrors
    from starlette.exceptions import HTTPException

    if app is None:
        from kserve.model_server import app

    async def ours(_, exc: FusionRecError):
        headers = {"retry-after": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse(status_code=exc.http_status, content={"error": str(exc)}, headers=headers)

    async def validation(_, exc: RequestValidationError):
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return JSONResponse(status_code=400, content={"error": f"{where}: {first.get('msg', 'invalid')}"[:300]})

    async def http(_, exc: HTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        return JSONResponse(status_code=exc.status_code, content={"error": message[:300]})

    async def unexpected(request, exc: Exception):
        if isinstance(exc, kerrors.InvalidInput):  # KServe's decoder: its reason names what did not parse
            reason = re.sub(r"0x[0-9a-fA-F]+", "0x…", str(getattr(exc, "reason", "") or exc))[:200]
            return JSONResponse(status_code=400, content={"error": reason or "the request does not fit the protocol"})
        if isinstance(exc, kerrors.InferenceError) and isinstance(exc.__context__, (UnicodeDecodeError, ValueError)):
            return JSONResponse(
                status_code=400,
                content={"error": "a tensor's data could not be decoded (BYTES elements must be UTF-8 text)"},
            )
        if isinstance(exc, UnicodeDecodeError):
            return JSONResponse(status_code=400, content={"error": "the request does not fit the protocol"})
        if isinstance(exc, kerrors.ModelNotFound):
            return JSONResponse(status_code=404, content={"error": "no such model"})
        if isinstance(exc, (kerrors.ModelNotReady, kerrors.ServerNotReady)):
            return JSONResponse(
                status_code=503, content={"error": "the model is not ready"}, headers={"retry-after": "1"}
            )
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(status_code=500, content={"error": INTERNAL_ERROR})

    app.add_exception_handler(FusionRecError, ours)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(HTTPException, http)
    for kind in (
        kerrors.InvalidInput,
        kerrors.ModelNotFound,
        kerrors.ModelNotReady,
        kerrors.ServerNotReady,
        kerrors.InferenceError,
        UnicodeDecodeError,
        ValueError,
        TypeError,
        KeyError,
        Exception,
    ):
        app.add_exception_handler(kind, unexpected)


def run_model_server(
    model, settings, http_port: int, allowed=ROUTES, grpc_port: int | None = None, collocated: bool = False
) -> None:
    """Serve ``model`` the way ``kserve.ModelServer(...).start([model])`` does, with the platform's surface
    (the module docstring): its routes only, readiness from the model, ``serving.bind``, the guards; and,
    with ``grpc_port``, the open inference protocol over gRPC beside it (:mod:`fusionrec.api.rpc`); in
    :func:`fusionrec.api.workers.count` processes (``collocated``: the one-hop server's default)."""
    import asyncio

    import kserve
    from kserve.model_server import app
    from kserve.protocol.rest.server import RESTServer

    s = settings.serving
    server = kserve.ModelServer(http_port=http_port, enable_grpc=False, workers=1, enable_docs_url=False)
    server._register_and_check_atleast_one_model_is_ready([model])
    rest = RESTServer(
        "kserve.model_server:app",
        server.dataplane,
        server.model_repository_extension,
        http_port,
        workers=1,
        grace_period=server.grace_period,
        timeout_keep_alive=server.timeout_keep_alive,
    )
    rest.config.host = s.bind
    rest.create_application()
    install_error_handlers(app)
    app.add_middleware(
        Guard, models=[model], max_body_bytes=s.max_body_bytes, max_inflight=s.max_inflight, allowed=allowed
    )
    server._rest_server = rest
    # more than one worker: every worker listens on the port with SO_REUSEPORT (fusionrec.api.workers)
    n = workers.count(settings, collocated)
    sockets = [workers.shared_socket(s.bind, http_port)] if n > 1 else None
    server.servers.append(rest._server.serve(sockets=sockets))
    if grpc_port is not None:
        from fusionrec.api.rpc import GrpcServer

        server._grpc_server = GrpcServer(server, settings, grpc_port)  # stopped by the model server's stop
        server.servers.append(server._grpc_server.start())
    server.setup_event_loop()
    server.register_signal_handler()
    copies = workers.start_copies(n)  # this one's model is loaded; the copies load their own
    try:
        asyncio.run(server._serve())
    finally:
        workers.stop_processes(copies)


def error_message(response) -> str:
    """The message of an error answer (``{"error": ...}``), or its raw text."""
    try:
        return str(response.json().get("error", response.text))
    except (ValueError, AttributeError):
        return response.text
