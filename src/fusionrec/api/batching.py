"""Micro-batching: the requests that arrive while the scorer is busy, or within a few milliseconds of each
other, are scored as one batch on one scoring thread, so throughput grows with concurrency instead of
queueing one request behind another.

Requests wait in a bounded queue (full: a 429 with ``Retry-After``). The scoring thread takes the first,
then whatever else is queued, waiting at most ``max_wait_s`` for more, up to ``max_rows`` rows in all; a
request that waited longer than ``queue_timeout_s`` is answered 503 without being scored (its caller has
given up by then). A batch that fails is scored again one request at a time, so that one request's bad
input (an unknown id, an image that cannot be decoded) is that request's 4xx, with its own row numbers,
and never its neighbours'.

:class:`Coalescer` does the same for an asynchronous lookup: the feature store is asked once for the
users of every request that came while the last lookup was in flight.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fusionrec.errors import FusionRecError, TooManyRequests, Unavailable

log = logging.getLogger(__name__)

OVERLOADED = "the predictor is overloaded: the request waited too long for scoring; retry shortly"


@dataclass
class _Waiting:
    rows: Sequence[Any]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    queued_at: float


def _settle(item: _Waiting, result: Any = None, error: BaseException | None = None) -> None:
    """Hand a result (or an error) to the waiting request's event loop, unless it has gone."""

    def done() -> None:
        if not item.future.done():
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(result)

    try:
        item.loop.call_soon_threadsafe(done)
    except RuntimeError:  # the loop has closed: nobody waits for it
        pass


class MicroBatcher:
    """``await submit(rows)`` answers ``score(rows)``, scored together with other requests' rows.

    ``score`` takes a list of rows and returns one result per row, in order; it runs on one thread of
    this batcher's own. Sizes come from the serving settings (``batch_wait_ms``, ``batch_max_rows``,
    ``batch_queue``, ``queue_timeout_s``).
    """

    def __init__(
        self,
        score: Callable[[list[Any]], list[Any]],
        *,
        max_wait_s: float = 0.002,
        max_rows: int = 256,
        max_queue: int = 1024,
        queue_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.score = score
        self.max_wait_s, self.max_rows, self.queue_timeout_s = max_wait_s, max_rows, queue_timeout_s
        self.clock = clock
        self.batches = 0  # batches scored, and the requests in them (for the metrics and the tests)
        self.requests = 0
        self._queue: queue.Queue[_Waiting | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._work, name="score", daemon=True)
        self._thread.start()

    async def submit(self, rows: Sequence[Any]) -> list[Any]:
        """Score ``rows`` (one request's) and return their results, in order."""
        loop = asyncio.get_running_loop()
        item = _Waiting(rows, loop.create_future(), loop, self.clock())
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise TooManyRequests("the predictor's scoring queue is full; retry shortly") from None
        return await item.future

    def close(self) -> None:
        """Stop the scoring thread once the requests queued before this are answered."""
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _take(self) -> list[_Waiting] | None:
        """The next batch: the first request, then whatever else comes within the wait, up to the rows."""
        first = self._queue.get()
        if first is None:
            return None
        batch, rows = [first], len(first.rows)
        deadline = self.clock() + self.max_wait_s
        while rows < self.max_rows:
            try:
                item = self._queue.get_nowait()  # queued while the last batch was scored: no wait at all
            except queue.Empty:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(item)
            rows += len(item.rows)
        return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            now = self.clock()
            live = []
            for item in batch:
                if now - item.queued_at > self.queue_timeout_s:
                    _settle(item, error=Unavailable(OVERLOADED))
                elif not item.future.done():  # a request whose caller went away is not scored
                    live.append(item)
            if live:
                self._score(live)

    def _score(self, batch: list[_Waiting]) -> None:
        try:
            results = self.score([row for item in batch for row in item.rows])
        except Exception as e:
            if len(batch) > 1:  # one request's bad input is its own error, with its own row numbers
                for item in batch:
                    self._score([item])
                return
            self._count(batch)
            _settle(batch[0], error=e if isinstance(e, FusionRecError) else _unexpected(e))
            return
        self._count(batch)
        start = 0
        for item in batch:
            _settle(item, result=results[start : start + len(item.rows)])
            start += len(item.rows)

    def _count(self, batch: list[_Waiting]) -> None:
        self.batches += 1
        self.requests += len(batch)


def _unexpected(e: Exception) -> Exception:
    """An error the code did not raise on purpose keeps its type (the server's handler gives it its fixed
    message and logs it); logged here with the batch's context."""
    log.exception("scoring failed: %s", type(e).__name__)
    return e


class Coalescer:
    """Concurrent ``await get(keys)`` calls merged into one ``await fetch(keys)`` (the feature store lookup):
    while one fetch is in flight, the keys asked for meanwhile wait and go together in the next, at most
    ``max_keys`` a fetch. ``fetch`` returns a dict by key; a fetch that fails fails the calls it served.
    A caller that gives up (a timeout cancels its wait) leaves the fetch running for the others."""

    def __init__(self, fetch: Callable[[list[Any]], Any], max_keys: int = 256) -> None:
        self.fetch, self.max_keys = fetch, max_keys
        self.fetches = 0  # fetches made, and the calls they answered (for the tests)
        self.calls = 0
        self._waiting: list[tuple[list[Any], asyncio.Future]] = []
        self._running = False
        self._task: asyncio.Future | None = None

    async def get(self, keys: Sequence[Any]) -> dict:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((list(keys), future))
        if not self._running:
            self._running = True
            self._task = asyncio.ensure_future(self._drain())  # held: a task nobody holds may be collected
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, keys = [], set()
                while self._waiting and (not batch or len(keys) + len(self._waiting[0][0]) <= self.max_keys):
                    ks, future = self._waiting.pop(0)
                    if not future.done():  # a caller that gave up is not looked up for
                        batch.append((ks, future))
                        keys.update(ks)
                if not batch:
                    continue
                self.fetches += 1
                self.calls += len(batch)
                try:
                    got = await self.fetch(sorted(keys, key=str))
                except Exception as e:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for ks, future in batch:
                    if not future.done():
                        future.set_result({k: got.get(k) for k in ks})
        finally:
            self._running = False
