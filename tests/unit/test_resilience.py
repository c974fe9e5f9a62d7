"""The circuit breaker in front of the online feature store: closed, open, half-open, closed again."""

import asyncio

import pytest

from fusionrec.api.resilience import CircuitBreaker, CircuitOpen

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_failures_in_a_row_and_closes_after_a_successful_trial():
    clock, calls = Clock(), []
    breaker = CircuitBreaker(failures=2, reset_s=10, clock=clock)

    async def fail():
        calls.append("fail")
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379")

    async def ok():
        calls.append("ok")
        return 7

    async def scenario():
        with pytest.raises(ConnectionError):
            await breaker.call(fail, 1)
        assert breaker.state == "closed"  # one failure is not a pattern
        assert await breaker.call(ok, 1) == 7 and breaker.consecutive == 0  # a success resets the count
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await breaker.call(fail, 1)
        assert breaker.state == "open"
        with pytest.raises(CircuitOpen):
            await breaker.call(ok, 1)  # not called at all
        clock.now += 10
        assert breaker.state == "half-open"
        with pytest.raises(ConnectionError):
            await breaker.call(fail, 1)  # the trial fails: open for another reset_s
        assert breaker.state == "open"
        clock.now += 10
        assert await breaker.call(ok, 1) == 7 and breaker.state == "closed"

    asyncio.run(scenario())
    assert calls == ["fail", "ok", "fail", "fail", "fail", "ok"]


def test_a_slow_call_times_out_and_counts_as_a_failure():
    breaker = CircuitBreaker(failures=1, reset_s=60)

    async def slow():
        await asyncio.sleep(5)

    async def scenario():
        with pytest.raises(TimeoutError):
            await breaker.call(slow, 0.05)

    asyncio.run(scenario())
    assert breaker.state == "open"


def test_the_start_up_lookup_gives_up_on_a_store_that_never_answers(monkeypatch):
    """A blackholed Redis used to hang the transformer's start (no timeout): new pods crash-looped."""
    import threading
    import time

    from fusionrec.features import store as fs
    from serving.transformer import warm_up

    release = threading.Event()
    monkeypatch.setattr(fs, "online_user_features", lambda store, ids: release.wait(30))
    t = time.monotonic()
    try:
        assert warm_up(object(), timeout_s=0.5) is False
        assert time.monotonic() - t < 3
    finally:
        release.set()
