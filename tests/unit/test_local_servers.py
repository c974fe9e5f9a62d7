"""The detached local servers: the old ones' ports are free before new ones start (a server still shutting
down used to answer the new readiness check and then go away); a bad option never stops them."""

from __future__ import annotations

import json
import os
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


def test_a_collocated_record_stops_its_one_server(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SLOW], stdout=subprocess.PIPE, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{int(proc.stdout.readline())}"
    (tmp_path / "servers.json").write_text(
        json.dumps({"predictor": None, "transformer": proc.pid, "predictor_url": None, "transformer_url": url})
    )
    assert stop_from_pids(tmp_path / "servers.json") == [proc.pid]
    proc.wait(timeout=5)


def test_serve_with_an_unknown_layout_is_refused_before_the_running_server_is_stopped(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SLOW], stdout=subprocess.PIPE, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{int(proc.stdout.readline())}"
    (tmp_path / "serving").mkdir()
    record = {"predictor": None, "transformer": proc.pid, "predictor_url": None, "transformer_url": url}
    (tmp_path / "serving" / "servers.json").write_text(json.dumps(record))
    try:
        r = subprocess.run(
            [sys.executable, "-m", "fusionrec.cli", "serve", "--layout", "three_hops", "--detach"],
            env={**os.environ, "FUSIONREC__PATHS__ARTIFACTS": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 2 and "--layout 'three_hops' is unknown" in r.stderr, r.stderr
        assert proc.poll() is None and (tmp_path / "serving" / "servers.json").exists()  # still serving
    finally:
        proc.kill()
        proc.wait(timeout=5)
