"""The micro-batcher: requests that arrive together are scored as one batch, each gets its own results,
one request's bad input stays its own error, a full queue is a 429 and a stale request a 503."""

import asyncio
import threading
import time

import pytest

from fusionrec.api.batching import MicroBatcher
from fusionrec.errors import BadRequest, TooManyRequests, Unavailable


class Scorer:
    """Doubles each row; a row of -1 is bad input (the whole call fails, as the recommender's does)."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.calls: list[list[int]] = []
        self.delay, self.gate = delay, gate

    def __call__(self, rows: list[int]) -> list[int]:
        if self.gate is not None:
            self.gate.wait(5)
        self.calls.append(list(rows))
        time.sleep(self.delay)
        if -1 in rows:
            raise BadRequest(f"row {rows.index(-1)}: bad")
        return [2 * r for r in rows]


def _run(coro, timeout: float = 10.0):
    """Run ``coro``; a request that is never answered fails the test instead of hanging it."""

    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def test_concurrent_requests_are_scored_in_one_batch_and_each_gets_its_own_rows():
    scorer = Scorer()
    batcher = MicroBatcher(scorer, max_wait_s=0.05, max_rows=100)

    async def main():
        return await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(10)))

    out = _run(main())
    batcher.close()
    assert out == [[2 * i, 2 * (i + 100)] for i in range(10)]
    assert len(scorer.calls) < 10  # not one call per request
    assert sum(len(c) for c in scorer.calls) == 20
    assert batcher.requests == 10 and batcher.batches == len(scorer.calls)


def test_a_batch_never_exceeds_max_rows_and_nothing_waits_without_company():
    scorer = Scorer()
    batcher = MicroBatcher(scorer, max_wait_s=0.05, max_rows=4)

    async def main():
        return await asyncio.gather(*(batcher.submit([i, i]) for i in range(6)))

    assert _run(main()) == [[2 * i, 2 * i] for i in range(6)]
    assert max(len(c) for c in scorer.calls) <= 4
    start = time.perf_counter()
    assert _run(batcher.submit([7])) == [14]
    # a lone request waits at most max_wait_s for company
    assert time.perf_counter() - start < 0.5
    batcher.close()


def test_one_requests_bad_input_is_its_own_error_with_its_own_row_numbers():
    gate = threading.Event()
    scorer = Scorer(gate=gate)
    batcher = MicroBatcher(scorer, max_wait_s=0.2, max_rows=100)

    async def main():
        tasks = [asyncio.ensure_future(batcher.submit(rows)) for rows in ([1, 2], [3, -1], [5])]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    good, bad, other = _run(main())
    batcher.close()
    assert good == [2, 4] and other == [10]
    assert isinstance(bad, BadRequest) and str(bad) == "row 1: bad"  # its own row, not the batch's row 3


def test_a_full_queue_is_a_429_and_a_request_that_waited_too_long_a_503():
    gate = threading.Event()
    batcher = MicroBatcher(Scorer(gate=gate), max_wait_s=0.0, max_rows=1, max_queue=2, queue_timeout_s=0.1)

    async def main():
        first = asyncio.ensure_future(batcher.submit([1]))  # taken by the thread, held at the gate
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(batcher.submit([i])) for i in (2, 3)]
        await asyncio.sleep(0.01)
        with pytest.raises(TooManyRequests):
            await batcher.submit([4])
        await asyncio.sleep(0.2)  # the queued two are now older than the queue timeout
        gate.set()
        return await asyncio.gather(first, *queued, return_exceptions=True)

    first, *late = _run(main())
    batcher.close()
    assert first == [2]
    assert all(isinstance(e, Unavailable) and "waited too long" in str(e) for e in late)


def test_lookups_that_come_while_one_is_in_flight_go_together_in_the_next():
    from fusionrec.api.batching import Coalescer

    asked: list[list[str]] = []

    async def fetch(keys):
        asked.append(list(keys))
        await asyncio.sleep(0.05)
        return {k: k.upper() for k in keys if k != "absent"}

    async def main():
        lookups = Coalescer(fetch)
        first = asyncio.ensure_future(lookups.get(["a"]))
        await asyncio.sleep(0.01)  # the first fetch is in flight: these three wait for the next one
        rest = await asyncio.gather(lookups.get(["b", "c"]), lookups.get(["c"]), lookups.get(["absent"]))
        return await first, rest, lookups

    first, rest, lookups = _run(main())
    assert first == {"a": "A"} and rest == [{"b": "B", "c": "C"}, {"c": "C"}, {"absent": None}]
    assert asked == [["a"], ["absent", "b", "c"]]  # two fetches for four calls, each key once
    assert lookups.fetches == 2 and lookups.calls == 4


def test_a_failed_lookup_fails_its_callers_and_a_caller_that_gives_up_leaves_it_to_the_others():
    from fusionrec.api.batching import Coalescer

    async def fetch(keys):
        await asyncio.sleep(0.1)
        if "bad" in keys:
            raise ConnectionError("store down")
        return {k: 1 for k in keys}

    async def main():
        lookups = Coalescer(fetch)
        patient = asyncio.ensure_future(lookups.get(["x"]))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(lookups.get(["x"]), 0.01)  # gives up; the fetch goes on
        assert await patient == {"x": 1}
        with pytest.raises(ConnectionError):
            await lookups.get(["bad"])
        return await lookups.get(["y"])  # and the next lookup is made afresh

    assert _run(main()) == {"y": 1}
