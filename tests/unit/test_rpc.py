"""The predictor's gRPC endpoint (fusionrec.api.rpc): a real gRPC server and KServe's gRPC client on
loopback, in process, in front of the predictor with small in-file recommenders. The error contract,
the refused repository methods, the limits and the listen address."""

from __future__ import annotations

import asyncio
import socket
import time
from contextlib import asynccontextmanager

import numpy as np
import pytest

from fusionrec.config import load_settings
from fusionrec.errors import BadRequest, Forbidden, NotFound, TooManyRequests, Unauthorized, Unavailable
from fusionrec.recommender import Result

pytestmark = pytest.mark.unit
pytest.importorskip("kserve")
grpc = pytest.importorskip("grpc")


class Scorer:
    """A recommender that answers one item per row, after ``seconds``; or raises ``error``."""

    terms, version = ["text", "id", "bias"], "v1"

    def __init__(self, seconds: float = 0.0, error: Exception | None = None) -> None:
        self.seconds, self.error = seconds, error

    def run(self, rows):
        time.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        return [Result([f"item-{r.k}"], [""], [""], np.ones(1), np.ones((1, 3))) for r in rows]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def served(scorer: Scorer, **env: str):
    """The predictor over ``scorer`` behind the gRPC server; yields (client, port, repository)."""
    from kserve.inference_client import InferenceGRPCClient
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension

    from fusionrec.api.rpc import GrpcServer
    from serving.predictor import FusionPredictor, batcher

    settings = load_settings(env={f"FUSIONREC__SERVING__{k.upper()}": v for k, v in env.items()})
    predictor = FusionPredictor("fusionrec", settings)
    predictor.recommender = scorer
    predictor.batcher = batcher(settings, scorer)
    predictor.ready = True
    repo = ModelRepository()
    repo.update(predictor)

    class Server:  # what GrpcServer takes from KServe's model server
        dataplane = DataPlane(model_registry=repo)
        model_repository_extension = ModelRepositoryExtension(model_registry=repo)

    port = _port()
    server = GrpcServer(Server(), settings, port)
    task = asyncio.create_task(server.start())
    for _ in range(100):  # until it listens
        await asyncio.sleep(0.02)
        if server._server is not None:
            break
    client = InferenceGRPCClient(f"127.0.0.1:{port}", timeout=5, retries=0)
    try:
        yield client, port, repo
    finally:
        await client.close()
        await server.stop()
        task.cancel()


def _request(k: int = 3, rename: str | None = None, **row):
    """A v2 request as the transformer builds it; ``rename``: its first tensor renamed so."""
    from fusionrec.api.schemas import Row, to_v2

    req = to_v2([Row("recommend", k, user_id="u1", **row)], "fusionrec")
    if rename is not None:
        req.inputs[0]._name = rename  # InferInput's name has no setter
    return req


async def _code(coro):
    try:
        await coro
    except grpc.RpcError as e:
        return e.code(), e.details()
    return None, None


def test_a_request_over_grpc_is_answered_with_typed_tensors():
    from fusionrec.api.schemas import results_from_v2

    async def go():
        async with served(Scorer()) as (client, _, _):
            return await client.infer(_request(k=7))

    (row,) = results_from_v2(asyncio.run(go()))
    assert [i["item_id"] for i in row["items"]] == ["item-7"] and row["model_version"] == "v1"


def test_errors_keep_their_status_and_message_and_anything_else_is_internal_with_a_fixed_one():
    from grpc import StatusCode

    from fusionrec.api.http import INTERNAL_ERROR

    async def go(scorer, request):
        async with served(scorer) as (client, _, _):
            return await _code(client.infer(request))

    bad = asyncio.run(go(Scorer(), _request(rename="color")))
    assert bad[0] == StatusCode.INVALID_ARGUMENT and "unknown input tensor 'color'" in bad[1]
    missing = asyncio.run(go(Scorer(error=NotFound("unknown user 'u1'")), _request()))
    assert missing == (StatusCode.NOT_FOUND, "unknown user 'u1'")
    crash = asyncio.run(go(Scorer(error=RuntimeError("secret at /srv/internal:5432")), _request()))
    assert crash == (StatusCode.INTERNAL, INTERNAL_ERROR)


def test_the_status_codes_map_back_to_the_http_statuses_the_transformer_answers():
    from fusionrec.api.rpc import http_status, status_code

    for error in (BadRequest, Unauthorized, Forbidden, NotFound, TooManyRequests, Unavailable):
        assert http_status(status_code(error.http_status)) == error.http_status
    assert http_status(grpc.StatusCode.DEADLINE_EXCEEDED) == 503 and http_status(grpc.StatusCode.INTERNAL) == 503


def test_the_model_repository_methods_are_refused_and_the_model_stays_loaded():
    from grpc import StatusCode
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    async def go():
        async with served(Scorer()) as (client, port, repo):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = GRPCInferenceServiceStub(channel)
                unload = await _code(
                    stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="fusionrec"))
                )
                load = await _code(stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="fusionrec")))
            answer = await client.infer(_request())
            return unload, load, repo.get_model("fusionrec") is not None, answer

    unload, load, kept, answer = asyncio.run(go())
    assert unload[0] == StatusCode.UNIMPLEMENTED and load[0] == StatusCode.UNIMPLEMENTED
    assert kept and answer.outputs


def test_inferences_beyond_the_in_flight_limit_are_refused_at_once():
    from grpc import StatusCode

    async def go():
        async with served(Scorer(seconds=0.5), max_inflight="1") as (client, _, _):
            t = time.monotonic()
            first = asyncio.create_task(_code(client.infer(_request())))
            await asyncio.sleep(0.1)
            second = await _code(client.infer(_request()))
            return await first, second, time.monotonic() - t

    first, second, _ = asyncio.run(go())
    assert first == (None, None)
    assert second[0] == StatusCode.RESOURCE_EXHAUSTED and "retry" in second[1]


def test_a_message_over_the_byte_limit_is_refused():
    from grpc import StatusCode

    async def go():
        async with served(Scorer(), max_body_bytes="2000") as (client, _, _):
            big = _request(history=["x" * 100] * 50)
            return await _code(client.infer(big))

    assert asyncio.run(go())[0] == StatusCode.RESOURCE_EXHAUSTED


def test_it_listens_on_the_bind_address_only():
    from kserve.inference_client import InferenceGRPCClient

    async def go():
        async with served(Scorer(), bind="127.0.0.1") as (_, port, _):
            other = InferenceGRPCClient(f"127.0.0.2:{port}", timeout=2, retries=0)  # loopback, another address
            try:
                return await _code(other.infer(_request()))
            finally:
                await other.close()

    assert asyncio.run(go())[0] == grpc.StatusCode.UNAVAILABLE
