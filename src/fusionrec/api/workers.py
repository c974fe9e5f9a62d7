"""Worker processes: ``serving.workers`` copies of a model server on one port.

Python scores a request on one core (the scoring thread holds the GIL), so one model server process
uses one core for its model however many the pod has. With more than one worker
(:func:`count`: ``serving.workers``, by default one per core on the collocated server) the process that
was started (worker 0) starts ``workers - 1`` copies of its own command line once its model is loaded;
each copy loads its own model and listens on the same ports with ``SO_REUSEPORT``, and the kernel spreads
new connections over the processes that listen. A copy that has not loaded yet does not listen, so it
takes no connection. The copies end with worker 0: it stops them on its way out, and the kernel sends
them SIGTERM should it die without stopping them (``PR_SET_PDEATHSIG``).

Each worker keeps its own state: metrics (``/metrics`` answers for the worker a scrape reaches), the
micro-batcher, the rate limiter's buckets (so a caller's rate is per worker: the limit times the
workers, at most). The inference log's files are named per writer, so the workers' records do not meet.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys

log = logging.getLogger(__name__)

WORKER_ENV = "FUSIONREC_WORKER"  # set in the copies: their number (1, 2, ...)


AUTO_MAX = 4  # workers "auto" starts at most this many


def count(settings, collocated: bool) -> int:
    """The worker processes of one server: ``serving.workers``, or for 0 (auto) one per core this process
    may use (at most :data:`AUTO_MAX`) on the collocated server and one on each of two hops."""
    n = settings.serving.workers
    if n:
        return n
    if not collocated:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(AUTO_MAX, cores))


def is_copy() -> bool:
    """True in a copy started by :func:`start_copies` (which starts none of its own)."""
    return bool(os.environ.get(WORKER_ENV))


def _die_with_parent() -> None:  # runs in the child before it executes: SIGTERM when worker 0 dies
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_copies(workers: int) -> list[subprocess.Popen]:
    """Start ``workers - 1`` copies of this process's command line (none in a copy)."""
    if workers <= 1 or is_copy():
        return []
    procs = []
    for n in range(1, workers):
        env = {**os.environ, WORKER_ENV: str(n)}
        procs.append(subprocess.Popen(sys.orig_argv, env=env, preexec_fn=_die_with_parent))  # noqa: PLW1509
    log.info("started %d more worker processes: %s", len(procs), [p.pid for p in procs])
    return procs


def stop_processes(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """SIGTERM to each process still running, then wait for each; kill one that outlives ``timeout``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()


def shared_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` that the other workers can listen on too (``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock
