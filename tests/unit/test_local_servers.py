"""Replacing the detached local servers: the old pair's ports are free before a new pair starts (a server
still shutting down used to answer the new pair's readiness check and then go away)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from fusionrec.platform.local import stop_from_pids

pytestmark = pytest.mark.unit

# listens, and on SIGTERM keeps the port for another second before it exits (a graceful shutdown)
SLOW = """
import signal, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 0)); s.listen()
signal.signal(signal.SIGTERM, lambda *a: (time.sleep(1.0), sys.exit(0)))
print(s.getsockname()[1], flush=True)  # after the handler: a SIGTERM sent on reading the port finds it there
while True:
    time.sleep(0.1)
"""


def test_stopping_waits_until_the_old_servers_ports_are_free(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SLOW], stdout=subprocess.PIPE, text=True, start_new_session=True)
    port = int(proc.stdout.readline())
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "servers.json").write_text(
        json.dumps({"predictor": proc.pid, "transformer": proc.pid, "predictor_url": url, "transformer_url": url})
    )
    start = time.monotonic()
    assert stop_from_pids(tmp_path / "servers.json") == [proc.pid, proc.pid]
    assert time.monotonic() - start >= 0.8  # it waited for the graceful shutdown
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5)
    assert not (tmp_path / "servers.json").exists()
    proc.wait(timeout=5)
