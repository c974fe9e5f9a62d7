"""The inference log: one record per answered instance, privacy-filtered, appended to hourly Parquet files.

What a record holds (:data:`SCHEMA`): the time, the model version, the request kind (``user``,
``history``, ``fallback``, or the query's modalities: ``text``, ``image``, ``like``, ``text+image``...,
followed by ``>image`` or ``>text`` for a query that searched that space only),
the user pseudonymised by a keyed hash (HMAC-SHA256 with a key from a secret), the request's history
length and k, whether the user was cold, the returned item ids and scores, the user's vector in the
model's space, the query's vectors in the encoders' spaces (text and image queries), and the latency.
Never the raw text, the raw image, nor the user id itself.

Layout: ``<folder>/hour=YYYY-MM-DDTHH/part-<time>-<id>.parquet``, each file written whole under a temporary
name and renamed, so a reader never sees half a file. The transformer writes through
:class:`InferenceLogWriter` (a queue and a thread: the request path only enqueues); the cluster's sink
service (``monitoring/sink.py``) writes the same layout from KServe's request logger.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import queue
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from fusionrec.config import MonitoringSettings
from fusionrec.errors import ConfigError
from fusionrec.io import make_secret_file

log = logging.getLogger(__name__)

QUERY_MODALITIES = ("text", "image")  # the modalities a query brings vectors in (encoder spaces)


def _schema():
    import pyarrow as pa

    vec = pa.list_(pa.float32())
    return pa.schema(
        [
            ("time", pa.timestamp("us", tz="UTC")),
            ("request_id", pa.string()),
            ("model_version", pa.string()),
            ("kind", pa.string()),
            ("user", pa.string()),  # keyed hash, or null
            ("history_length", pa.int32()),
            ("k", pa.int32()),
            ("cold", pa.bool_()),
            ("fallback", pa.bool_()),
            ("items", pa.list_(pa.string())),
            ("scores", vec),
            ("latency_ms", pa.float32()),
            ("user_vector", vec),
            *((f"query_{m}", vec) for m in QUERY_MODALITIES),
        ]
    )


MIN_KEY_BYTES = 32  # a shorter key lets pseudonyms of a small id space be brute-forced back to ids


def log_key(settings: MonitoringSettings, folder: str | Path, *, create: bool = True) -> bytes:
    """The pseudonymisation key: the secret in the settings, the mounted file, or (locally, neither set and
    ``create``) a random key made once with owner-only permissions, in ``secrets/`` beside the monitoring
    folder, never inside it (the dashboard reads that folder).

    Raises:
        ConfigError: the key is shorter than 32 bytes; the key file named in the settings is missing; or no
            key is configured and ``create`` is false (a cluster step whose Secret is missing must not start
            a new key: every pseudonym would change).
    """
    if settings.log_key is not None:
        return _long_enough(settings.log_key.get_secret_value().encode(), "monitoring.log_key")
    if settings.log_key_file:
        path = Path(settings.log_key_file)
        key = path.read_bytes().strip() if path.is_file() else b""
        if not key:
            raise ConfigError(
                f"monitoring.log_key_file {path} is missing or empty; mount the Secret that holds the "
                "inference log's pseudonymisation key there"
            )
        return _long_enough(key, f"monitoring.log_key_file {path}")
    if not create:
        raise ConfigError(
            "no pseudonymisation key: set monitoring.log_key (FUSIONREC__MONITORING__LOG_KEY, from the "
            "fusionrec-monitoring Secret) or monitoring.log_key_file"
        )
    path = Path(folder).resolve().parent / "secrets" / f"{Path(folder).resolve().name}.log.key"
    make_secret_file(path, secrets.token_hex(32))
    return _long_enough(path.read_bytes().strip(), str(path))


def _long_enough(key: bytes, where: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{where}: the pseudonymisation key has {len(key)} bytes; at least {MIN_KEY_BYTES} are "
            "required (e.g. python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return key


def pseudonymise(user_id: str | None, key: bytes) -> str | None:
    """A user id as a keyed hash: stable for one key (a user's requests still group), not reversible
    without it (unlike a plain hash of a small id space)."""
    if user_id is None:
        return None
    return hmac.new(key, str(user_id).encode(), hashlib.sha256).hexdigest()[:32]


@dataclass
class RequestSummary:
    """What the log keeps of one validated instance (see :func:`summarise`)."""

    kind: str
    user: str | None
    history_length: int
    k: int


def summarise(rows, key: bytes) -> list[RequestSummary]:
    """The loggable part of validated rows (:class:`fusionrec.recommender.Row`): no text, no image."""
    out = []
    for r in rows:
        if r.kind == "query":
            kind = "+".join(m for m in ("text", "image", "like") if getattr(r, m) is not None)
            if r.space != "both":  # a query that searched one space only: "text>image", "image>text", ...
                kind += f">{r.space}"
        else:
            kind = "user" if r.user_id is not None else "history"
        out.append(RequestSummary(kind, pseudonymise(r.user_id, key), len(r.history) + len(r.recent), r.k))
    return out


def _vector(v: Any) -> list[float] | None:
    return None if v is None else np.asarray(v, dtype=np.float32).tolist()


def records(
    summaries: list[RequestSummary],
    predictions: list[dict[str, Any]],
    *,
    latency_ms: float,
    request_id: str,
    at: datetime | None = None,
) -> list[dict[str, Any]]:
    """Log records for one request: its instances' summaries beside the predictor's answers (v1 dicts, with
    the ``monitor`` part the predictor adds when asked: ``user_vector`` and ``query`` vectors)."""
    at = at or datetime.now(timezone.utc)
    out = []
    for s, p in zip(summaries, predictions):
        mon = p.get("monitor") or {}
        query = mon.get("query") or {}
        out.append(
            {
                "time": at,
                "request_id": request_id,
                "model_version": p.get("model_version"),
                "kind": "fallback" if p.get("fallback") else s.kind,
                "user": s.user,
                "history_length": s.history_length,
                "k": s.k,
                "cold": bool(p.get("cold")),
                "fallback": bool(p.get("fallback")),
                "items": [str(i["item_id"]) for i in p.get("items", [])],
                "scores": [float(i["score"]) for i in p.get("items", [])],
                "latency_ms": float(latency_ms),
                "user_vector": _vector(mon.get("user_vector")),
                **{f"query_{m}": _vector(query.get(m)) for m in QUERY_MODALITIES},
            }
        )
    return out


def valid_record(r: dict[str, Any]) -> bool:
    """One log record checked on its own (what the sink keeps of an event it cannot trust): a registry
    version, string ids with a finite score each, vectors of finite numbers."""
    import math

    from fusionrec.registry import is_version

    def vector(v) -> bool:
        return v is None or (
            isinstance(v, list) and len(v) <= 4096 and all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)
        )

    return (
        is_version(r.get("model_version"))
        and isinstance(r.get("items"), list)
        and all(isinstance(i, str) and len(i) <= 256 for i in r["items"])
        and isinstance(r.get("scores"), list)
        and vector(r["scores"])
        and len(r["scores"]) == len(r["items"])
        and all(vector(r.get(f"query_{m}")) for m in QUERY_MODALITIES)
        and vector(r.get("user_vector"))
    )


def hour_partition(at: datetime) -> str:
    return f"hour={at.astimezone(timezone.utc):%Y-%m-%dT%H}"


def write_records(folder: str | Path, recs: list[dict[str, Any]]) -> list[Path]:
    """Write records as one Parquet file per hour they fall in (atomically: temporary name, then rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema()
    by_hour: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        by_hour.setdefault(hour_partition(r["time"]), []).append(r)
    written = []
    for part, rows in by_hour.items():
        target = Path(folder) / part
        target.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rows, schema=schema)
        name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = target / f".{name}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, target / name)
        written.append(target / name)
    return written


def record_bytes(r: dict[str, Any]) -> int:
    """A record's size in memory, estimated from its parts (numbers as 8 bytes, strings by length)."""
    size = 256
    for v in r.values():
        if isinstance(v, (list, tuple)):
            size += sum(len(x) if isinstance(x, str) else 8 for x in v) + 8 * len(v)
        elif isinstance(v, str):
            size += len(v)
    return size


class InferenceLogWriter:
    """Appends records off the request path: :meth:`append` only enqueues; a thread writes a file per
    ``batch`` records or every ``flush_s`` seconds. A full queue or a failed write drops the records and
    reports them through ``on_drop(reason, count)`` (the transformer counts them on ``/metrics``); a
    request never waits for the disk and never fails because of it."""

    def __init__(
        self,
        folder: str | Path,
        *,
        batch: int = 512,
        flush_s: float = 2.0,
        max_queue: int = 100_000,
        max_bytes: int = 256 * 1024 * 1024,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.batch, self.flush_s = batch, flush_s
        self.max_bytes, self.queued_bytes = max_bytes, 0
        self._bytes_lock = threading.Lock()
        self.on_drop = on_drop or (lambda reason, n: None)
        self.dropped: dict[str, int] = {}
        self.written = 0
        self._queue: queue.Queue = queue.Queue(max_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    def _drop(self, reason: str, n: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n
        try:
            self.on_drop(reason, n)
        except Exception:  # a counter must never take the writer down
            log.exception("inference log: the drop counter failed")

    def append(self, recs: list[dict[str, Any]]) -> None:
        """Enqueue records; never blocks. Beyond ``max_queue`` records or ``max_bytes`` (their estimated
        size) the rest are dropped and counted."""
        for n, r in enumerate(recs):
            size = record_bytes(r)
            with self._bytes_lock:
                if self.queued_bytes + size > self.max_bytes:
                    self._drop("queue_bytes_full", len(recs) - n)
                    return
                self.queued_bytes += size
            try:
                self._queue.put_nowait((size, r))
            except queue.Full:
                with self._bytes_lock:
                    self.queued_bytes -= size
                self._drop("queue_full", len(recs) - n)
                return

    def _write(self, pending: list[dict[str, Any]]) -> None:
        try:
            write_records(self.folder, pending)
            self.written += len(pending)
        except Exception as e:  # disk full, folder gone or not writable: count, warn, carry on
            log.warning(
                "inference log: %d records could not be written to %s (%s: %s)",
                len(pending),
                self.folder,
                type(e).__name__,
                e,
            )
            self._drop("write_failed", len(pending))

    def _run(self) -> None:
        pending: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.flush_s
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                size, rec = self._queue.get(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
                with self._bytes_lock:
                    self.queued_bytes -= size
                pending.append(rec)
            except queue.Empty:
                pass
            if pending and (len(pending) >= self.batch or time.monotonic() >= deadline or self._stop.is_set()):
                self._write(pending)
                pending = []
            if time.monotonic() >= deadline:
                deadline = time.monotonic() + self.flush_s
        if pending:
            self._write(pending)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop the thread."""
        self._stop.set()
        self._thread.join(timeout)


@dataclass
class Window:
    """Logged records over a time range, and what could not be read."""

    frame: pd.DataFrame
    start: datetime
    end: datetime
    files: int = 0
    skipped: list[str] = field(default_factory=list)  # "path: reason" per unreadable file


def hour_of(part: str) -> datetime | None:
    try:
        return datetime.strptime(part.removeprefix("hour="), "%Y-%m-%dT%H").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def read_window(folder: str | Path, start: datetime | None = None, end: datetime | None = None) -> Window:
    """Records with ``start <= time < end`` (open ends: everything). A corrupt or truncated file is skipped
    with a warning and listed in ``skipped``; the rest is read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(folder)
    lo = start or datetime.min.replace(tzinfo=timezone.utc)
    hi = end or datetime.max.replace(tzinfo=timezone.utc)
    tables, skipped, files = [], [], 0
    schema = _schema()
    for part in sorted(root.glob("hour=*")) if root.is_dir() else []:
        hour = hour_of(part.name)
        if hour is None or hour + timedelta(hours=1) <= lo or hour >= hi:
            continue
        for f in sorted(part.glob("*.parquet")):
            files += 1
            try:
                t = pq.read_table(f)
                tables.append(t.select(schema.names).cast(schema))
            except Exception as e:  # truncated, corrupt, another schema
                log.warning("inference log: skipping %s (%s: %s)", f, type(e).__name__, str(e)[:200])
                skipped.append(f"{f}: {type(e).__name__}")
    frame = pa.concat_tables(tables).to_pandas() if tables else schema.empty_table().to_pandas()
    if len(frame):
        frame = frame[(frame["time"] >= lo) & (frame["time"] < hi)].reset_index(drop=True)
    return Window(frame, lo, hi, files, skipped)
