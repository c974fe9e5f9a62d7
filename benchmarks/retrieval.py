"""Usage: python benchmarks/retrieval.py [--items 300] [--seed 0] [--storage-uri artifacts/movielens-100k-mm/models]

Self-retrieval through the running servers (the transformer and the predictor as two KServe model server
processes on loopback, real HTTP), on movielens-100k-mm with the model from `make run`. For each of a
few hundred items with a poster and a plot overview:

- a photo query: the item's own poster altered as a phone photo would be (a crop of 80-95 % of each
  side, a rotation of up to 5 degrees, brightness x0.75-1.25, resized to 70-130 %, re-compressed as
  JPEG at quality 55-85);
- a text query: one sentence of its overview (not its title): the longest of its first three sentences.

Printed beside ours, on the same queries in the same run: the plain alternative, a cosine
nearest-neighbour search with numpy over the same encoder's embeddings of the catalogue (the queries
encoded here with the same encoders), and the old path (the fusion model's item tower, which is what
query by example used before: each query's content-only item vector against the catalogue's item
vectors). Also: the latency of one photo query through the transformer (p50/p99, sequential), the top-10
hit rate of a photo query re-ranked for a random known user at the default blend, and the time and size
of the shipped FAISS indexes.

Bars (issue 11): top-10 at least 0.99 for photos and 0.95 for text sentences, and no worse than the plain
search by more than 0.01.
"""

from __future__ import annotations

import argparse
import io
import math
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import record

from fusionrec.data.synth import PATTERN_WORDS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "movielens-100k-mm"
MODEL = "fusionrec"
# the genres a query names, as a user would write them
GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "FilmNoir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "SciFi",
    "Thriller",
    "War",
    "Western",
)
GENRE_WORDS = {"Children": "children's", "FilmNoir": "film noir", "SciFi": "science fiction", "Animation": "animated"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def phone_photo(path: str, rng: np.random.Generator) -> bytes:
    """The poster as a phone would capture it: cropped, tilted, brighter or darker, resized, re-compressed."""
    from PIL import Image, ImageEnhance

    img = Image.open(path).convert("RGB")
    w, h = img.size
    cw, ch = int(w * rng.uniform(0.80, 0.95)), int(h * rng.uniform(0.80, 0.95))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img.crop((x, y, x + cw, y + ch)).rotate(
        float(rng.uniform(-5, 5)), resample=Image.BICUBIC, expand=False, fillcolor=(255, 255, 255)
    )
    img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.75, 1.25)))
    scale = float(rng.uniform(0.7, 1.3))
    img = img.resize((max(16, int(img.width * scale)), max(16, int(img.height * scale))), Image.BILINEAR)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=int(rng.integers(55, 86)))
    return out.getvalue()


def sentences(overview) -> list[str]:
    """The overview's sentences of at least six words."""
    if not isinstance(overview, str):
        return []
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", overview) if len(s.split()) >= 6]


def a_sentence(overview: str) -> str | None:
    """The longest of the overview's first three sentences (at least six words), or None."""
    first = sentences(overview)[:3]
    return max(first, key=len) if first else None


def hit_rates(ranked: list[list[str]], truth: list[str]) -> tuple[float, float]:
    top1 = np.mean([r[:1] == [t] for r, t in zip(ranked, truth)])
    top10 = np.mean([t in r[:10] for r, t in zip(ranked, truth)])
    return float(top1), float(top10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--blends",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[0.05, 0.1, 0.2, 0.3, 0.5],
        help="Blends to try for a photo query re-ranked for a user.",
    )
    parser.add_argument("--storage-uri", default=str(ROOT / "artifacts" / "movielens-100k-mm" / "models"))
    parser.add_argument(
        "--catalogue",
        choices=("movielens", "shop"),
        default="movielens",
        help="movielens-100k-mm's posters (the make run model), or the synthetic long-tail shop (built here).",
    )
    args = parser.parse_args()
    if args.catalogue == "shop":
        return shop(args)
    if not DATA.exists():
        print(f"skipped: {DATA} is absent (movielens-100k-mm is read in place, never copied)")
        return 0
    import base64

    import httpx
    import torch

    from fusionrec.artifact import identities, load_artifact
    from fusionrec.config import load_settings
    from fusionrec.encoders.pipeline import build_encoders
    from fusionrec.platform import local
    from fusionrec.registry import resolve_version
    from fusionrec.search import ItemSearch

    env = {
        "FUSIONREC__SERVING__STORAGE_URI": args.storage_uri,
        "FUSIONREC__SERVING__PREDICTOR_PORT": str(_port()),
        "FUSIONREC__SERVING__PREDICTOR_GRPC_PORT": str(_port()),
        "FUSIONREC__SERVING__TRANSFORMER_PORT": str(_port()),
        "FUSIONREC__ENCODERS__DEVICE": "cpu",
    }
    settings = load_settings(env=env)
    path = resolve_version(args.storage_uri, settings.paths.cache)
    art = load_artifact(path)
    model = art.model
    items = art.items.sort_values("item_idx").reset_index(drop=True)
    catalogue = (
        pd.read_csv(DATA / "items.csv", usecols=["movie_id", "overview"])
        .astype({"movie_id": str})
        .drop_duplicates("movie_id")
    )  # the raw file repeats some ids (a real defect)
    items = items.merge(catalogue, left_on="item_id", right_on="movie_id", how="left")
    items["sentence"] = items["overview"].map(lambda o: a_sentence(o) if isinstance(o, str) else None)
    has_image = model.mask_image.numpy() if "image" in model.modality_names else np.zeros(len(items), bool)
    usable = items[has_image & items["sentence"].notna() & items["image"].notna()]
    rng = np.random.default_rng(args.seed)
    sample = usable.iloc[np.sort(rng.choice(len(usable), min(args.items, len(usable)), replace=False))]
    photos = [phone_photo(p, rng) for p in sample["image"]]
    sentences = sample["sentence"].tolist()
    titles = [re.sub(r"\s*\(\d{4}\)\s*$", "", str(t)) for t in sample["title"]]  # the year dropped
    truth = sample["item_id"].astype(str).tolist()
    print(f"model {path} ({art.version}): {len(items)} items; {len(sample)} queries per modality (seed {args.seed})")

    # the shipped indexes: build time and size
    t = time.perf_counter()
    search = ItemSearch.from_model(model)
    built_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        search.save(tmp)
        size = sum(f.stat().st_size for f in Path(tmp).iterdir())
    kinds = {m: type(search.indexes[m]).__name__ for m in search.modalities}
    print(f"FAISS indexes {kinds}: built in {built_s:.2f} s, {size / 1e6:.1f} MB on disk")

    # the plain search and the old path, on the same queries, with the same encoders
    encoders = build_encoders(settings, {"text", "image"})
    ids = items["item_id"].astype(str).to_numpy()
    plain, old = {}, {}
    with torch.inference_mode():
        item_vectors = model.items().vectors
    for m, queries in (("image", photos), ("text", sentences), ("title", titles)):
        enc = encoders["text" if m == "title" else m].encode(queries)
        q = np.asarray(enc.values, dtype=np.float32)
        feats = getattr(model, f"feat_{'text' if m == 'title' else m}").numpy()
        mask = getattr(model, f"mask_{'text' if m == 'title' else m}").numpy()
        v = feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(1e-12)
        sims = (q / np.linalg.norm(q, axis=1, keepdims=True).clip(1e-12)) @ v.T
        sims[:, ~mask] = -np.inf
        plain[m] = [ids[np.argsort(-row, kind="stable")[:10]].tolist() for row in sims]
        with torch.inference_mode():
            space = "text" if m == "title" else m
            tower = model.items(content={space: (torch.from_numpy(q), torch.ones(len(q), dtype=torch.bool))}).vectors
        old[m] = [ids[r].tolist() for r in torch.topk(tower @ item_vectors.T, 10).indices.numpy()]

    # the bridge's held-out items (never trained on: their text is not in its training) and their genres;
    # a query names a genre, and only the posters can tell it (the query searches the image space alone)
    bridge = ItemSearch.load(path / "index", model, identities(art.encoders)).bridge
    if bridge is None:
        raise SystemExit("this model has no bridge between its text and image spaces")
    genre_table = pd.read_csv(DATA / "items.csv").astype({"movie_id": str}).drop_duplicates("movie_id")
    genre_table = genre_table.set_index("movie_id")
    held_ids = [str(ids[i]) for i in bridge.held_out]
    genres = {
        g: {i for i in held_ids if i in genre_table.index and genre_table.at[i, g] == 1}
        for g in GENRES
        if g in genre_table
    }
    genres = {g: m for g, m in genres.items() if len(m) >= 5}
    print(f"bridge: {bridge.figures}; {len(held_ids)} held-out items, {len(genres)} genres with at least 5 of them")

    log_dir = Path(tempfile.mkdtemp(prefix="retrieval-"))
    servers = local.serve(settings, feast=False, log_dir=log_dir, env=env, layout="two_hops")
    try:
        url = f"{servers.transformer_url}/v1/models/{MODEL}:predict"
        from fusionrec.api.access import client_headers

        client = httpx.Client(timeout=60, headers=client_headers(settings))

        def ask(instances: list[dict]) -> list[dict]:
            r = client.post(url, json={"instances": instances})
            if r.status_code != 200:
                raise SystemExit(f"the transformer answered {r.status_code}: {r.text[:300]}")
            return r.json()["predictions"]

        ours, latency = {"image": [], "text": []}, []
        for photo in photos:  # one request per photo: the latency a client sees
            t = time.perf_counter()
            pred = ask([{"image": base64.b64encode(photo).decode("ascii"), "k": 10}])[0]
            latency.append(time.perf_counter() - t)
            ours["image"].append([i["item_id"] for i in pred["items"]])
        for start in range(0, len(sentences), 32):
            for pred in ask([{"text": s, "k": 10} for s in sentences[start : start + 32]]):
                ours["text"].append([i["item_id"] for i in pred["items"]])
        ours["title"] = []
        for start in range(0, len(titles), 32):
            for pred in ask([{"text": s, "k": 10} for s in titles[start : start + 32]]):
                ours["title"].append([i["item_id"] for i in pred["items"]])
        ours["text_only"] = []  # the same sentences in the text space alone: what the bridge adds or takes
        for start in range(0, len(sentences), 32):
            for pred in ask([{"text": s, "k": 10, "space": "text"} for s in sentences[start : start + 32]]):
                ours["text_only"].append([i["item_id"] for i in pred["items"]])
        cross = {}  # words that find pictures: a genre named, among items the bridge never trained on
        for genre, members in genres.items():
            pred = ask(
                [
                    {
                        "text": f"a {GENRE_WORDS.get(genre, genre.lower())} film",
                        "k": 10,
                        "space": "image",
                        "candidates": held_ids,
                    }
                ]
            )
            cross[genre] = [i["item_id"] for i in pred[0]["items"]]
        users = art.users["user_id"].astype(str).to_numpy()
        who = [str(users[i]) for i in rng.integers(len(users), size=len(photos))]
        personal = {}
        for blend in [0.0, *args.blends]:  # the same photo and user, one request with every blend
            personal[blend] = []
            for start in range(0, len(photos), 32):
                batch = [
                    {"image": base64.b64encode(p).decode("ascii"), "k": 10, "user_id": u, "blend": blend}
                    for p, u in zip(photos[start : start + 32], who[start : start + 32])
                ]
                personal[blend] += [[i["item_id"] for i in pred["items"]] for pred in ask(batch)]
    finally:
        servers.stop()

    # the cross-modal figures: a matching poster in the top 10, beside a random list of the same items
    n_held = len(held_ids)
    hit = np.mean([bool(set(cross[g]) & genres[g]) for g in genres])
    precision = np.mean([len(set(cross[g]) & genres[g]) / 10 for g in genres])
    random_hit = np.mean([1 - math.comb(n_held - len(m), 10) / math.comb(n_held, 10) for m in genres.values()])
    random_precision = np.mean([len(m) / n_held for m in genres.values()])
    cross_met = hit >= 3 * random_hit or precision >= 3 * random_precision
    print(
        f"\nwords that find posters, {len(genres)} genres named ('a horror film'), space image, among the "
        f"{n_held} items the bridge never trained on:"
    )
    print(
        f"  a matching poster in the top 10: {hit:.3f} (random list {random_hit:.3f}); share of the top 10 "
        f"matching: {precision:.3f} (random {random_precision:.3f})"
    )
    for g in genres:
        print(f"    {g:<12} {len(genres[g]):>4} held-out items, {len(set(cross[g]) & genres[g])} of the top 10")
    t_both, t_text = hit_rates(ours["text"], truth)[1], hit_rates(ours["text_only"], truth)[1]
    print(
        f"  overview sentences, top-10: {t_both:.3f} searching both spaces (the default), {t_text:.3f} text alone "
        f"(bar: the bridge lowers it by at most 0.01: {'met' if t_both >= t_text - 0.01 else 'NOT met'})"
    )

    bars = {"image": 0.99, "text": 0.95}
    print(
        f"\n{'query':<22}{'ours top-1':>11}{'top-10':>8}   {'plain NN top-1':>14}{'top-10':>8}   "
        f"{'item tower top-1':>16}{'top-10':>8}   bar (top-10)"
    )
    ok = True
    for m, label in (("image", "photo (altered)"), ("text", "overview sentence")):
        o1, o10 = hit_rates(ours[m], truth)
        p1, p10 = hit_rates(plain[m], truth)
        t1, t10 = hit_rates(old[m], truth)
        met = o10 >= bars[m] and o10 >= p10 - 0.01
        ok &= met
        print(
            f"{label:<22}{o1:>11.3f}{o10:>8.3f}   {p1:>14.3f}{p10:>8.3f}   {t1:>16.3f}{t10:>8.3f}   "
            f">= {bars[m]:.2f} and >= plain - 0.01: {'met' if met else 'NOT met'}"
        )
    print(f"\nphoto + a random known user, re-ranked by taste (default blend {settings.serving.blend}):")
    print(f"{'blend':>8}{'top-1':>8}{'top-10':>8}   top-10 changed vs blend 0")
    for blend, ranked in personal.items():
        r1, r10 = hit_rates(ranked, truth)
        changed = np.mean([len(set(a) - set(b)) / 10 for a, b in zip(ranked, personal[0.0])])
        print(f"{blend:>8.2f}{r1:>8.3f}{r10:>8.3f}   {changed:.2f}")
    lat = np.array(latency) * 1000
    print(
        f"\nphoto query latency through the transformer (sequential, {len(lat)} requests): "
        f"p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms"
    )
    ti1, pti1 = hit_rates(ours["title"], truth)[0], hit_rates(plain["title"], truth)[0]
    print(
        f"titles as queries (the year dropped): the item itself top-1 {ti1:.3f} (plain cosine {pti1:.3f}; bar 0.95: "
        f"{'met' if ti1 >= 0.95 else 'NOT met'})"
    )
    (i1, i10), (s1, s10) = hit_rates(ours["image"], truth), hit_rates(ours["text"], truth)
    pi10, ps10 = hit_rates(plain["image"], truth)[1], hit_rates(plain["text"], truth)[1]
    d1, d10 = hit_rates(personal.get(settings.serving.blend, personal[0.0]), truth)
    record.write(
        "retrieval",
        "python benchmarks/retrieval.py",
        [
            record.Figure(
                "self",
                f"query by example through the running transformer and predictor, {len(truth)} items: an altered photo "
                f"of the item's poster finds it at top-1 {i1:.3f}, top-10 {i10:.3f}; one overview sentence top-1 "
                f"{s1:.3f}, top-10 {s10:.3f}; photo query latency p50 {np.percentile(lat, 50):.1f} ms, p99 "
                f"{np.percentile(lat, 99):.1f} ms (sequential)",
                f"plain cosine search with numpy over the same encoder embeddings: photo top-10 {pi10:.3f}, sentence "
                f"{ps10:.3f}",
                f"query by example, {len(truth)} items: a phone photo of a poster finds its item in the top 10 for "
                f"{i10:.3f}, one overview sentence for {s10:.3f}",
                i10,
                "photo >= 0.99 and sentence >= 0.95 (and >= plain - 0.01)",
                ok,
            ),
            record.Figure(
                "cross_modal",
                f"words that find posters through the bridge (text -> image, trained on the catalogue's own pairs): "
                f"{len(genres)} genres named ('a horror film') among the {n_held} items it never trained on, image "
                f"space only: a matching poster in the top 10 for {hit:.3f} of the genres, {precision:.3f} of the top "
                f"10 matching; overview sentences top-10 {t_both:.3f} searching both spaces, {t_text:.3f} text alone",
                f"a random list of the same items: {random_hit:.3f} with a match, {random_precision:.3f} matching",
                f"a genre in words finds posters the bridge never saw: {precision:.2f} of the top 10 match "
                f"(random {random_precision:.2f})",
                precision / max(random_precision, 1e-12),
                ">= 3x a random list, and sentences within 0.01 of the text space alone",
                bool(cross_met and t_both >= t_text - 0.01),
            ),
            record.Figure(
                "titles",
                f"titles as queries (the year dropped, {len(truth)} items) through the running servers, searching "
                f"both spaces: the item itself top-1 {ti1:.3f}",
                f"plain cosine search over the text embeddings: {pti1:.3f}",
                None,
                ti1,
                ">= 0.95 top-1",
                bool(ti1 >= 0.95),
            ),
            record.Figure(
                "blend",
                f"a photo query re-ranked for a random known user at the default blend {settings.serving.blend}: the "
                f"photo's own item in the top 10 for {d10:.3f} (top-1 {d1:.3f})",
                f"blend 0: {i10:.3f}",
                value=d10,
            ),
        ],
    )
    return 0 if ok else 1


# -- the long-tail shop: product families, photos, words that find photos --------------------------------

SHOP = {"users": 800, "items": 3000}
PHOTO_ONLY = 0.04  # the share of families whose text is withheld (no title, no description)


def shop_catalogue(work: Path) -> tuple[Path, Path]:
    """The generator's long-tail shop with shop titles, a share of its families without any text (the
    cross-modal queries' targets: their text is withheld from the queries and from the bridge's training),
    validated, embedded and trained once under ``work`` (reused when there): (raw folder, registry)."""
    import subprocess

    import yaml

    raw, models = work / "raw", work / "models"
    if (models / "champion.json").exists():
        return raw, models
    bin_ = Path(sys.executable).parent / "fusionrec"

    def run(*cmd: str) -> None:
        subprocess.run([str(bin_), *cmd, "--no-progress"], check=True, stdout=subprocess.DEVNULL)

    run(
        "data",
        "synth",
        "--out",
        str(raw),
        "--users",
        str(SHOP["users"]),
        "--items",
        str(SHOP["items"]),
        "--catalogue",
        "longtail",
        "--shop-titles",
        "--image-size",
        "128",
    )
    items = pd.read_csv(raw / "items.csv", dtype={"item_id": str})
    family = pd.read_parquet(raw / "truth" / "items.parquet")["family"].to_numpy()
    rng = np.random.default_rng(0)
    chosen = rng.choice(np.unique(family), int(round(PHOTO_ONLY * len(np.unique(family)))), replace=False)
    items.loc[np.isin(family, chosen), ["title", "description"]] = None
    items.to_csv(raw / "items.csv", index=False)
    contract = yaml.safe_load((raw / "dataset.yaml").read_text(encoding="utf-8"))
    contract["checks"] = {"items.text_present": {"budget": 2 * PHOTO_ONLY}}  # the photo-only articles
    (raw / "dataset.yaml").write_text(yaml.safe_dump(contract), encoding="utf-8")
    run("data", "validate", str(raw / "dataset.yaml"), "--out", str(work / "validated"))
    run("embed", str(work / "validated"), "--out", str(work / "embeddings"))
    run(
        "train",
        str(work / "validated"),
        "--embeddings",
        str(work / "embeddings"),
        "--models",
        str(models),
        "--modalities",
        "text,image",
        "--epochs",
        "5",
    )
    return raw, models


def random_hit(n: int, m: int, k: int = 10) -> float:
    """The chance that a random list of ``k`` of ``n`` items holds at least one of ``m``."""
    return 1.0 - math.comb(n - m, k) / math.comb(n, k) if n >= k else float(m > 0)


def shop(args) -> int:
    """Product families, self-retrieval and words that find photos on the long-tail shop, through the
    running server, beside plain cosine search and a random list in the same run."""
    import base64

    import httpx

    from fusionrec.api.access import client_headers
    from fusionrec.config import load_settings
    from fusionrec.data.dataset import Dataset
    from fusionrec.encoders.pipeline import build_encoders, load_embeddings
    from fusionrec.platform import local

    work = ROOT / "artifacts" / "benchmarks" / "retrieval-shop"
    raw, models = shop_catalogue(work)
    ds = Dataset.load(work / "validated")
    emb = load_embeddings(work / "embeddings")
    truth = pd.read_parquet(raw / "truth" / "items.parquet").astype({"item_id": str}).set_index("item_id")
    items = ds.items.sort_values("item_idx").reset_index(drop=True)
    ids = items["item_id"].astype(str).to_numpy()
    t = truth.loc[ids]
    family, colour = t["family"].to_numpy(), t["colour"].to_numpy()
    shape, texture = t["shape"].to_numpy(), t["texture"].to_numpy()
    photo_only = ~np.asarray(emb["text"].mask, bool) & np.asarray(emb["image"].mask, bool)
    rng = np.random.default_rng(args.seed)
    sizes = pd.Series(family).value_counts()
    sample = np.sort(rng.choice(np.flatnonzero(sizes.loc[family].to_numpy() >= 2), args.items, replace=False))
    photos = [phone_photo(items.at[i, "image"], rng) for i in sample]  # validated paths are absolute
    # the plain alternative: cosine search over the image encoder's embeddings of the catalogue
    settings = load_settings()
    encoder = build_encoders(settings, {"image"})["image"]
    q = np.asarray(encoder.encode(photos).values, dtype=np.float32)
    v = np.asarray(emb["image"].values, dtype=np.float32)
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (v / np.linalg.norm(v, axis=1, keepdims=True)).T
    plain = [ids[np.argsort(-row, kind="stable")[:10]].tolist() for row in sims]

    env = {
        "FUSIONREC__SERVING__STORAGE_URI": str(models),
        "FUSIONREC__SERVING__PREDICTOR_PORT": str(_port()),
        "FUSIONREC__SERVING__PREDICTOR_GRPC_PORT": str(_port()),
        "FUSIONREC__SERVING__TRANSFORMER_PORT": str(_port()),
        "FUSIONREC__ENCODERS__DEVICE": "cpu",
    }
    settings = load_settings(env=env)
    combos = sorted({(texture[i], shape[i], colour[i]) for i in np.flatnonzero(photo_only)})
    candidates = ids[photo_only].tolist()
    servers = local.serve(settings, feast=False, log_dir=Path(tempfile.mkdtemp(prefix="retrieval-shop-")), env=env)
    try:
        client = httpx.Client(timeout=60, headers=client_headers(settings))
        url = f"{servers.transformer_url}/v1/models/{MODEL}:predict"

        def ask(instances: list[dict]) -> list[list[str]]:
            r = client.post(url, json={"instances": instances})
            if r.status_code != 200:
                raise SystemExit(f"the server answered {r.status_code}: {r.text[:300]}")
            return [[x["item_id"] for x in p["items"]] for p in r.json()["predictions"]]

        ours: dict[str, list[list[str]]] = {"both": [], "image": []}
        for space in ours:
            for s in range(0, len(photos), 32):
                ours[space] += ask(
                    [
                        {"image": base64.b64encode(p).decode("ascii"), "k": 11, "space": space}
                        for p in photos[s : s + 32]
                    ]
                )
        words = [f"{PATTERN_WORDS[x]} {y}, {z}" for x, y, z in combos]
        cross = []
        for s in range(0, len(words), 32):
            cross += ask([{"text": w, "k": 10, "space": "image", "candidates": candidates} for w in words[s : s + 32]])
    finally:
        servers.stop()

    index = {i: n for n, i in enumerate(ids)}
    own = [str(ids[i]) for i in sample]

    def self_top10(ranked):
        return float(np.mean([o in r[:10] for o, r in zip(own, ranked)]))

    def sibling_top10(ranked):  # another member of the item's family among the first 10 others
        hits = []
        for i, r in zip(sample, ranked):
            others = [x for x in r if x != ids[i]][:10]
            hits.append(any(family[index[x]] == family[i] for x in others))
        return float(np.mean(hits))

    n = len(ids)
    rand_sibling = float(np.mean([random_hit(n - 1, int(sizes[family[i]]) - 1) for i in sample]))
    match = {c: {ids[i] for i in np.flatnonzero(photo_only) if (texture[i], shape[i], colour[i]) == c} for c in combos}
    cross_hit = float(np.mean([bool(set(r) & match[c]) for c, r in zip(combos, cross)]))
    cross_share = float(np.mean([len(set(r) & match[c]) / 10 for c, r in zip(combos, cross)]))
    rand_cross = float(np.mean([random_hit(len(candidates), len(match[c])) for c in combos]))
    rand_share = float(np.mean([len(match[c]) / len(candidates) for c in combos]))
    print(
        f"\nlong-tail shop (synthetic, {n:,} articles in {len(sizes):,} families; {photo_only.sum()} photo-only "
        f"articles), {len(sample)} phone photos of articles in families of 2 or more (seed {args.seed}):"
    )
    print(f"{'':<34}{'ours (both)':>12}{'ours (image)':>13}{'plain cosine':>13}{'random':>8}")
    print(
        f"{'the article itself in the top 10':<34}{self_top10(ours['both']):>12.3f}{self_top10(ours['image']):>13.3f}"
        f"{self_top10(plain):>13.3f}{10 / n:>8.3f}"
    )
    print(
        f"{'another colour of it in the top 10':<34}{sibling_top10(ours['both']):>12.3f}"
        f"{sibling_top10(ours['image']):>13.3f}{sibling_top10(plain):>13.3f}{rand_sibling:>8.3f}"
    )
    print(
        f"words that find photos: {len(combos)} queries ('striped star, red') among the {len(candidates)} photo-only "
        f"articles: a match in the top 10 for {cross_hit:.3f} (random list {rand_cross:.3f}); share of the top 10 "
        f"matching {cross_share:.3f} (random {rand_share:.3f})"
    )
    fam, selfr = sibling_top10(ours["both"]), self_top10(ours["both"])
    record.write(
        "retrieval_shop",
        "python benchmarks/retrieval.py --catalogue shop",
        [
            record.Figure(
                "families",
                f"long-tail shop (synthetic, {n:,} articles), {len(sample)} phone photos through the running server: "
                f"another colour of the article in the top 10 for {fam:.3f} (searching the image space alone "
                f"{sibling_top10(ours['image']):.3f}); the article itself {selfr:.3f} "
                f"({self_top10(ours['image']):.3f})",
                f"plain cosine search: {sibling_top10(plain):.3f} and {self_top10(plain):.3f}; "
                f"random {rand_sibling:.3f}",
                f"shop photos: another colour in the top 10 {fam:.2f} (plain {sibling_top10(plain):.2f}), the "
                f"article itself {selfr:.2f}; words find photo-only articles {cross_hit / max(rand_cross, 1e-12):.1f}x "
                "random",
                fam,
                ">= 0.9 and >= plain cosine search; the article itself >= 0.98",
                fam >= 0.9 and fam >= sibling_top10(plain) and selfr >= 0.98,
            ),
            record.Figure(
                "cross_modal",
                f"words that find photos on the long-tail shop: {len(combos)} pattern-shape-colour queries among the "
                f"{len(candidates)} articles without text (withheld from the bridge's training), image space: a match "
                f"in the top 10 for {cross_hit:.3f}, {cross_share:.3f} of the top 10 matching",
                f"a random list of the same articles: {rand_cross:.3f} with a match, {rand_share:.3f} matching",
                None,
                cross_hit / max(rand_cross, 1e-12),
                ">= 3x a random list",
                cross_hit >= 3 * rand_cross,
            ),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
