"""Usage: python benchmarks/online_lookup.py [--users 5000] [--items 2000] [--requests 300]

Online feature lookups through Feast (the ``serving`` service: user history + profile, and one item
embedding view) for 1 and 100 entities per call: p50 and p99 latency on the SQLite online store and on
a real redis-server started here on a free port, measured in the same run. The floor beside them: a
bare Redis MGET of the same number of keys with redis-py (what any Redis-backed lookup must pay).
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
            keys = [k for k in client.scan_iter(count=10_000)][: max(100, 1)]

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
                    print(
                        f"{'Feast ' + kind + ' users (serving)':<34}{n:>9}"
                        f"{percentile_ms(t, 50):>9.2f}{percentile_ms(t, 99):>9.2f}"
                    )
                    ibatches = iter([rng.choice(items, n, replace=False) for _ in range(args.requests + 1)])
                    t = timed(lambda: fs.online_item_embeddings(store, next(ibatches), "text"), args.requests)
                    print(
                        f"{'Feast ' + kind + ' item embeddings':<34}{n:>9}"
                        f"{percentile_ms(t, 50):>9.2f}{percentile_ms(t, 99):>9.2f}"
                    )
                sample = iter([list(rng.choice(len(keys), n, replace=True)) for _ in range(args.requests + 1)])
                t = timed(lambda: client.mget([keys[i] for i in next(sample)]), args.requests)
                print(
                    f"{'floor: redis-py MGET (no Feast)':<34}{n:>9}"
                    f"{percentile_ms(t, 50):>9.2f}{percentile_ms(t, 99):>9.2f}"
                )
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
