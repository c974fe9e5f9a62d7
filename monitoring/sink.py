"""The inference-log sink on a cluster: KServe's request logger sends every request and response of the
predictor as CloudEvents (binary mode: ``ce-id``, ``ce-type`` ``org.kubeflow.serving.inference.request`` /
``.response``, ``ce-time``); this service pairs them by ``ce-id`` and appends the same records the local
transformer writes (:mod:`fusionrec.monitoring.log`), in the same Parquet layout, to the monitoring
folder (a volume backed by object storage).

The predictor's request is already privacy-filtered (the transformer redacts query text before it calls
the predictor) and the records keep no text nor image at all. User ids are pseudonymised with the key
from the ``fusionrec-monitoring`` Secret.

Run: ``python -m monitoring.sink --port 8080``.
"""

import argparse
import json
import logging
from collections import OrderedDict
from datetime import datetime, timedelta, timezone

log = logging.getLogger(__name__)

PENDING_MAX = 10_000  # requests waiting for their response; the oldest are dropped (and counted) beyond it
MAX_EVENT_ID = 256
MAX_SKEW = timedelta(days=1)  # a ce-time further than this from the sink's clock is replaced by the clock


def _when(headers, now: datetime | None = None) -> datetime:
    """The event's time, always timezone-aware (a time without a zone is UTC), and never further than a day
    from the sink's own clock (a sender does not get to write into another hour's partition at will)."""
    now = now or datetime.now(timezone.utc)
    raw = headers.get("ce-time")
    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw and len(raw) <= 64 else now
    except ValueError:
        return now
    at = at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)
    return at if abs(at - now) <= MAX_SKEW else now


def build_app(settings, writer):
    """The sink's FastAPI app writing through ``writer`` (an :class:`InferenceLogWriter`)."""
    from fastapi import FastAPI, Request, Response
    from kserve import InferRequest, InferResponse
    from kserve.protocol.rest.v2_datamodels import InferenceRequest
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    from fusionrec.api.schemas import parse_v1, parse_v2, results_from_v2
    from fusionrec.config import monitoring_dir
    from fusionrec.errors import FusionRecError
    from fusionrec.monitoring.log import log_key, records, summarise, valid_record

    key = log_key(settings.monitoring, monitoring_dir(settings), create=settings.profile == "local")
    # what a request leaves behind until its response: its summaries (no text, no image) and its time
    pending: OrderedDict[str, tuple[datetime, list]] = OrderedDict()
    counts = {"requests": 0, "responses": 0, "records": 0, "unpaired": 0, "rejected": 0, "dropped": 0}
    metrics = CollectorRegistry()
    dropped = Counter(
        "fusionrec_sink_dropped",
        "Inference-log events or records the sink did not keep, by reason",
        ["reason"],
        registry=metrics,
    )
    written = Counter("fusionrec_sink_records", "Records the sink handed to the log writer", registry=metrics)
    app = FastAPI(title="fusionrec inference-log sink", docs_url=None, redoc_url=None, openapi_url=None)

    def drop(reason: str, n: int = 1) -> None:
        dropped.labels(reason=reason).inc(n)
        counts["dropped" if reason.startswith("record") else "rejected"] += n

    def refuse(reason: str, message: str) -> Response:
        drop(reason)
        return Response(json.dumps({"error": message}), status_code=400, media_type="application/json")

    def rows_of(body: dict):
        if "instances" in body:
            return parse_v1(body, settings.serving)
        req = InferRequest.from_inference_request(InferenceRequest(**body), settings.serving.model_name)
        return parse_v2(req, settings.serving)

    def predictions_of(body: dict) -> list:
        preds = body["predictions"] if "predictions" in body else results_from_v2(InferResponse.from_rest(body))
        if not isinstance(preds, list):
            raise TypeError("predictions is not a list")
        return preds

    @app.post("/")
    @app.post("/events")
    async def event(request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        kind, event_id = headers.get("ce-type", ""), headers.get("ce-id")
        if not event_id or len(event_id) > MAX_EVENT_ID or not kind.startswith("org.kubeflow.serving.inference."):
            return refuse(
                "not_an_inference_event",
                "expected a KServe inference CloudEvent (ce-id, ce-type "
                "org.kubeflow.serving.inference.request/response)",
            )
        limit = settings.serving.max_body_bytes
        length = headers.get("content-length", "")
        if length and (not length.isdigit() or int(length) > limit):
            drop("too_large")
            return Response(
                json.dumps({"error": f"the event body is over {limit:,} bytes"}),
                status_code=413,
                media_type="application/json",
            )
        raw = bytearray()
        async for chunk in request.stream():  # a chunked body is counted as it arrives
            raw += chunk
            if len(raw) > limit:
                drop("too_large")
                return Response(
                    json.dumps({"error": f"the event body is over {limit:,} bytes"}),
                    status_code=413,
                    media_type="application/json",
                )
        try:
            body = json.loads(bytes(raw))
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser's depth
            return refuse("not_json", "the event body is not JSON")
        if not isinstance(body, dict):
            return refuse("not_an_object", "the event body is not a JSON object")
        if kind.endswith(".request"):
            counts["requests"] += 1
            try:
                summaries = summarise(rows_of(body), key)
            except (FusionRecError, KeyError, TypeError, ValueError, RecursionError) as e:
                log.warning("sink: a request event could not be read (%s)", type(e).__name__)
                return refuse("bad_request_event", "the request event does not fit the serving schema")
            pending[event_id] = (_when(headers), summaries)
            while len(pending) > PENDING_MAX:
                pending.popitem(last=False)
                counts["unpaired"] += 1
                drop("unpaired_request")
            return Response(status_code=202)
        counts["responses"] += 1
        got = pending.pop(event_id, None)
        if got is None:
            counts["unpaired"] += 1
            drop("unpaired_response")
            return Response(status_code=202)
        asked_at, summaries = got
        try:
            preds = predictions_of(body)
        except (FusionRecError, KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
            log.warning("sink: a response event could not be read (%s)", type(e).__name__)
            return refuse("bad_response_event", "the response event does not fit the serving schema")
        answered = max(_when(headers), asked_at)
        good = []
        for summary, pred in zip(summaries, preds):  # one record at a time: a bad one goes alone
            try:
                rec = records(
                    [summary],
                    [pred],
                    request_id=event_id,
                    at=answered,
                    latency_ms=(answered - asked_at).total_seconds() * 1000,
                )[0]
            except (KeyError, TypeError, ValueError, AttributeError):
                rec = None
            if rec is not None and valid_record(rec):
                good.append(rec)
            else:
                drop("record_invalid")
        if len(preds) != len(summaries):
            drop("record_unpaired", abs(len(preds) - len(summaries)))
        writer.append(good)
        written.inc(len(good))
        counts["records"] += len(good)
        return Response(status_code=202)

    @app.get("/healthz")
    async def health() -> dict:
        return {"status": "ok", **counts, "written": writer.written, "dropped_by_writer": writer.dropped}

    # the writer's own drops (queue full, disk) on the same counter, as the transformer counts its writer's
    writer.on_drop = lambda reason, n: dropped.labels(reason=f"writer_{reason}").inc(n)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics), media_type="text/plain; version=0.0.4")

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from fusionrec.config import load_settings, monitoring_dir
    from fusionrec.monitoring.log import InferenceLogWriter

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default=None, help="Listen address (default: serving.bind of the settings).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    settings = load_settings()
    mon = settings.monitoring
    writer = InferenceLogWriter(
        monitoring_dir(settings) / "logs",
        batch=mon.log_batch,
        flush_s=mon.log_flush_s,
        max_queue=mon.log_queue,
        max_bytes=mon.log_queue_bytes,
    )
    try:
        uvicorn.run(
            build_app(settings, writer),
            host=args.host or settings.serving.bind,
            port=args.port,
            log_level="warning",
            limit_concurrency=256,
            h11_max_incomplete_event_size=64 * 1024,
        )
    finally:
        writer.close()


if __name__ == "__main__":
    main()
