"""The predictor's binary hop: KServe's open inference protocol (v2) over gRPC, for the transformer.

In the two-hop layout the transformer sends the predictor a request as typed tensors
(:func:`fusionrec.api.schemas.to_v2` builds them once; KServe's gRPC client carries them as protobuf,
no JSON on the way). The predictor answers on the same KServe servicer it would use for stock gRPC, with
what :mod:`fusionrec.api.http` gives its REST side:

- the listen address from the settings (``serving.bind``; KServe's own gRPC server listens everywhere);
- the model repository's load and unload methods refused (UNIMPLEMENTED), as REST does not route them;
- a byte limit on messages (``serving.max_body_bytes``) and at most ``serving.max_inflight`` inferences
  at once (more: RESOURCE_EXHAUSTED at once, as REST's 429);
- the project's errors as gRPC status codes with their own message (:func:`status_code`), and any other
  error as INTERNAL with one fixed message (no type names, no addresses).

The transformer maps the codes back to HTTP statuses (:func:`http_status`), so a caller meets the same
error contract on either hop.
"""

from __future__ import annotations

import logging

from fusionrec.api.http import INTERNAL_ERROR
from fusionrec.errors import FusionRecError

log = logging.getLogger(__name__)

REFUSED = "the model repository methods are not served"
BUSY = "too many requests in flight; retry shortly"


def _codes():
    from grpc import StatusCode

    return {
        400: StatusCode.INVALID_ARGUMENT,
        401: StatusCode.UNAUTHENTICATED,
        403: StatusCode.PERMISSION_DENIED,
        404: StatusCode.NOT_FOUND,
        413: StatusCode.RESOURCE_EXHAUSTED,
        422: StatusCode.INVALID_ARGUMENT,
        429: StatusCode.RESOURCE_EXHAUSTED,
        503: StatusCode.UNAVAILABLE,
    }


def status_code(http: int):
    """The gRPC status code of an HTTP status (a 5xx not listed: INTERNAL)."""
    from grpc import StatusCode

    return _codes().get(http, StatusCode.INTERNAL if http >= 500 else StatusCode.INVALID_ARGUMENT)


def http_status(code) -> int:
    """The HTTP status a gRPC status code stands for, on the way back to the caller (429 for
    RESOURCE_EXHAUSTED; 503 for a code that says nothing about the request: the predictor is unavailable)."""
    from grpc import StatusCode

    back = {
        StatusCode.INVALID_ARGUMENT: 400,
        StatusCode.UNAUTHENTICATED: 401,
        StatusCode.PERMISSION_DENIED: 403,
        StatusCode.NOT_FOUND: 404,
        StatusCode.RESOURCE_EXHAUSTED: 429,
    }
    return back.get(code, 503)


def servicer(data_plane, model_repository_extension, max_inflight: int):
    """KServe's gRPC inference servicer with the limits and the error contract of the module docstring."""
    from grpc import StatusCode
    from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
    from kserve.protocol.grpc.servicer import InferenceServicer

    class GuardedServicer(InferenceServicer):
        inflight = 0

        async def RepositoryModelLoad(self, request, context):
            await context.abort(StatusCode.UNIMPLEMENTED, REFUSED)

        async def RepositoryModelUnload(self, request, context):
            await context.abort(StatusCode.UNIMPLEMENTED, REFUSED)

        async def ModelInfer(self, request, context):
            if self.inflight >= max_inflight:
                await context.abort(StatusCode.RESOURCE_EXHAUSTED, BUSY)
            self.inflight += 1
            try:
                return await super().ModelInfer(request, context)
            except FusionRecError as e:
                code, message = status_code(e.http_status), str(e)[:1000]
            except InvalidInput as e:
                code, message = StatusCode.INVALID_ARGUMENT, str(e.reason)[:1000]
            except ModelNotFound:
                code, message = StatusCode.NOT_FOUND, "no such model here"
            except ModelNotReady:
                code, message = StatusCode.UNAVAILABLE, "the model is not loaded yet; retry shortly"
            except Exception:  # anything not raised on purpose: logged here, one fixed message there
                log.exception("gRPC inference failed")
                code, message = StatusCode.INTERNAL, INTERNAL_ERROR
            finally:
                self.inflight -= 1
            await context.abort(code, message)

    return GuardedServicer(data_plane, model_repository_extension)


class GrpcServer:
    """The predictor's gRPC server (module docstring); ``start`` and ``stop`` as KServe's model server
    drives its own gRPC server."""

    def __init__(self, server, settings, port: int) -> None:
        self.model_server, self.settings, self.port = server, settings, port
        self._server = None

    async def start(self) -> None:
        from grpc import aio
        from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

        s = self.settings.serving
        limit = s.max_body_bytes
        self._server = aio.server(
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", 4 * limit)]
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            servicer(self.model_server.dataplane, self.model_server.model_repository_extension, s.max_inflight),
            self._server,
        )
        host = f"[{s.bind}]" if ":" in s.bind else s.bind
        self._server.add_insecure_port(f"{host}:{self.port}")
        await self._server.start()
        log.info("gRPC (open inference protocol) on %s:%d", host, self.port)
        await self._server.wait_for_termination()

    async def stop(self, sig: int | None = None) -> None:
        if self._server is not None:
            await self._server.stop(grace=5)
