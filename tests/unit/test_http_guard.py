"""The guard in front of both model servers (fusionrec.api.http.Guard) and the predictor's admission,
driven through ASGI in process: small in-file fakes, no network."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from fusionrec.api.http import Guard
from fusionrec.config import load_settings
from fusionrec.errors import Unavailable
from fusionrec.recommender import Result


class FakeModel:
    def __init__(self, loaded: bool) -> None:
        self.ready, self.loaded = True, loaded

    async def healthy(self) -> bool:
        return self.loaded


class Echo:
    """An ASGI app that reads the whole body and answers its size; counts calls; can be made slow."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls, self.delay = 0, delay

    async def __call__(self, scope, receive, send):
        from fusionrec.errors import PayloadTooLarge

        self.calls += 1
        size = 0
        try:
            while True:
                message = await receive()
                size += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
        except PayloadTooLarge:
            await send({"type": "http.response.start", "status": 413, "headers": []})
            await send({"type": "http.response.body", "body": b"too large"})
            return
        await asyncio.sleep(self.delay)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_routes_outside_the_list_are_404_before_the_app_sees_them():
    inner = Echo()
    guard = Guard(inner, [FakeModel(True)], max_body_bytes=1000, max_inflight=4)

    async def go():
        async with _client(guard) as c:
            codes = [
                (await c.request(m, p)).status_code
                for m, p in [
                    ("POST", "/v2/repository/models/fusionrec/unload"),
                    ("POST", "/v2/repository/models/fusionrec/load"),
                    ("POST", "/v1/models/fusionrec:explain"),
                    ("GET", "/docs"),
                    ("GET", "/openapi.json"),
                    ("PUT", "/v1/models/fusionrec:predict"),
                    ("GET", "/v1/models/a/b"),
                ]
            ]
            ok = (await c.post("/v1/models/fusionrec:predict", content=b"{}")).status_code
        return codes, ok

    codes, ok = asyncio.run(go())
    assert codes == [404] * 7 and ok == 200 and inner.calls == 1


def test_readiness_is_503_until_the_model_is_loaded():
    async def go(loaded):
        async with _client(Guard(Echo(), [FakeModel(loaded)], 1000, 4)) as c:
            return [
                (await c.get(p)).status_code
                for p in ("/v2/health/ready", "/v1/models/fusionrec", "/v2/models/fusionrec/ready", "/v2/health/live")
            ]

    assert asyncio.run(go(False)) == [503, 503, 503, 200]
    assert asyncio.run(go(True)) == [200, 200, 200, 200]


def test_a_body_over_the_limit_is_refused_before_it_is_read():
    inner = Echo()
    guard = Guard(inner, [FakeModel(True)], max_body_bytes=1000, max_inflight=4)

    async def go():
        async with _client(guard) as c:
            declared = await c.post("/v1/models/m:predict", content=b"x" * 1001)

            async def stream():
                for _ in range(10):
                    yield b"x" * 500

            chunked = await c.post("/v1/models/m:predict", content=stream())
            fits = await c.post("/v1/models/m:predict", content=b"x" * 1000)
        return declared, chunked, fits

    declared, chunked, fits = asyncio.run(go())
    assert declared.status_code == 413 and "1,000 bytes" in declared.json()["error"]
    assert chunked.status_code == 413 and fits.text == "1000"
    assert inner.calls == 2  # the declared one never reached the app


def test_inference_beyond_the_admission_limit_is_a_429_with_retry_after():
    inner = Echo(delay=0.3)
    guard = Guard(inner, [FakeModel(True)], max_body_bytes=1000, max_inflight=2)

    async def go():
        async with _client(guard) as c:
            answers = await asyncio.gather(*(c.post("/v1/models/m:predict", content=b"{}") for _ in range(5)))
            health = await c.get("/v2/health/live")  # probes are never counted
        return answers, health

    answers, health = asyncio.run(go())
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 200, 429, 429, 429] and health.status_code == 200
    assert all(r.headers["retry-after"] == "1" for r in answers if r.status_code == 429)
    assert guard.inflight == 0


class SlowRecommender:
    terms, version = ["text", "id", "bias"], "v1"

    def __init__(self, seconds: float) -> None:
        self.seconds, self.batches = seconds, 0

    def run(self, rows):
        time.sleep(self.seconds)
        self.batches += 1
        return [Result(["a"], [""], [""], np.ones(1), np.ones((1, 3))) for _ in rows]


def test_the_predictor_drops_work_that_waited_past_the_queue_timeout():
    """One scoring thread: a request that waited longer than queue_timeout_s (its caller has given up) is a
    503 without being scored, so the thread moves on to callers still waiting."""
    pytest.importorskip("kserve")
    from serving.predictor import FusionPredictor, batcher

    # one request a batch: the three are scored one after another, as under a load larger than a batch
    settings = load_settings(
        env={"FUSIONREC__SERVING__QUEUE_TIMEOUT_S": "0.2", "FUSIONREC__SERVING__BATCH_MAX_ROWS": "1"}
    )
    predictor = FusionPredictor("fusionrec", settings)
    predictor.recommender = SlowRecommender(0.3)
    predictor.batcher = batcher(settings, predictor.recommender)

    async def go():
        body = {"instances": [{"k": 1}]}
        return await asyncio.gather(*(predictor.predict(body) for _ in range(3)), return_exceptions=True)

    answers = asyncio.run(go())
    assert isinstance(answers[0], dict) and answers[0]["predictions"][0]["items"][0]["item_id"] == "a"
    assert all(isinstance(a, Unavailable) and "waited too long" in str(a) for a in answers[1:])
    assert predictor.recommender.batches == 1


def test_the_predictor_scores_requests_that_wait_together_in_one_batch():
    """Micro-batching: requests queued behind a busy scorer are scored together, each answered with its own."""
    pytest.importorskip("kserve")
    from serving.predictor import FusionPredictor, batcher

    settings = load_settings(env={"FUSIONREC__SERVING__QUEUE_TIMEOUT_S": "5"})
    predictor = FusionPredictor("fusionrec", settings)
    predictor.recommender = SlowRecommender(0.2)
    predictor.batcher = batcher(settings, predictor.recommender)

    async def go():
        first = asyncio.ensure_future(predictor.predict({"instances": [{"k": 1}]}))
        await asyncio.sleep(0.05)  # the scorer is busy with the first: eight more queue behind it
        rest = [predictor.predict({"instances": [{"k": 1}, {"k": 1}]}) for _ in range(8)]
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(go())
    assert [len(a["predictions"]) for a in answers] == [1] + [2] * 8
    assert predictor.recommender.batches == 2  # the first alone, then the eight together


def test_the_predictor_is_not_ready_until_its_model_is_loaded():
    """Readiness used to answer 200 whatever the model's state; now it asks the predictor itself."""
    pytest.importorskip("kserve")
    from serving.predictor import FusionPredictor

    predictor = FusionPredictor("fusionrec", load_settings(env={}))
    predictor.ready = True  # what KServe's model server sets; the model is still not there
    guard = Guard(Echo(), [predictor], 1000, 4)

    async def go():
        async with _client(guard) as c:
            before = (await c.get("/v2/health/ready")).status_code
            predictor.recommender = SlowRecommender(0.0)
            after = (await c.get("/v2/health/ready")).status_code
        return before, after

    assert asyncio.run(go()) == (503, 200)
