"""Progress for long work: a tqdm bar on a terminal; on a log or CI (stderr not a TTY), a few summary lines.

A log used to get one carriage-returned bar update per second of work (thousands of lines in a CI log
or a pipeline step's log); here a non-terminal gets a line at each quarter and one at the end, with
the rate.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("fusionrec.progress")


class LogProgress:
    """The part of tqdm's interface the platform uses, writing at most five log lines."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        enabled: bool = True,
    ) -> None:
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.enabled = desc, unit, enabled
        self.n, self.start, self.next_quarter, self.postfix = 0, time.perf_counter(), 1, ""

    def __iter__(self) -> Iterator:
        for item in self.iterable if self.iterable is not None else ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        if (
            self.enabled
            and self.total
            and self.next_quarter < 4
            and self.total * self.next_quarter / 4 <= self.n < self.total
        ):
            self._line(f"{100 * self.n // self.total}%")
            self.next_quarter = int(4 * self.n / self.total) + 1

    def close(self) -> None:
        if self.enabled and self.start is not None:
            self._line("done")
        self.start = None

    def _line(self, what: str) -> None:
        if self.start is None:
            return
        seconds = time.perf_counter() - self.start
        rate = self.n / seconds if seconds > 0 else 0.0
        of = f"/{self.total:,}" if self.total else ""
        log.info(
            "%s: %s, %s%s %s in %.1f s (%.1f %s/s)%s",
            self.desc,
            what,
            f"{self.n:,}",
            of,
            self.unit,
            seconds,
            rate,
            self.unit,
            f" {self.postfix}" if self.postfix else "",
        )


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    **tqdm_options: Any,
):
    """A progress bar: tqdm when stderr is a terminal, :class:`LogProgress` lines otherwise."""
    if enabled and sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, mininterval=1.0, **tqdm_options)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, enabled=enabled)
