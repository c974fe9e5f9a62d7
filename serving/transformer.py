"""The KServe transformer in front of the predictor.

Preprocess: validate each instance against the typed schema and the limits (4xx with a message, never
5xx), pass query text through the privacy filter, and look up the users' latest history in Feast's
online store (batched, asynchronous) so that interactions pushed since training count. The lookup has
a short timeout and a circuit breaker (:mod:`fusionrec.serving.resilience`): with the store down or
slow, requests are served from the model's own histories, flagged ``"online_features": "unavailable"``
and counted on ``/metrics`` (``fusionrec_feature_store_fallbacks_total``), never a 5xx nor the store's
error text. Predict: the predictor over real HTTP (v2 by default, or v1). A predictor that is down or
times out becomes a 503 with a message; its 4xx answers are passed on with their message. Postprocess:
top-K items with id, title, image reference, score and its explanation, and the model version.
Log: each answered instance, after the PII filter and with the user id pseudonymised, is handed to the
inference log (:mod:`fusionrec.monitoring.log`): a queue that a thread writes to hourly Parquet files, so
a request never waits for the disk; records that could not be logged are counted on ``/metrics``
(``fusionrec_inference_log_dropped_total``).

Run: ``python -m serving.transformer --model_name fusionrec --http_port 8080
--predictor_host 127.0.0.1:8081 --predictor_protocol v2``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid
from dataclasses import asdict
from typing import Any

from fusionrec.config import Settings, monitoring_dir
from fusionrec.errors import BadRequest, Unavailable, UpstreamError
from fusionrec.monitoring.log import RequestSummary, records, summarise
from fusionrec.serving.http import error_message
from fusionrec.serving.schemas import Row, parse_v1, results_from_v2, to_v1, to_v2

log = logging.getLogger(__name__)


_COUNTERS: dict = {}


def _counter(name: str, doc: str):
    """A Prometheus counter labelled by ``reason``, registered once per process (on first use)."""
    if name not in _COUNTERS:
        from prometheus_client import Counter

        _COUNTERS[name] = Counter(name, doc, ["reason"])
    return _COUNTERS[name]


def _fallback_counter():
    """``fusionrec_feature_store_fallbacks_total{reason}``: requests served without the online store."""
    return _counter("fusionrec_feature_store_fallbacks", "Requests served from the model's own histories because the "
                    "online feature store failed, was slow, or its circuit was open")


async def user_histories(store, rows: list[Row], breaker=None, timeout_s: float = 0.3) -> str:
    """Fill in each user's online history (Feast ``serving`` features) as the rows' ``recent`` items.

    Returns what happened: ``used``, ``not needed`` (no row names a user), ``off`` (no store) or
    ``unavailable`` (the store failed, timed out or its breaker is open; the rows are left as they were).
    """
    from fusionrec.features.store import online_user_features_async
    from fusionrec.serving.resilience import CircuitBreaker, CircuitOpen

    ids = sorted({r.user_id for r in rows if r.user_id is not None})
    if not ids:
        return "not needed"
    if store is None:
        return "off"
    breaker = breaker or CircuitBreaker()
    try:
        feats = await breaker.call(lambda: online_user_features_async(store, ids), timeout_s)
    except Exception as e:  # never the store's error text in a response: it names internal addresses
        reason = ("circuit_open" if isinstance(e, CircuitOpen) else "timeout" if isinstance(e, TimeoutError)
                  else "error")
        _fallback_counter().labels(reason=reason).inc()
        log.warning("online feature store %s (%s: %s); serving from the model's histories", reason,
                    type(e).__name__, str(e)[:200])
        return "unavailable"
    history = dict(zip(feats.user_ids, feats.history))
    for r in rows:
        if r.user_id is not None:
            r.recent = [str(i) for i in history.get(r.user_id, [])] + r.recent
    return "used"


def _dropped_counter():
    """``fusionrec_inference_log_dropped_total{reason}``: records the inference log could not keep."""
    return _counter("fusionrec_inference_log_dropped", "Inference log records dropped because the log's queue was "
                    "full or its sink could not be written")


def inference_log(settings: Settings):
    """The transformer's log writer for the configured sink (None when the transformer writes no files)."""
    from fusionrec.monitoring.log import InferenceLogWriter

    mon = settings.monitoring
    if mon.inference_log != "parquet":
        return None
    counter = _dropped_counter()
    return InferenceLogWriter(monitoring_dir(settings) / "logs", batch=mon.log_batch, flush_s=mon.log_flush_s,
                              max_queue=mon.log_queue, on_drop=lambda reason, n: counter.labels(reason=reason).inc(n))


def warm_up(store) -> None:
    """One lookup before serving: the first one loads Feast's registry and opens the store, which would
    take longer than the per-request timeout and send the first requests to the fallback."""
    import time

    from fusionrec.features.store import online_user_features

    start = time.perf_counter()
    try:
        online_user_features(store, ["__warm_up__"])
    except Exception as e:  # a store that is down at start: requests fall back until it is up
        log.warning("the online feature store did not answer at start (%s); requests use the model's own histories "
                    "until it does", type(e).__name__)
        return
    log.info("online feature store ready in %.2f s", time.perf_counter() - start)


def _transformer_class():
    import httpx
    import kserve
    from kserve import InferRequest, InferResponse

    class FusionTransformer(kserve.Model):
        """``kserve.Model`` with ``--predictor_host``: preprocess, call the predictor, postprocess."""

        def __init__(self, name: str, settings: Settings, store=None, pii=None, log_writer=None) -> None:
            from fusionrec.monitoring.log import log_key
            from fusionrec.serving.resilience import CircuitBreaker

            super().__init__(name)
            self.settings = settings
            self.store = store
            self.pii = pii
            self.breaker = CircuitBreaker(settings.serving.breaker_failures, settings.serving.breaker_reset_s)
            _fallback_counter()  # declared at start, so that /metrics shows it before the first failure
            _dropped_counter()
            self.log_writer = log_writer
            # the vectors are asked for whenever something logs: this transformer's writer, or KServe's
            # request logger on the predictor (monitoring/sink.py), which sees the predictor's answer
            self.monitor = settings.monitoring.inference_log != "none"
            # the key pseudonymises users in the records this transformer writes (the sink has its own)
            self.log_key = log_key(settings.monitoring, monitoring_dir(settings)) if log_writer is not None else b""
            self.ready = True

        async def preprocess(self, payload: Any, headers: dict[str, str] | None = None):
            started = time.perf_counter()
            if isinstance(payload, InferRequest):
                raise BadRequest('the transformer takes v1 JSON: POST /v1/models/<name>:predict with {"instances": [...]}')
            rows = parse_v1(payload, self.settings.serving)
            for r in rows:
                if r.text is not None and self.pii is not None:
                    r.text = self.pii.redact(r.text)
            online = await user_histories(self.store, rows, self.breaker, self.settings.serving.feature_timeout_s)
            # the outcome of the lookup travels in the request's headers to postprocess (one model object
            # serves concurrent requests, so it cannot be kept on self)
            if headers is not None:
                headers["x-fusionrec-online-features"] = online
                if self.log_writer is not None:  # what the log keeps of the request, for postprocess
                    headers["x-fusionrec-log"] = json.dumps(
                        {"started": started, "rows": [asdict(s) for s in summarise(rows, self.log_key)]})
            if self.predictor_config is not None and self.predictor_config.protocol == "v2":
                return to_v2(rows, self.name, self.monitor)
            return to_v1(rows, self.monitor)

        async def predict(self, payload, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None):
            host = self.predictor_config.predictor_host if self.predictor_config else None
            try:
                return await super().predict(payload, headers, response_headers)
            except httpx.HTTPStatusError as e:
                message = error_message(e.response)
                if 400 <= e.response.status_code < 500:
                    raise UpstreamError(message, e.response.status_code) from None
                raise Unavailable(f"the predictor at {host} failed ({e.response.status_code}: {message[:200]}); "
                                  "retry shortly") from None
            except httpx.TransportError as e:  # refused, reset, timed out
                raise Unavailable(f"the predictor at {host} is unavailable ({type(e).__name__}); retry shortly") from None

        async def postprocess(self, result, headers: dict[str, str] | None = None,
                              response_headers: dict[str, str] | None = None):
            predictions = results_from_v2(result) if isinstance(result, InferResponse) else result["predictions"]
            online = (headers or {}).get("x-fusionrec-online-features", "off")
            for p in predictions:
                p["online_features"] = online
            stash = (headers or {}).get("x-fusionrec-log")
            if stash is not None:
                self._log(json.loads(stash), predictions, (headers or {}).get("x-request-id"))
            for p in predictions:
                p.pop("monitor", None)
            return {"predictions": predictions}

        def _log(self, stash: dict, predictions: list[dict], request_id: str | None) -> None:
            try:
                summaries = [RequestSummary(**r) for r in stash["rows"]]
                latency_ms = (time.perf_counter() - stash["started"]) * 1000
                self.log_writer.append(records(summaries, predictions, latency_ms=latency_ms,
                                               request_id=request_id or uuid.uuid4().hex))
            except Exception as e:  # the log never fails a request
                log.warning("inference log: a record could not be built (%s: %s)", type(e).__name__, e)
                _dropped_counter().labels(reason="record_failed").inc(len(predictions))

    return FusionTransformer


def main(argv: list[str] | None = None) -> None:
    import kserve
    from kserve import model_server

    from fusionrec.config import load_settings
    from fusionrec.features.store import feature_store
    from fusionrec.privacy import PiiFilter
    from fusionrec.serving.http import install_error_handlers

    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__.splitlines()[0])
    parser.add_argument("--no_feast", action="store_true", help="Serve without online user features.")
    args, _ = parser.parse_known_args(argv)
    settings = load_settings()
    logging.basicConfig(level=logging.INFO)
    store = None if args.no_feast else feature_store(settings.features, settings.features.data_dir)
    if store is not None:
        warm_up(store)
    writer = inference_log(settings)
    model = _transformer_class()(args.model_name, settings, store=store, pii=PiiFilter(settings.privacy),
                                 log_writer=writer)
    install_error_handlers()
    try:
        kserve.ModelServer(http_port=args.http_port, enable_grpc=False, workers=1).start([model])
    finally:
        if writer is not None:
            writer.close()  # what is queued reaches the disk on a clean stop


if __name__ == "__main__":
    main()
