"""The inference-log sink under hostile events: each record checked on its own, a bad one dropped and
counted alone, no 5xx, nothing of the good traffic lost. The sink's real app and log writer, driven
through ASGI in process, the log read back from its Parquet files."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from fusionrec.config import load_settings
from fusionrec.monitoring.log import InferenceLogWriter, read_window
from monitoring.sink import build_app

pytestmark = pytest.mark.integration
KEY = "sink-test-key-0123456789abcdefghijklmnopqrstuvwxyz"
CE = {"ce-specversion": "1.0", "ce-source": "http://predictor/", "content-type": "application/json"}


def _exchange(n: int, version: str = "v0003") -> tuple[dict, dict]:
    request = {"instances": [{"user_id": f"user-{n}", "k": 2}, {"history": ["a", "b"], "k": 1}]}
    response = {
        "predictions": [
            {
                "items": [{"item_id": "a", "score": 0.5}, {"item_id": "b", "score": 0.25}],
                "fallback": False,
                "cold": False,
                "model_version": version,
                "monitor": {"user_vector": [0.1, 0.2], "query": {}},
            },
            {"items": [{"item_id": "c", "score": 0.1}], "fallback": False, "cold": True, "model_version": version},
        ]
    }
    return request, response


HOSTILE = [  # (headers, body) that must never become a record nor a 5xx
    ({"ce-type": "something.else", "ce-id": "x"}, b"{}"),
    ({"ce-type": "org.kubeflow.serving.inference.request"}, b"{}"),  # no ce-id
    ({"ce-type": "org.kubeflow.serving.inference.request", "ce-id": "i" * 10_000}, b"{}"),
    ({"ce-type": "org.kubeflow.serving.inference.request", "ce-id": "bad-json"}, b"{not json"),
    ({"ce-type": "org.kubeflow.serving.inference.request", "ce-id": "deep"}, b"[" * 100_000 + b"]" * 100_000),
    ({"ce-type": "org.kubeflow.serving.inference.request", "ce-id": "utf8"}, b'{"instances": ["\xff\xfe"]}'),
    ({"ce-type": "org.kubeflow.serving.inference.request", "ce-id": "list"}, b"[1, 2]"),
    ({"ce-type": "org.kubeflow.serving.inference.request", "ce-id": "schema"}, b'{"instances": [{"k": "5"}]}'),
    ({"ce-type": "org.kubeflow.serving.inference.response", "ce-id": "unpaired"}, b'{"predictions": []}'),
]


@pytest.fixture
def sink(tmp_path):
    settings = load_settings(
        env={
            "FUSIONREC__MONITORING__FOLDER": str(tmp_path / "monitoring"),
            "FUSIONREC__MONITORING__LOG_KEY": KEY,
            "FUSIONREC__SERVING__MAX_BODY_BYTES": "200000",
        }
    )
    writer = InferenceLogWriter(tmp_path / "monitoring" / "logs", batch=10_000, flush_s=0.2)
    yield build_app(settings, writer), writer, tmp_path / "monitoring" / "logs"
    writer.close()


async def _post(client, kind: str, event_id: str, body, **headers):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(
        "/events",
        content=data,
        headers={**CE, "ce-type": f"org.kubeflow.serving.inference.{kind}", "ce-id": event_id, **headers},
    )


def _written(folder, n: int) -> int:
    for _ in range(50):
        got = len(read_window(folder).frame)
        if got >= n:
            return got
        time.sleep(0.1)
    return len(read_window(folder).frame)


def test_malformed_events_beside_good_traffic_lose_nothing_and_answer_no_5xx(sink):
    app, writer, folder = sink

    async def go():
        codes = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sink") as c:
            for n in range(50):
                request, response = _exchange(n)
                codes.append((await _post(c, "request", f"good-{n}", request)).status_code)
                for m in range(20):  # 1,000 malformed events in all, between each good request and its response
                    headers, body = HOSTILE[(n + m) % len(HOSTILE)]
                    r = await c.post("/events", content=body, headers={**CE, **headers})
                    assert r.status_code < 500, (headers, r.text)
                    codes.append(r.status_code)
                codes.append((await _post(c, "response", f"good-{n}", response)).status_code)
            metrics = (await c.get("/metrics")).text
        return codes, metrics

    codes, metrics = asyncio.run(go())
    assert max(codes) < 500 and codes.count(202) >= 100
    assert _written(folder, 100) == 100  # 50 exchanges x 2 instances: every good record kept
    assert 'fusionrec_sink_dropped_total{reason="not_json"}' in metrics


def test_a_bad_record_is_dropped_alone_and_counted(sink):
    app, writer, folder = sink
    request, response = _exchange(1)
    response["predictions"][0]["model_version"] = "../../../etc/cron.d/x"  # used to become a file path

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sink") as c:
            await _post(c, "request", "e1", request, **{"ce-time": "2026-11-29T10:00:00"})  # naive: taken as UTC
            r = await _post(c, "response", "e1", response, **{"ce-time": "2026-11-29T10:00:00.250+00:00"})
            await _post(c, "request", "e2", request)
            not_a_list = await _post(c, "response", "e2", {"predictions": {"a": 1}})
            health = (await c.get("/healthz")).json()
            return r, not_a_list, health

    r, not_a_list, health = asyncio.run(go())
    assert r.status_code == 202 and not_a_list.status_code == 400
    assert _written(folder, 1) == 1
    frame = read_window(folder).frame
    assert list(frame["model_version"]) == ["v0003"] and list(frame["kind"]) == ["history"]
    assert health["dropped"] == 1


def test_a_body_over_the_limit_is_a_413(sink):
    app, _, _ = sink

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sink") as c:
            declared = await _post(c, "request", "big", b"x" * 300_000)

            async def chunks():
                for _ in range(10):
                    yield b"x" * 50_000

            chunked = await c.post(
                "/events",
                content=chunks(),
                headers={**CE, "ce-type": "org.kubeflow.serving.inference.request", "ce-id": "big2"},
            )
            return declared, chunked

    declared, chunked = asyncio.run(go())
    assert declared.status_code == 413 and chunked.status_code == 413


def test_the_log_queue_is_bounded_in_bytes(tmp_path):
    drops = []
    writer = InferenceLogWriter(
        tmp_path / "logs",
        flush_s=30,
        max_queue=1_000_000,
        max_bytes=100_000,
        on_drop=lambda reason, n: drops.append((reason, n)),
    )
    try:
        big = {"model_version": "v0001", "items": [], "scores": [], "query_text": [0.0] * 2_000}  # ~24 KB each
        writer.append([dict(big) for _ in range(10)])
        assert writer.queued_bytes <= 100_000 and drops and drops[0][0] == "queue_bytes_full"
        assert sum(n for _, n in drops) == 10 - writer._queue.qsize()
    finally:
        writer.close(timeout=1)


def test_no_input_from_the_openapi_fuzzer_answers_5xx_on_the_sink(tmp_path, free_port):
    """schemathesis over the running sink's routes (valid and invalid events from its OpenAPI)."""
    import os
    import subprocess
    import sys

    from fusionrec.api.openapi import sink_openapi
    from fusionrec.platform.local import wait_answering
    from tests.integration.test_serving import fuzz

    port = free_port()
    env = {**os.environ, "FUSIONREC__MONITORING__FOLDER": str(tmp_path / "sink"), "FUSIONREC__MONITORING__LOG_KEY": KEY}
    sink = subprocess.Popen(
        [sys.executable, "-m", "monitoring.sink", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_answering(f"http://127.0.0.1:{port}/healthz")
        total, bad = fuzz(sink_openapi(), f"http://127.0.0.1:{port}", examples=100)
        print(f"schemathesis: {total} cases over the sink, {len(bad)} answered 5xx or leaked")
        assert total > 200 and bad == [], (total, bad[:10])
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        sink.terminate()
        sink.wait(10)
