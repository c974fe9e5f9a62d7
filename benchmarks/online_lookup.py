"""Usage: python benchmarks/online_lookup.py [--users 5000] [--items 2000] [--requests 300]

Online feature lookups through Feast (the ``serving`` service: user history + profile, and one item
embedding view) for 1 and 100 entities per call: p50 and p99 latency on the SQLite online store and on
a real redis-server started here on a free port, measured in the same run. The floor beside them: the
same number of the hashes Feast keeps its rows in, read whole with redis-py in one round trip (HGETALL
in a pipeline: what any Redis-backed lookup of those rows must pay).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import record


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000, q))


def timed(fn, n: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _figure(figures: dict, n: int):
    def p(key, q):
        return percentile_ms(figures[key], q)

    users = f"{n} user{'s' if n > 1 else ''}"
    text = (
        f"online lookup, {users} (history + profile): SQLite p50 {p(('sqlite', 'users', n), 50):.2f} ms, p99 "
        f"{p(('sqlite', 'users', n), 99):.2f} ms; Redis p50 {p(('redis', 'users', n), 50):.2f} ms, p99 "
        f"{p(('redis', 'users', n), 99):.2f} ms"
    )
    beside = f"floor, HGETALL of as many of Feast's hashes: p50 {p(('floor', 'hashes', n), 50):.2f} ms"
    readme = (
        None
        if n > 1
        else (
            f"online lookup of one user: SQLite p50 {p(('sqlite', 'users', 1), 50):.2f} ms, "
            f"Redis p50 {p(('redis', 'users', 1), 50):.2f} ms (floor "
            f"{p(('floor', 'hashes', 1), 50):.2f} ms)"
        )
    )
    return record.Figure(f"users_{n}", text, beside, readme, p(("redis", "users", n), 50))


def _items_figure(figures: dict):
    def p50(kind, n):
        return percentile_ms(figures[(kind, "items", n)], 50)

    parts = [
        f"{n} item{'s' if n > 1 else ''}: SQLite {p50('sqlite', n):.2f} ms, Redis {p50('redis', n):.2f} ms p50"
        for n in (1, 100)
    ]
    return record.Figure("items", "online lookup, item embeddings (384-d): " + "; ".join(parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()

    import redis

    from fusionrec.config import FeatureSettings, Settings, ValidationSettings
    from fusionrec.data.dataset import Dataset
    from fusionrec.data.synth import SynthConfig, generate
    from fusionrec.encoders.pipeline import ModalityEmbeddings
    from fusionrec.features import store as fs
    from fusionrec.features.tables import build_feature_tables
    from fusionrec.validation import validate_dataset

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
            stdout=subprocess.DEVNULL,
        )
        try:
            r = generate(
                SynthConfig(users=args.users, items=args.items, interactions=20 * args.users, seed=0),
                tmp / "synth",
                progress=False,
            )
            validate_dataset(
                r.contract_path, tmp / "valid", Settings(validation=ValidationSettings()).validation, progress=False
            )
            ds = Dataset.load(tmp / "valid")
            rng = np.random.default_rng(0)
            # a 384-d item embedding (the size of the text one) stands in for the encoders' output
            emb = {
                "text": ModalityEmbeddings(
                    "text",
                    rng.normal(size=(ds.n_items, 384)).astype(np.float32),
                    np.ones(ds.n_items, dtype=bool),
                    [None] * ds.n_items,
                    "bench",
                )
            }
            stores = {}
            for kind in ("sqlite", "redis"):
                data = tmp / f"features-{kind}"
                data.mkdir()
                build_feature_tables(ds, emb, data, 20)
                cfg = FeatureSettings(online_store=kind, redis_connection=f"127.0.0.1:{port}")
                store = fs.feature_store(cfg, data)
                fs.apply(store, data)
                fs.materialize(store)
                stores[kind] = store
            users = ds.users["user_id"].astype(str).to_numpy()
            items = ds.items["item_id"].astype(str).to_numpy()
            client = redis.Redis(host="127.0.0.1", port=port)
            keys = [k for k in client.scan_iter(count=10_000) if client.type(k) == b"hash"]
            assert keys, "Feast wrote no hashes to Redis"

            def floor(chosen: list[bytes]) -> list[dict]:
                pipe = client.pipeline(transaction=False)
                for k in chosen:
                    pipe.hgetall(k)
                rows = pipe.execute()
                assert all(rows), "the floor read an empty hash"
                return rows

            figures = {}

            print(
                f"{ds.n_users:,} users, {ds.n_items:,} items, history 20, 384-d item vectors; "
                f"{args.requests} calls each; milliseconds"
            )
            print(f"{'lookup':<34}{'entities':>9}{'p50':>9}{'p99':>9}")
            for n in (1, 100):
                for kind, store in stores.items():
                    batches = [rng.choice(users, n, replace=False) for _ in range(args.requests + 1)]
                    it = iter(batches)
                    t = timed(lambda: fs.online_user_features(store, next(it)), args.requests)
                    figures[(kind, "users", n)] = t
                    print(
                        f"{'Feast ' + kind + ' users (serving)':<34}{n:>9}"
                        f"{percentile_ms(t, 50):>9.2f}{percentile_ms(t, 99):>9.2f}"
                    )
                    ibatches = iter([rng.choice(items, n, replace=False) for _ in range(args.requests + 1)])
                    t = timed(lambda: fs.online_item_embeddings(store, next(ibatches), "text"), args.requests)
                    figures[(kind, "items", n)] = t
                    print(
                        f"{'Feast ' + kind + ' item embeddings':<34}{n:>9}"
                        f"{percentile_ms(t, 50):>9.2f}{percentile_ms(t, 99):>9.2f}"
                    )
                sample = iter([list(rng.choice(len(keys), n, replace=True)) for _ in range(args.requests + 1)])
                t = timed(lambda: floor([keys[i] for i in next(sample)]), args.requests)
                figures[("floor", "hashes", n)] = t
                print(
                    f"{'floor: redis-py HGETALL (no Feast)':<34}{n:>9}"
                    f"{percentile_ms(t, 50):>9.2f}{percentile_ms(t, 99):>9.2f}"
                )
            record.write(
                "online_lookup",
                "python benchmarks/online_lookup.py",
                [_figure(figures, n) for n in (1, 100)] + [_items_figure(figures)],
                users=ds.n_users,
                items=ds.n_items,
                requests=args.requests,
            )
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
