"""The KServe transformer in front of the predictor.

Preprocess: validate each instance against the typed schema and the limits (4xx with a message, never
5xx), pass query text through the privacy filter, and look up the users' latest history in Feast's
online store (batched, asynchronous) so that interactions pushed since training count. The lookup has
a short timeout and a circuit breaker (:mod:`fusionrec.api.resilience`): with the store down or
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
import asyncio
import contextvars
import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import httpx
import kserve
from kserve import InferRequest, InferResponse

from fusionrec.api.batching import Coalescer
from fusionrec.api.http import error_message
from fusionrec.api.rpc import http_status
from fusionrec.api.schemas import Row, parse_v1, results_from_v2, to_v1, to_v2
from fusionrec.config import Settings, monitoring_dir
from fusionrec.errors import BadRequest, FusionRecError, Unavailable, UpstreamError
from fusionrec.monitoring.log import records, summarise

log = logging.getLogger(__name__)


_COUNTERS: dict = {}


@dataclass
class RequestState:
    """What preprocess hands to predict and postprocess for one request. It lives in a context variable
    (preprocess, predict and postprocess run in one task), never in a header a client could set."""

    started: float
    caller: Any = None  # fusionrec.api.access.Caller
    rows: list = field(default_factory=list)
    online: str = "off"
    summaries: list | None = None


_STATE: contextvars.ContextVar[RequestState | None] = contextvars.ContextVar("fusionrec_request", default=None)


def _counter(name: str, doc: str):
    """A Prometheus counter labelled by ``reason``, registered once per process (on first use)."""
    if name not in _COUNTERS:
        from prometheus_client import Counter

        _COUNTERS[name] = Counter(name, doc, ["reason"])
    return _COUNTERS[name]


def _fallback_counter():
    """``fusionrec_feature_store_fallbacks_total{reason}``: requests served without the online store."""
    return _counter(
        "fusionrec_feature_store_fallbacks",
        "Requests served from the model's own histories because the "
        "online feature store failed, was slow, or its circuit was open",
    )


def history_lookups(store) -> Coalescer:
    """The users' online histories by user id, the concurrent requests' lookups merged into one call."""
    from fusionrec.features.store import online_user_features_async

    async def fetch(ids: list[str]) -> dict:
        feats = await online_user_features_async(store, ids)
        return dict(zip(feats.user_ids, feats.history))

    return Coalescer(fetch)


async def user_histories(store, rows: list[Row], breaker=None, timeout_s: float = 0.3, lookups=None) -> str:
    """Fill in each user's online history (Feast ``serving`` features) as the rows' ``recent`` items;
    ``lookups`` (:func:`history_lookups`) merges the lookups of concurrent requests.

    Returns what happened: ``used``, ``not needed`` (no row names a user), ``off`` (no store) or
    ``unavailable`` (the store failed, timed out or its breaker is open; the rows are left as they were).
    """
    from fusionrec.api.resilience import CircuitBreaker, CircuitOpen

    ids = sorted({r.user_id for r in rows if r.user_id is not None})
    if not ids:
        return "not needed"
    if store is None:
        return "off"
    breaker = breaker or CircuitBreaker()
    lookups = lookups or history_lookups(store)
    try:
        history = await breaker.call(lambda: lookups.get(ids), timeout_s)
    except Exception as e:  # never the store's error text in a response: it names internal addresses
        reason = "circuit_open" if isinstance(e, CircuitOpen) else "timeout" if isinstance(e, TimeoutError) else "error"
        _fallback_counter().labels(reason=reason).inc()
        log.warning(
            "online feature store %s (%s: %s); serving from the model's histories",
            reason,
            type(e).__name__,
            str(e)[:200],
        )
        return "unavailable"
    for r in rows:
        if r.user_id is not None:
            r.recent = [str(i) for i in history.get(r.user_id) or []] + r.recent
    return "used"


def _dropped_counter():
    """``fusionrec_inference_log_dropped_total{reason}``: records the inference log could not keep."""
    return _counter(
        "fusionrec_inference_log_dropped",
        "Inference log records dropped because the log's queue was full or its sink could not be written",
    )


def inference_log(settings: Settings):
    """The transformer's log writer for the configured sink (None when the transformer writes no files)."""
    from fusionrec.monitoring.log import InferenceLogWriter

    mon = settings.monitoring
    if mon.inference_log != "parquet":
        return None
    counter = _dropped_counter()
    return InferenceLogWriter(
        monitoring_dir(settings) / "logs",
        batch=mon.log_batch,
        flush_s=mon.log_flush_s,
        max_queue=mon.log_queue,
        max_bytes=mon.log_queue_bytes,
        on_drop=lambda reason, n: counter.labels(reason=reason).inc(n),
    )


def warm_up(store, timeout_s: float = 10.0) -> bool:
    """One lookup before serving: the first one loads Feast's registry and opens the store, which would
    take longer than the per-request timeout and send the first requests to the fallback. It is given
    ``timeout_s`` (a blackholed Redis must not keep a new pod from starting); returns whether it answered."""
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout

    from fusionrec.features.store import online_user_features

    start = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feast-warm-up")
    try:
        pool.submit(online_user_features, store, ["__warm_up__"]).result(timeout=timeout_s)
    except FutureTimeout:
        log.warning(
            "the online feature store did not answer within %.0f s at start; requests use the model's own "
            "histories until it does",
            timeout_s,
        )
        return False
    except Exception as e:  # a store that is down at start: requests fall back until it is up
        log.warning(
            "the online feature store did not answer at start (%s); requests use the model's own histories "
            "until it does",
            type(e).__name__,
        )
        return False
    finally:
        pool.shutdown(wait=False)
    log.info("online feature store ready in %.2f s", time.perf_counter() - start)
    return True


class FusionTransformer(kserve.Model):
    """``kserve.Model`` with ``--predictor_host``: preprocess, call the predictor, postprocess."""

    def __init__(self, name: str, settings: Settings, store=None, pii=None, log_writer=None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from fusionrec.api.access import Authenticator, RateLimiter
        from fusionrec.api.resilience import CircuitBreaker
        from fusionrec.monitoring.log import log_key

        super().__init__(name)
        self.settings = settings
        self.store = store
        self.pii = pii
        self.auth = Authenticator(settings)
        self.limiter = RateLimiter(settings.serving.auth)
        self.breaker = CircuitBreaker(settings.serving.breaker_failures, settings.serving.breaker_reset_s)
        self.lookups = history_lookups(store) if store is not None else None
        # the PII filter is CPU work: off the event loop, on threads of its own
        self._pii_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pii")
        _fallback_counter()  # declared at start, so that /metrics shows it before the first failure
        _dropped_counter()
        self.log_writer = log_writer
        # the vectors are asked for whenever something logs: this transformer's writer, or KServe's
        # request logger on the predictor (monitoring/sink.py), which sees the predictor's answer
        self.monitor = settings.monitoring.inference_log != "none"
        # the key pseudonymises users in the records this transformer writes (the sink has its own)
        self.log_key = (
            log_key(settings.monitoring, monitoring_dir(settings), create=settings.profile == "local")
            if log_writer is not None
            else b""
        )
        self.ready = True

    def _redact(self, rows: list[Row]) -> None:
        for r in rows:
            if r.text is not None and self.pii is not None:
                r.text = self.pii.redact(r.text)

    def _request(self, rows: list[Row], anonymous: bool = False):
        if anonymous:
            rows = [replace(r, user_id=None) for r in rows]
        if self.predictor_config is not None and self.predictor_config.protocol in ("v2", "grpc-v2"):
            return to_v2(rows, self.name, self.monitor)  # typed tensors, carried as JSON or as protobuf
        return to_v1(rows, self.monitor)

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None):
        from fusionrec.api.access import authorise

        state = RequestState(time.perf_counter())
        _STATE.set(state)
        state.caller = self.auth.caller(headers)
        self.limiter.take(state.caller)
        if isinstance(payload, InferRequest):
            raise BadRequest('the transformer takes v1 JSON: POST /v1/models/<name>:predict with {"instances": [...]}')
        rows = parse_v1(payload, self.settings.serving)
        authorise(state.caller, rows)
        if any(r.text is not None for r in rows):
            await asyncio.get_running_loop().run_in_executor(self._pii_pool, self._redact, rows)
        state.online = await user_histories(
            self.store, rows, self.breaker, self.settings.serving.feature_timeout_s, self.lookups
        )
        state.rows = rows
        if self.log_writer is not None:  # what the log keeps of the request, for postprocess
            state.summaries = summarise(rows, self.log_key)
        return self._request(rows)

    async def _call_predictor(self, payload, headers, response_headers):
        try:
            return await super().predict(payload, headers, response_headers)
        except httpx.HTTPStatusError as e:
            message = error_message(e.response)
            if 400 <= e.response.status_code < 500:
                raise UpstreamError(message[:500], e.response.status_code) from None
            log.warning("the predictor failed (%s: %s)", e.response.status_code, message[:200])
            raise Unavailable("the predictor failed; retry shortly") from None
        except httpx.TransportError as e:  # refused, reset, timed out
            log.warning("the predictor is unavailable (%s)", type(e).__name__)
            why = " (it did not answer in time)" if isinstance(e, httpx.TimeoutException) else ""
            raise Unavailable(f"the predictor is unavailable{why}; retry shortly") from None
        except grpc.RpcError as e:  # the gRPC hop: the predictor's status code, or the channel's
            status = http_status(e.code())
            if status < 500:
                raise UpstreamError(str(e.details() or "")[:500], status) from None
            log.warning("the predictor is unavailable over gRPC (%s)", e.code().name)
            why = " (it did not answer in time)" if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED else ""
            raise Unavailable(f"the predictor is unavailable{why}; retry shortly") from None

    async def predict(
        self, payload, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ):
        try:
            return await self._call_predictor(payload, headers, response_headers)
        except FusionRecError as e:  # the predictor's answer (UpstreamError) or, collocated, the scorer's
            state = _STATE.get()
            # an end user is not told whether the id they sent exists: an unknown user is served
            # as an anonymous one (their history, or popular items) instead of a 404
            if e.http_status != 404 or state is None or state.caller is None or state.caller.any_user:
                raise
            return await self._call_predictor(self._request(state.rows, anonymous=True), headers, response_headers)

    async def postprocess(
        self, result, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ):
        predictions = results_from_v2(result) if isinstance(result, InferResponse) else result["predictions"]
        state = _STATE.get()
        online = state.online if state is not None else "off"
        for p in predictions:
            p["online_features"] = online
        if state is not None and state.summaries is not None:
            self._log(state, predictions, (headers or {}).get("x-request-id"))
        for p in predictions:
            p.pop("monitor", None)
        return {"predictions": predictions}

    def _log(self, state: RequestState, predictions: list[dict], request_id: str | None) -> None:
        try:
            latency_ms = (time.perf_counter() - state.started) * 1000
            rid = request_id if request_id and len(request_id) <= 128 else uuid.uuid4().hex
            self.log_writer.append(records(state.summaries, predictions, latency_ms=latency_ms, request_id=rid))
        except Exception as e:  # the log never fails a request
            log.warning("inference log: a record could not be built (%s: %s)", type(e).__name__, e)
            _dropped_counter().labels(reason="record_failed").inc(len(predictions))


def serve_transformer(args, make_model, collocated: bool = False) -> None:
    """Start a model server with the transformer's parts: the settings, the Feast store (unless
    ``args.no_feast``) warmed up, the PII filter and the inference log writer, handed to
    ``make_model(settings, store=..., pii=..., log_writer=...)``; the model is loaded, then served."""
    from fusionrec.api.http import run_model_server
    from fusionrec.config import load_settings
    from fusionrec.features.store import feature_store
    from fusionrec.privacy import PiiFilter

    settings = load_settings()
    logging.basicConfig(level=logging.INFO)
    if not args.no_feast:
        from fusionrec.features.store import verify_registry

        verify_registry(settings.features.data_dir)  # a changed registry.db is refused, never read
    store = None if args.no_feast else feature_store(settings.features, settings.features.data_dir)
    if store is not None:
        warm_up(store)
    writer = inference_log(settings)
    model = make_model(settings, store=store, pii=PiiFilter(settings.privacy), log_writer=writer)
    model.load()
    try:
        run_model_server(model, settings, args.http_port, collocated=collocated)
    finally:
        if writer is not None:
            writer.close()  # what is queued reaches the disk on a clean stop


def main(argv: list[str] | None = None) -> None:
    from kserve import model_server

    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__.splitlines()[0])
    parser.add_argument("--no_feast", action="store_true", help="Serve without online user features.")
    args, _ = parser.parse_known_args(argv)
    serve_transformer(args, lambda settings, **parts: FusionTransformer(args.model_name, settings, **parts))


if __name__ == "__main__":
    main()
