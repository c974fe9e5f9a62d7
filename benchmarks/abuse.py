"""Usage: python benchmarks/abuse.py [--users 200] [--items 120] [--seconds 10] [--work DIR]

The attacks of issue 22 against the running servers (the predictor and the transformer as two KServe model
server processes on loopback, real HTTP, a model trained here on a synthetic set) and the running
inference-log sink, each printed with what happened beside what should:

- the model repository: unload and load on both servers, then a predict;
- the seen-items oracle: for 20 users, ``candidates`` + ``exclude_seen`` over items they have and have not
  seen, asked with the service key and as another end user; a user counts as leaked when an answer tells
  the two apart;
- an end user asking for an id the model does not know (a 404 would confirm which ids exist);
- bodies of 10 MB, 100 MB and 1 GB on both servers (declared by Content-Length, and 100 MB chunked),
  with each server's peak RSS before and after;
- 64 decompression-bomb images (6000 x 6000 PNGs of a few KB) per request, sent back to back by 2 clients
  (processes of their own) while a normal client measures its p99, beside its p99 without the attack,
  in the same run;
- 1,000 malformed events to the sink between 100 good exchanges: records lost from the good traffic;
- two registrations at once, 20 each: versions lost or mixed.

Expected: 0 successes, 0 5xx, 0 good records lost, the normal client's p99 under attack within 2x of
its p99 without. To see an older build beside it, run this file with that build first on the path
(``git worktree add /tmp/old REV; cd /tmp/old; PYTHONPATH=/tmp/old/src:/tmp/old python
/path/to/benchmarks/abuse.py``): what it has no settings for is left out.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import record as bench_record

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = "fusionrec"
KEY = "abuse-benchmark-service-key-0123456789abcdef"
SHOPPER = "abuse-benchmark-shopper-key-0123456789abcde"
LOG_KEY = "abuse-benchmark-log-key-0123456789abcdefghijklmn"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _png(side: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, "PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def setup(work: Path, users: int, items: int):
    """A synthetic set, validated, embedded with the real encoders, a small model trained and made champion."""
    import pandas as pd

    from fusionrec.config import PathsSettings, Settings
    from fusionrec.data.dataset import Dataset
    from fusionrec.data.splits import make_split
    from fusionrec.data.synth import SynthConfig, generate
    from fusionrec.encoders.pipeline import encode_dataset
    from fusionrec.registry import gate, save_artifact
    from fusionrec.train.compare import fit, fusion_config, model_card
    from fusionrec.train.loop import TrainConfig
    from fusionrec.validation import validate_dataset

    generate(SynthConfig(users=users, items=items, seed=22, workers=1), work / "synth", progress=False)
    validate_dataset(work / "synth" / "dataset.yaml", work / "validated", Settings().validation, progress=False)
    ds = Dataset.load(work / "validated")
    settings = Settings(paths=PathsSettings(artifacts=str(work / "cache"), cache=str(work / "cache")))
    emb = encode_dataset(ds, settings, progress=False)
    split = make_split(ds, "random", seed=0)
    cfg = fusion_config(ds, emb, ["text", "image"], dim=16)
    result, test = fit(ds, emb, split, cfg, TrainConfig(epochs=2, batch_size=256, device="cpu"), progress=False)
    path = save_artifact(
        work / "models",
        result.model,
        dataset=ds,
        encoders={m: {"identity": emb[m].identity, "dim": emb[m].dim} for m in cfg.modalities},
        training={},
        history=result.user_history,
        history_mask=result.user_history_mask,
        metrics={"test": test},
        card=model_card(ds.name, split, cfg, result, test, {}),
        seen=pd.concat([split.train, split.valid, split.test]),
    )
    gate(work / "models", path)
    seen = pd.concat([split.train, split.valid, split.test])
    ids = ds.items.set_index("item_idx")["item_id"].astype(str)
    histories = {
        str(u): set(ids[g["item_idx"]])
        for u, g in seen.merge(ds.users[["user_idx", "user_id"]], on="user_idx").groupby("user_id")
    }
    return ds, histories, sorted(ids)


def _post(url: str, body, headers=None, timeout=30.0):
    import httpx

    return httpx.post(
        url,
        content=body if isinstance(body, (bytes, str)) else json.dumps(body),
        headers={"content-type": "application/json", **(headers or {})},
        timeout=timeout,
    )


def attack_repository(servers, auth) -> tuple[str, bool]:
    import httpx

    codes = []
    for url in (servers.predictor_url, servers.transformer_url):
        for verb in ("unload", "load"):
            codes.append(httpx.post(f"{url}/v2/repository/models/{MODEL}/{verb}", headers=auth, timeout=10).status_code)
    after = _post(f"{servers.transformer_url}/v1/models/{MODEL}:predict", {"instances": [{"k": 2}]}, auth).status_code
    ready = [
        httpx.get(f"{u}/v2/health/ready", timeout=5).status_code
        for u in (servers.predictor_url, servers.transformer_url)
    ]
    return f"unload/load: {codes}; predict after: {after}; ready: {ready}", codes == [404] * 4 and after == 200


def attack_oracle(servers, histories, catalogue, auth, shopper) -> tuple[str, bool]:
    rng = np.random.default_rng(0)
    url = f"{servers.transformer_url}/v1/models/{MODEL}:predict"
    stranger = _post(url, {"instances": [{"user_id": "no-such-user", "k": 3}]}, shopper)
    users = [u for u in sorted(histories) if u != "user-0000003"][:20]
    leaked, codes = 0, {}
    for user in users:
        seen = sorted(histories[user])[:5]
        unseen = [i for i in rng.permutation(catalogue) if i not in histories[user]][:5]
        told = False
        for headers in (auth, shopper):
            for exclude in (True, None):
                inst = {"user_id": user, "candidates": seen + unseen, "k": 10}
                if exclude is not None:
                    inst["exclude_seen"] = exclude
                r = _post(url, {"instances": [inst]}, headers)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    got = {i["item_id"] for i in r.json()["predictions"][0]["items"]}
                    told |= got != set(seen + unseen)  # the answer separates seen from unseen
        leaked += told
    hidden = stranger.status_code == 403  # the shopper may not name another id at all
    # 403: the pair refused, or another user's id; 429: the end user's rate limit (5/s, burst 20) ran out
    return (
        f"users whose seen items an answer told apart: {leaked}/20 (answers {dict(sorted(codes.items()))}); "
        f"another id as an end user: {stranger.status_code}"
    ), leaked == 0 and hidden and max(codes) < 500


def attack_bodies(servers, auth) -> tuple[list[tuple[str, str, bool]], bool]:
    import httpx

    rows, ok = [], True
    for name, proc, url in (
        ("predictor", servers.predictor, servers.predictor_url),
        ("transformer", servers.transformer, servers.transformer_url),
    ):
        for size, chunked in ((10 << 20, False), (100 << 20, False), (1 << 30, False), (100 << 20, True)):
            before = _peak_rss_mb(proc.pid)

            def body():
                sent = 0
                while sent < size:
                    n = min(1 << 20, size - sent)
                    sent += n
                    yield b"x" * n

            headers = {"content-type": "application/json", **auth}
            if not chunked:
                headers["content-length"] = str(size)
            try:
                status = httpx.post(
                    f"{url}/v1/models/{MODEL}:predict", content=body(), headers=headers, timeout=60
                ).status_code
            except httpx.HTTPError as e:  # the server answered 413 and closed while the client was still sending
                status = f"closed ({type(e).__name__})"
            after = _peak_rss_mb(proc.pid)
            good = status in (413, "closed (WriteError)", "closed (RemoteProtocolError)", "closed (ReadError)")
            ok &= good and after - before < 64
            label = f"{size >> 20} MB{' chunked' if chunked else ''}"
            rows.append((f"{name} {label}", f"{status}; peak RSS {before:.0f} -> {after:.0f} MB", good))
    return rows, ok


ATTACKERS = 2  # clients sending bombs back to back, each in its own process


def _bomber(url: str, body: bytes, auth: dict, stop, out) -> None:
    import httpx

    codes: dict = {}
    with httpx.Client(timeout=30, headers={"content-type": "application/json", **auth}) as c:
        while not stop.is_set():
            try:
                code = c.post(url, content=body).status_code
            except httpx.HTTPError as e:
                code = type(e).__name__
            codes[code] = codes.get(code, 0) + 1
    out.put(codes)


def attack_bombs(servers, auth, seconds: float, ds) -> tuple[str, bool]:
    url = f"{servers.transformer_url}/v1/models/{MODEL}:predict"
    users = ds.users["user_id"].astype(str).tolist()[:50]

    failed = [0]

    def normal(duration: float) -> list[float]:
        out, n, end = [], 0, time.monotonic() + duration
        while time.monotonic() < end:
            t = time.perf_counter()
            try:
                ok = _post(url, {"instances": [{"user_id": users[n % len(users)], "k": 10}]}, auth).status_code == 200
            except Exception:  # noqa: BLE001 - a timeout counts as a failure at the time it took
                ok = False
            out.append((time.perf_counter() - t) * 1000)
            failed[0] += not ok
            n += 1
        return out

    quiet = normal(seconds)
    bomb = json.dumps({"instances": [{"image": _png(6000), "k": 5}] * 64}).encode()
    # the attackers in processes of their own (their client work must not slow the normal client's process)
    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    attackers = [ctx.Process(target=_bomber, args=(url, bomb, auth, stop, out)) for _ in range(ATTACKERS)]
    for a in attackers:
        a.start()
    time.sleep(1.0)
    loud = normal(seconds)
    stop.set()
    codes: dict = {}
    for _ in attackers:
        for c, n in out.get(timeout=60).items():
            codes[c] = codes.get(c, 0) + n
    for a in attackers:
        a.join(30)
    p99q, p99l = np.percentile(quiet, 99), np.percentile(loud, 99)
    ok = p99l <= 2 * p99q and set(codes) <= {413, 429} and failed[0] == 0
    return (
        f"attack answers {codes}; normal client p99 {p99q:.1f} ms quiet, {p99l:.1f} ms under attack "
        f"({p99l / p99q:.2f}x; bar 2x), its failed requests {failed[0]}"
    ), ok


def attack_sink(work: Path) -> tuple[str, bool]:
    import httpx

    from fusionrec.monitoring.log import read_window
    from fusionrec.platform.local import wait_answering

    port = _port()
    env = {
        **os.environ,
        "FUSIONREC__MONITORING__FOLDER": str(work / "sink"),
        "FUSIONREC__MONITORING__LOG_KEY": LOG_KEY,
        "FUSIONREC__MONITORING__LOG_FLUSH_S": "0.2",
    }
    sink = subprocess.Popen(
        [sys.executable, "-m", "monitoring.sink", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_answering(f"{base}/healthz")
        ce = {"ce-specversion": "1.0", "ce-source": "http://predictor/", "content-type": "application/json"}
        malformed = [
            ({"ce-type": "something.else", "ce-id": "x"}, b"{}"),
            ({"ce-type": "org.kubeflow.serving.inference.request", "ce-id": "deep"}, b"[" * 50_000 + b"]" * 50_000),
            ({"ce-type": "org.kubeflow.serving.inference.request", "ce-id": "bad"}, b"{not json"),
            ({"ce-type": "org.kubeflow.serving.inference.request", "ce-id": "utf"}, b'{"instances": ["\xff"]}'),
            ({"ce-type": "org.kubeflow.serving.inference.response", "ce-id": "lonely"}, b'{"predictions": 5}'),
            (
                {"ce-type": "org.kubeflow.serving.inference.request", "ce-id": "t", "ce-time": "2026-01-01T00:00:00"},
                b'{"instances": [{"k": "x"}]}',
            ),
        ]
        codes, sent_bad = {}, 0
        with httpx.Client(base_url=base, timeout=30) as c:
            for n in range(100):
                req = {"instances": [{"user_id": f"u{n}", "k": 2}, {"history": ["a"], "k": 1}]}
                res = {
                    "predictions": [
                        {
                            "items": [{"item_id": "a", "score": 0.5}, {"item_id": "b", "score": 0.2}],
                            "fallback": False,
                            "cold": False,
                            "model_version": "v0001",
                        },
                        {
                            "items": [{"item_id": "c", "score": 0.1}],
                            "fallback": False,
                            "cold": True,
                            "model_version": "../../../etc/x" if n % 10 == 0 else "v0001",
                        },
                    ]
                }
                c.post(
                    "/events",
                    content=json.dumps(req),
                    headers={**ce, "ce-id": f"g{n}", "ce-type": "org.kubeflow.serving.inference.request"},
                )
                for m in range(10):
                    headers, body = malformed[(n + m) % len(malformed)]
                    r = c.post("/events", content=body, headers={**ce, **headers})
                    codes[r.status_code] = codes.get(r.status_code, 0) + 1
                    sent_bad += 1
                c.post(
                    "/events",
                    content=json.dumps(res),
                    headers={**ce, "ce-id": f"g{n}", "ce-type": "org.kubeflow.serving.inference.response"},
                )
            time.sleep(1.5)
            metrics = c.get("/metrics").text
        frame = read_window(work / "sink" / "logs").frame
        good = 100 * 2 - 10  # every tenth response carries one record with a path for a version: dropped alone
        lost = good - len(frame)
        dropped = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("fusionrec_sink_dropped_total{reason=\"record_invalid\"}")
        )
        ok = lost == 0 and max(codes) < 500 and dropped == 10
        return (
            f"{sent_bad} malformed events (answers {dict(sorted(codes.items()))}); good records written "
            f"{len(frame)}/{good} (lost {lost}); bad records dropped alone and counted: {dropped:.0f}/10"
        ), ok
    finally:
        sink.terminate()
        sink.wait(10)


def _register_many(args):
    from fusionrec.registry import register

    root, tag, n, start = args
    cands = []
    for i in range(n):
        c = Path(root) / "staging" / f"{tag}{i}"
        c.mkdir(parents=True)
        (c / "model.safetensors").write_bytes(f"{tag}{i}".encode() * 4096)
        (c / "metrics.json").write_text(json.dumps({"test": {"ndcg@20": 0.1}}))
        cands.append(c)
    while time.time() < start:
        pass
    return [register(root, c).name for c in cands]


def attack_registry(work: Path) -> tuple[str, bool]:
    root = work / "registry-race"
    start = time.time() + 2
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        a, b = pool.map(_register_many, [(str(root), "a", 20, start), (str(root), "b", 20, start)])
    intact = sum(
        (root / "versions" / v / "model.safetensors").read_bytes() == f"{t}{i}".encode() * 4096
        for t, vs in (("a", a), ("b", b))
        for i, v in enumerate(vs)
    )
    distinct = len(set(a) | set(b))
    return f"two processes x 20 registrations: {distinct} distinct versions, {intact} intact", distinct == intact == 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--seconds", type=float, default=10.0, help="Per p99 measurement (quiet, under attack).")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    from fusionrec.config import load_settings
    from fusionrec.platform import local

    work = args.work or Path(tempfile.mkdtemp(prefix="fusionrec-abuse-"))
    t0 = time.perf_counter()
    ds, histories, catalogue = setup(work, args.users, args.items)
    print(
        f"setup: {args.users} users, {args.items} items, a model trained and served ({time.perf_counter() - t0:.0f} s)"
    )
    (work / "api.key").write_text(KEY)
    shopper_sha = hashlib.sha256(SHOPPER.encode()).hexdigest()
    env = {
        "FUSIONREC__SERVING__STORAGE_URI": str(work / "models"),
        "FUSIONREC__PATHS__CACHE": str(work / "cache"),
        "FUSIONREC__PATHS__ARTIFACTS": str(work / "artifacts"),
        "FUSIONREC__ENCODERS__DEVICE": "cpu",
        "FUSIONREC__MONITORING__FOLDER": str(work / "monitoring"),
        "FUSIONREC__MONITORING__LOG_KEY": LOG_KEY,
        "FUSIONREC__SERVING__PREDICTOR_PORT": str(_port()),
        "FUSIONREC__SERVING__PREDICTOR_GRPC_PORT": str(_port()),
        "FUSIONREC__SERVING__TRANSFORMER_PORT": str(_port()),
        "FUSIONREC__SERVING__AUTH__KEY_FILE": str(work / "api.key"),
        "FUSIONREC__SERVING__AUTH__CALLERS": (
            f"[{{name: shopper, key_sha256: {shopper_sha}, role: user, user_id: user-0000003}}]"
        ),
    }
    from fusionrec.config import ServingSettings

    if "auth" not in ServingSettings.model_fields:  # a build from before callers existed (a comparison run)
        env = {k: v for k, v in env.items() if "__AUTH__" not in k}
    settings = load_settings(env=env)
    servers = local.serve(settings, feast=False, log_dir=work / "logs", env=env, layout="two_hops")
    auth, shopper = {"authorization": f"Bearer {KEY}"}, {"x-api-key": SHOPPER}
    results = []
    width = 36

    def record(name: str, attack, expected: str) -> None:
        """Run one attack; an attack that breaks the thing it attacks (an older build) is a failure with its
        error, not the end of the run. Each row is printed as it is done."""
        try:
            happened, ok = attack()
        except Exception as e:  # noqa: BLE001 - e.g. a server that stopped answering
            happened, ok = f"the attack broke it: {type(e).__name__}: {str(e)[:120]}", False
        results.append((name, happened, ok, expected))
        print(f"{name:<{width}}  {'yes' if ok else 'NO ':<3}  {happened}  [{expected}]", flush=True)

    print(f"\n{'attack':<{width}}  ok   what happened  [expected]")
    try:
        record("model repository routes", lambda: attack_repository(servers, auth), "404 on both; serving goes on")
        if not results[-1][2]:  # the attack took serving down (an older build): start it again for the rest
            servers.stop()
            servers = local.serve(settings, feast=False, log_dir=work / "logs", env=env, layout="two_hops")
        record(
            "seen-items oracle, 20 users",
            lambda: attack_oracle(servers, histories, catalogue, auth, shopper),
            "0 users told apart; another id: 403",
        )
        rows, _ = attack_bodies(servers, auth)
        for what, happened, ok in rows:
            record(f"body {what}", lambda h=happened, o=ok: (h, o), "413 before the body is read; RSS +<64 MB")
        record(
            "64 decompression bombs per request",
            lambda: attack_bombs(servers, auth, args.seconds, ds),
            "413/429 only; p99 within 2x",
        )
    finally:
        servers.stop()
    record("1,000 malformed sink events", lambda: attack_sink(work), "0 good records lost; no 5xx")
    record("concurrent registrations", lambda: attack_registry(work), "40 distinct, 40 intact")
    failed = [r[0] for r in results if not r[2]]
    held = len(results) - len(failed)
    print(f"\n{held}/{len(results)} attacks held" + (f"; failed: {failed}" if failed else ""))
    bench_record.write(
        "abuse",
        "python benchmarks/abuse.py",
        [
            bench_record.Figure(
                "attacks",
                f"hostile callers against the running servers and sink: {held} of {len(results)} attacks held"
                + (f"; failed: {', '.join(failed)}" if failed else ""),
                beside="; ".join(f"{name}: {happened}" for name, happened, _, _ in results),
                readme=f"hostile callers against the running servers and sink: {held} of {len(results)} attacks held",
                value=held,
                bar="every attack held",
                met=not failed,
            )
        ],
        attacks=[{"attack": n, "happened": h, "held": ok, "expected": e} for n, h, ok, e in results],
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
