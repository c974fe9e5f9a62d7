"""Usage: python benchmarks/serving.py [--concurrency 32] [--seconds 20] [--k 20] [--protocol v2|v1]

Closed-loop load on loopback through the transformer and the predictor (two KServe model server
processes, real HTTP, Feast on SQLite behind the transformer), top-K over the whole catalogue for
random known users of movielens-100k-mm (trained and served by `make run`). Beside it, measured in the
same run: the floor, the same two model server processes with no-op models (two empty hops); and ours
with the inference log switched off, to show what logging every request costs.
Bar: our p99 at most 2 x the floor's at 32 concurrent requests, our throughput at least half the floor's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = "fusionrec"


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def closed_loop(
    url: str, bodies: list[dict], concurrency: int, seconds: float, warmup: float = 3.0, headers: dict | None = None
):
    """``concurrency`` clients, each sending its next request as soon as the last one is answered."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30, headers=headers) as client:
        start = time.perf_counter()
        measure_from, stop = start + warmup, start + warmup + seconds

        async def worker(n: int) -> None:
            nonlocal errors
            rng = random.Random(n)
            while True:
                t = time.perf_counter()
                if t >= stop:
                    return
                r = await client.post(url, json=rng.choice(bodies))
                done = time.perf_counter()
                if t >= measure_from:
                    if r.status_code == 200:
                        latencies.append(done - t)
                    else:
                        errors += 1

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    lat = np.array(latencies) * 1000
    return {
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "rps": len(lat) / seconds,
        "n": len(lat),
        "errors": errors,
    }


def _wait(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    from fusionrec.platform.local import wait_ready

    wait_ready(url, MODEL, proc, timeout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--protocol", default="v2", choices=["v1", "v2"], help="transformer -> predictor protocol")
    ap.add_argument("--data", type=Path, default=ROOT / "artifacts" / "movielens-100k-mm")
    args = ap.parse_args()

    from fusionrec.config import load_settings
    from fusionrec.platform import local

    if not (args.data / "models" / "champion.json").exists():
        raise SystemExit(f"{args.data}/models: no champion; run 'make run' first")
    import pandas as pd

    from fusionrec.registry import resolve_version

    users = pd.read_parquet(resolve_version(str(args.data / "models"), ROOT / "artifacts" / "cache") / "users.parquet")
    bodies = [{"instances": [{"user_id": u, "k": args.k}]} for u in users["user_id"].astype(str).tolist()]
    logs = ROOT / "artifacts" / "benchmarks" / "serving"
    results = {}

    # the floor: two no-op model servers, transformer -> predictor over HTTP
    pp, tp = _port(), _port()
    noop = ROOT / "benchmarks" / "noop_server.py"
    pred = local.start_process(
        [sys.executable, str(noop), "predictor", "--model_name", MODEL, "--http_port", str(pp)],
        logs / "noop_predictor.log",
    )
    trans = local.start_process(
        [
            sys.executable,
            str(noop),
            "transformer",
            "--model_name",
            MODEL,
            "--http_port",
            str(tp),
            "--predictor_host",
            f"127.0.0.1:{pp}",
            "--predictor_protocol",
            "v1",
        ],
        logs / "noop_transformer.log",
    )
    try:
        _wait(f"http://127.0.0.1:{pp}", pred)
        _wait(f"http://127.0.0.1:{tp}", trans)
        results["floor (no-op models)"] = asyncio.run(
            closed_loop(f"http://127.0.0.1:{tp}/v1/models/{MODEL}:predict", bodies, args.concurrency, args.seconds)
        )
    finally:
        for p in (trans, pred):
            p.terminate()
            p.wait(20)

    # ours, with the inference log on (the default: every answered request logged) and off
    for log in ("parquet", "none"):
        env = {
            "FUSIONREC__FEATURES__DATA_DIR": str(args.data / "features"),
            "FUSIONREC__MONITORING__INFERENCE_LOG": log,
            "FUSIONREC__MONITORING__FOLDER": str(logs / "monitoring"),
        }
        settings = load_settings(env={**os.environ, **env})
        servers = local.serve(
            settings,
            storage_uri=str(args.data / "models"),
            predictor_port=_port(),
            transformer_port=_port(),
            protocol=args.protocol,
            log_dir=logs,
            env=env,
        )
        try:
            url = f"{servers.transformer_url}/v1/models/{MODEL}:predict"
            name = f"fusionrec (transformer + predictor), inference log {'on' if log == 'parquet' else 'off'}"
            from fusionrec.api.access import client_headers

            results[name] = asyncio.run(
                closed_loop(url, bodies, args.concurrency, args.seconds, headers=client_headers(settings))
            )
        finally:
            servers.stop()

    print(
        f"\nclosed loop, {args.concurrency} concurrent clients, {args.seconds:.0f} s, top-{args.k} over "
        f"the whole catalogue, loopback, this machine ({os.cpu_count()} cores)"
    )
    print(f"{'':<62}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'errors':>8}")
    for name, r in results.items():
        print(f"{name:<62}{r['p50']:>9.1f}{r['p99']:>9.1f}{r['rps']:>9.0f}{r['errors']:>8}")
    ours = results["fusionrec (transformer + predictor), inference log on"]
    off, floor = results["fusionrec (transformer + predictor), inference log off"], results["floor (no-op models)"]
    print(
        f"the inference log's cost: p99 {ours['p99'] / off['p99']:.2f}x, throughput {ours['rps'] / off['rps']:.2f}x "
        "of the same servers with the log off"
    )
    p99_ratio, rps_ratio = ours["p99"] / floor["p99"], ours["rps"] / floor["rps"]
    print(
        f"p99 ours / floor: {p99_ratio:.2f} (bar <= 2: {'met' if p99_ratio <= 2 else 'NOT met'}); "
        f"throughput ours / floor: {rps_ratio:.2f} (bar >= 0.5: {'met' if rps_ratio >= 0.5 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
