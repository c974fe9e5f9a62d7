"""Serving that survives a slow or missing dependency: a timeout on each call and a circuit breaker.

The transformer asks the feature store for users' latest histories. When the store is down or slow, a
request must not wait for it nor fail: the call is abandoned after a short timeout and the request is
served from the model's own histories. After ``failures`` failures in a row the breaker opens and the
store is not asked at all for ``reset_s`` seconds; then one request tries it again (half-open), and a
success closes the breaker, so a store that comes back is used again without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fusionrec.errors import Unavailable

T = TypeVar("T")


class CircuitOpen(Unavailable):
    """The breaker is open: the dependency is not being asked."""


class CircuitBreaker:
    """Closed -> (``failures`` failures in a row) -> open for ``reset_s`` -> half-open (one trial) -> closed."""

    def __init__(self, failures: int = 3, reset_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures, self.reset_s, self.clock = failures, reset_s, clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self._trial = False  # a half-open trial is in flight

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.reset_s else "open"

    def allow(self) -> bool:
        """Whether a call may go out now (in half-open, only one at a time)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        self.consecutive, self.opened_at, self._trial = 0, None, False

    def failure(self) -> None:
        self.consecutive += 1
        self._trial = False
        if self.opened_at is not None or self.consecutive >= self.failures:
            self.opened_at = self.clock()  # (re)open: a failed trial waits another reset_s

    async def call(self, fn: Callable[[], Awaitable[T]], timeout_s: float) -> T:
        """``await fn()`` within ``timeout_s``, counted by the breaker.

        Raises:
            CircuitOpen: the breaker is open (nothing was called).
            TimeoutError: the call took longer than ``timeout_s`` (it is cancelled).
            Exception: whatever the call raised.
        """
        if not self.allow():
            raise CircuitOpen(
                f"circuit open for another {max(0.0, self.reset_s - (self.clock() - self.opened_at)):.1f} s"
            )
        try:
            out = await asyncio.wait_for(fn(), timeout_s)
        except asyncio.CancelledError:  # the request went away: no verdict on the dependency
            self._trial = False
            raise
        except Exception:
            self.failure()
            raise
        self.success()
        return out
