"""Usage: python benchmarks/encoders.py [--texts 1024] [--images 192] [--repeats 2]

Encoder throughput (items/s) on this machine, through the whole embedding pipeline (PII filter,
tokenising or decoding, batching, cache lookups and writes), beside the bare forward pass of the same
model on the same batches, measured in the same run; then the time of a fully cached re-run.
Inputs: MovieLens overviews and posters when ../shared/data is present, else a synthetic dataset.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import record

ML = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "movielens-100k-mm"


def inputs(n_texts: int, n_images: int, tmp: Path) -> tuple[list[str], list[str], str]:
    if (ML / "items.csv").exists():
        items = pd.read_csv(ML / "items.csv").drop_duplicates("movie_id")
        texts = (items["title"] + ". " + items["overview"].fillna("")).tolist()
        posters = [str(p) for p in sorted((ML / "posters").glob("*.jpg"))]
        source = "movielens-100k-mm"
    else:
        from fusionrec.data.synth import SynthConfig, generate

        r = generate(
            SynthConfig(users=10, items=max(n_texts, n_images), image_size=128, seed=0), tmp / "s", progress=False
        )
        items = pd.read_csv(r.folder / "items.csv")
        texts = (items["title"] + ". " + items["description"]).tolist()
        posters = [str(r.folder / p) for p in items["image"]]
        source = "synthetic (128 px)"
    reps = -(-n_texts // len(texts))
    return (texts * reps)[:n_texts], (posters * (-(-n_images // len(posters))))[:n_images], source


def bare_text(enc, texts: list[str]) -> float:
    import torch

    prepared, _ = enc.prepare(texts)
    batches = [tok for _, tok in enc.batches(prepared)]  # the very batches the pipeline makes
    t = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            enc.forward(b)
    return time.perf_counter() - t


def bare_image(enc, paths: list[str]) -> float:
    import torch

    from fusionrec.encoders.image import preprocess

    arrays = np.stack([preprocess(Path(p).read_bytes(), enc.size, enc.mean, enc.std) for p in paths])
    batches = [torch.from_numpy(arrays[s : s + enc.batch_size]) for s in range(0, len(arrays), enc.batch_size)]
    t = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            enc.forward(b)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=1024)
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import torch

    from fusionrec.encoders.cache import EmbeddingCache
    from fusionrec.encoders.image import ImageEncoder
    from fusionrec.encoders.pipeline import run_encoder
    from fusionrec.encoders.text import TextEncoder
    from fusionrec.privacy import PiiFilter

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        texts, images, source = inputs(args.texts, args.images, tmp)
        text_enc = TextEncoder(pii=PiiFilter(), device="auto")
        image_enc = ImageEncoder(device="auto")
        # warm up both models (first calls allocate)
        text_enc.encode(texts[:8])
        image_enc.encode(images[:4])
        print(f"inputs: {source}; device {text_enc.device}; torch threads {torch.get_num_threads()}")
        print(
            f"{'modality':<8}{'items':>7}{'pipeline items/s':>18}{'bare forward items/s':>22}{'overhead':>10}"
            f"{'cached re-run s':>17}{'cached items/s':>16}"
        )
        figures = []
        for name, enc, data, bare in (("text", text_enc, texts, bare_text), ("image", image_enc, images, bare_image)):
            # Alternate bare and pipeline runs and keep each one's best, so that warm-up and noise from
            # the rest of the machine fall on neither side. Each pipeline run starts with an empty cache.
            pipe_s, bare_s = [], []
            for rep in range(args.repeats):
                bare_s.append(bare(enc, data))
                cache = EmbeddingCache(tmp / f"{name}-{rep}.sqlite")
                t = time.perf_counter()
                _, stats = run_encoder(enc, data, cache, progress=False)
                pipe_s.append(time.perf_counter() - t)
                assert stats["computed"] == len(data), stats
            t = time.perf_counter()
            _, again = run_encoder(enc, data, cache, progress=False)
            cached_s = time.perf_counter() - t
            assert again["computed"] == 0, again
            cache.close()
            n, p, b = len(data), min(pipe_s), min(bare_s)
            print(
                f"{name:<8}{n:>7}{n / p:>18.1f}{n / b:>22.1f}{p / b - 1:>10.1%}{cached_s:>17.2f}{n / cached_s:>16.0f}"
            )
            figures.append(
                record.Figure(
                    name,
                    f"{name} encoder, {n:,} {source} inputs, {enc.device}: {n / p:.1f} items/s through the pipeline; "
                    f"a fully cached re-run {cached_s:.2f} s",
                    f"bare forward on the same batches: {n / b:.1f} items/s (pipeline overhead {p / b - 1:+.0%})",
                    f"{name} encoder on the {enc.device}: {n / p:.1f} items/s through the pipeline, {n / b:.1f} bare"
                    if name == "text"
                    else None,
                    n / p,
                    "overhead <= 10%",
                    p / b - 1 <= 0.10,
                )
            )
        print("target: pipeline overhead at most 10% over the bare forward pass")
        record.write("encoders", "python benchmarks/encoders.py --repeats 3", figures, repeats=args.repeats)


if __name__ == "__main__":
    main()
