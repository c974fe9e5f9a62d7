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
from datetime import datetime, timezone

log = logging.getLogger(__name__)

PENDING_MAX = 10_000  # requests waiting for their response; the oldest are dropped (and counted) beyond it


def _when(headers) -> datetime:
    raw = headers.get("ce-time")
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else datetime.now(timezone.utc)
    except ValueError:
        return datetime.now(timezone.utc)


def build_app(settings, writer):
    """The sink's FastAPI app writing through ``writer`` (an :class:`InferenceLogWriter`)."""
    from fastapi import FastAPI, Request, Response
    from kserve import InferRequest, InferResponse
    from kserve.protocol.rest.v2_datamodels import InferenceRequest

    from fusionrec.config import monitoring_dir
    from fusionrec.errors import FusionRecError
    from fusionrec.monitoring.log import log_key, records, summarise
    from fusionrec.serving.schemas import parse_v1, parse_v2, results_from_v2

    key = log_key(settings.monitoring, monitoring_dir(settings), create=settings.profile == "local")
    pending: OrderedDict[str, tuple[datetime, dict]] = OrderedDict()
    counts = {"requests": 0, "responses": 0, "records": 0, "unpaired": 0, "rejected": 0}
    app = FastAPI(title="fusionrec inference-log sink")

    def rows_of(body: dict):
        if "instances" in body:
            return parse_v1(body, settings.serving)
        req = InferRequest.from_inference_request(InferenceRequest(**body), settings.serving.model_name)
        return parse_v2(req, settings.serving)

    def predictions_of(body: dict) -> list[dict]:
        return body["predictions"] if "predictions" in body else results_from_v2(InferResponse.from_rest(body))

    @app.post("/")
    @app.post("/events")
    async def event(request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        kind, event_id = headers.get("ce-type", ""), headers.get("ce-id")
        if not event_id or not kind.startswith("org.kubeflow.serving.inference."):
            counts["rejected"] += 1
            return Response(json.dumps({"error": "expected a KServe inference CloudEvent (ce-id, ce-type "
                                                 "org.kubeflow.serving.inference.request/response)"}),
                            status_code=400, media_type="application/json")
        try:
            body = json.loads(await request.body())
        except ValueError:
            counts["rejected"] += 1
            return Response('{"error": "the event body is not JSON"}', status_code=400, media_type="application/json")
        if kind.endswith(".request"):
            counts["requests"] += 1
            pending[event_id] = (_when(headers), body)
            while len(pending) > PENDING_MAX:
                pending.popitem(last=False)
                counts["unpaired"] += 1
            return Response(status_code=202)
        counts["responses"] += 1
        got = pending.pop(event_id, None)
        if got is None:
            counts["unpaired"] += 1
            return Response(status_code=202)
        asked_at, req = got
        try:
            rows = rows_of(req)
            preds = predictions_of(body)
        except (FusionRecError, KeyError, TypeError, ValueError) as e:
            counts["rejected"] += 1
            log.warning("sink: an exchange could not be read (%s: %s)", type(e).__name__, str(e)[:200])
            return Response(status_code=202)
        answered = _when(headers)
        recs = records(summarise(rows, key), preds, request_id=event_id, at=answered,
                       latency_ms=max(0.0, (answered - asked_at).total_seconds() * 1000))
        writer.append(recs)
        counts["records"] += len(recs)
        return Response(status_code=202)

    @app.get("/healthz")
    async def health() -> dict:
        return {"status": "ok", **counts, "written": writer.written, "dropped": writer.dropped}

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from fusionrec.config import load_settings, monitoring_dir
    from fusionrec.monitoring.log import InferenceLogWriter

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="0.0.0.0")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    settings = load_settings()
    mon = settings.monitoring
    writer = InferenceLogWriter(monitoring_dir(settings) / "logs", batch=mon.log_batch, flush_s=mon.log_flush_s,
                                max_queue=mon.log_queue)
    try:
        uvicorn.run(build_app(settings, writer), host=args.host, port=args.port, log_level="warning")
    finally:
        writer.close()


if __name__ == "__main__":
    main()
