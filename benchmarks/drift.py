"""Usage: python benchmarks/drift.py [--window 1000] [--aa 100] [--aa-dev 20] [--method M --threshold T]

Drift detection measured on traffic sent through the running servers (the transformer and the predictor
as two KServe model server processes, real HTTP, the transformer writing the inference log), on
movielens-100k-mm with the model from `make run`. Traffic: known users by id, new users by their history
(the last 10 to 30 items before 5 held out), text queries (a sentence of an item's overview, never one
the reference sent), photo queries (the item's poster altered as a phone photo, a new photo every time),
anonymous requests. Each batch carries a request id naming its window; the windows are read back from the
inference log by it.

The windows come in two sets. The **development** windows (``--aa-dev`` A/A windows and two windows per
shift and strength) choose the embedding-drift method and threshold; the **reporting** windows (``--aa``
fresh A/A windows, at least 100, and two fresh windows per shift and strength) report the policy with
that choice. No reporting window informs a choice.

0. (development) Whether the model's own data could stand in for what callers bring: Evidently's
   classifier test of each A/A window's text- and photo-query vectors against the items' own vectors, and
   against query-like variants of the items made here otherwise than the traffic's (runs of words; re-taken
   posters); and of its new users' vectors against the model's answers for training users by their latest
   items at the same history lengths.
1. (development) False alarms and power of every embedding-drift method and threshold considered
   (Evidently's model, distance, mmd and ratio methods with fixed thresholds, model and distance with a
   bootstrap quantile): the share of A/A windows where a user, text-query or photo-query vector signal
   alarms, and the smallest strength of each shift caught. The choice: the fewest shifts missed, then the
   smallest strengths caught, among those with at most 5 % false alarms (then the fewest false alarms,
   then the settings' default). ``--method``/``--threshold`` skip the choice.
2. (reporting) The whole policy, with the chosen method and threshold, against three references: the
   platform's (the model's own answers for its known users and anonymous requests, and the new users and
   queries of the reference window, pinned as an operator would: `fusionrec monitor reference`), the first
   traffic after the deploy (how it was before), and first traffic an attacker sent (the other-taste cohort
   at full strength). For each: the share of A/A windows that fire with its one-sided 95 % upper bound
   (bar for the platform's: at most 5 %), and drift injected at increasing strength, two windows each:
   text queries from another topic (the share of off-topic queries), darker photos (1 - brightness), a
   cohort of users with another taste (users whose genre profile is furthest from the average), a
   popularity shift (users of the least popular items). Beside each strength, Recall@20 of the affected
   traffic from large probes through the same servers (the text query's or photo's own item in the top
   20; the held-out items of the history requests). Bar: detected at the smallest strength where
   Recall@20 drops by 10 % or more. The two other references are judged on the first 20 A/A windows.
3. Cost: reading and evaluating windows of 10,000 and 100,000 logged records (bar: under 60 s for
   100,000 on 2 cores).

Writes build/bench/drift.json. Exit status 0 when it ran (the bars' verdicts are in the record).
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval import DATA, GENRES, MODEL, ROOT, _port, phone_photo, sentences  # noqa: E402

# fixed thresholds on the score; for the *_bootstrap methods the threshold is the quantile of the no-drift score
METHODS = {
    "model": [0.55, 0.6, 0.65, 0.7],
    "distance": [0.01, 0.02, 0.05, 0.1],
    "mmd": [0.002, 0.005, 0.015, 0.05],
    "ratio": [0.5, 0.7, 0.9],
    "model_bootstrap": [0.95, 0.99],
    "distance_bootstrap": [0.95, 0.99, 0.999],
}
SCENARIOS = {"topic": [0.1, 0.2, 0.35], "dark": [0.4, 0.6, 0.8], "taste": [0.5, 1.0], "popularity": [0.25, 0.5, 1.0]}
MIX = {"user": 0.38, "history": 0.20, "text": 0.25, "image": 0.12, "anonymous": 0.05}
AFFECTED = {"topic": "text", "dark": "image", "taste": "history", "popularity": "history"}
TOPICS = {
    "tax": ["quarterly tax filing", "payroll deductions", "small business accounts", "an audit notice", "VAT refunds"],
    "cars": ["brake pads and rotors", "a diesel pickup truck", "the timing belt", "winter tyres", "an oil change"],
    "health": ["seasonal influenza", "a sprained ankle", "childhood vaccines", "high blood pressure", "allergy season"],
    "garden": ["pruning tomato plants", "a greenhouse in spring", "composting kitchen scraps", "clay soil", "aphids"],
    "finance": [
        "mortgage refinancing rates",
        "index fund fees",
        "a credit card balance",
        "pension savings",
        "bond yields",
    ],
    "cooking": ["sourdough starter", "a cast iron skillet", "slow cooked lentil soup", "knife sharpening", "meal prep"],
}
FRAMES = [
    "How to deal with {a} when {b} is also a problem.",
    "A practical checklist for {a} and {b} this month.",
    "Experts compare {a} with {b} and explain the costs.",
    "What nobody tells you about {a} or {b}.",
]


def off_topic(rng: np.random.Generator) -> str:
    words = TOPICS[rng.choice(list(TOPICS))]
    a, b = rng.choice(len(words), 2, replace=False)
    return str(rng.choice(FRAMES)).format(a=words[a], b=words[b])


def darker(photo: bytes, strength: float) -> bytes:
    import io

    from PIL import Image, ImageEnhance

    img = ImageEnhance.Brightness(Image.open(io.BytesIO(photo)).convert("RGB")).enhance(1.0 - strength)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=80)
    return out.getvalue()


class Traffic:
    """Requests as clients send them, each with what a right answer contains (for Recall@20)."""

    def __init__(self, art, ds, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        items = art.items.sort_values("item_idx").reset_index(drop=True)
        catalogue = (
            pd.read_csv(DATA / "items.csv", usecols=["movie_id", "overview"])
            .astype({"movie_id": str})
            .drop_duplicates("movie_id")
        )
        items = items.merge(catalogue, left_on="item_id", right_on="movie_id", how="left")
        items["sentences"] = items["overview"].map(sentences)
        has_image = art.model.mask_image.numpy()
        self.text_items = items[items["sentences"].map(len) > 0]
        self.image_items = items[has_image & items["image"].notna()]
        self.item_ids = items["item_id"].astype(str).to_numpy()
        self.users = art.users.set_index("user_idx")["user_id"].astype(str)
        inter = ds.interactions.sort_values(["user_idx", "timestamp"])
        self.histories = {u: g["item_idx"].to_numpy() for u, g in inter.groupby("user_idx") if len(g) >= 15}
        # cohorts: users whose genre profile is furthest from the average (another taste), and users of the
        # least popular items (a popularity shift); 15 % of the users each
        genres = [c for c in ds.items.columns if c in GENRES]
        g = ds.items.set_index("item_idx")[genres].fillna(0).to_numpy(float)
        users = np.array(sorted(self.histories))
        profile = np.stack([g[self.histories[u]].mean(0) for u in users])
        mean = profile.mean(0)
        cos = profile @ mean / (np.linalg.norm(profile, axis=1) * np.linalg.norm(mean)).clip(1e-9)
        pop = np.bincount(inter["item_idx"], minlength=len(items))
        niche = np.array([np.log1p(pop[self.histories[u]]).mean() for u in users])
        k = max(10, len(users) * 15 // 100)
        self.cohorts = {"all": users, "taste": users[np.argsort(cos)[:k]], "popularity": users[np.argsort(niche)[:k]]}
        self.sent: set[str] = set()  # the text queries of the reference: no later window repeats one

    def sentence(self, row) -> str:
        """One of the item's sentences, never one the reference sent (an item whose every sentence the
        reference sent gives its first; the caller draws another item then)."""
        fresh = [x for x in row.sentences if x not in self.sent]
        return str(self.rng.choice(fresh)) if fresh else ""

    def photo(self, row) -> bytes:
        """A new phone photo of the poster on every call (no two requests send the same bytes)."""
        return phone_photo(row.image, self.rng)

    def window(self, n: int, scenario: str | None = None, strength: float = 0.0) -> list[tuple[dict, str, list[str]]]:
        """``n`` requests: (instance, kind, the right answers)."""
        out = []
        kinds = self.rng.choice(list(MIX), n, p=list(MIX.values()))
        if scenario and scenario.startswith("probe:"):  # one kind only, for Recall@20 probes
            probe = scenario.removeprefix("probe:")
            kinds = np.full(n, probe if probe in ("text", "image") else "history")
            scenario = "dark" if probe == "image" else None if probe in ("text", "all") else probe
            strength = strength if probe == "image" else 1.0 if scenario else 0.0
        for kind in kinds:
            if kind == "text":
                if scenario == "topic" and self.rng.random() < strength:
                    out.append(({"text": off_topic(self.rng), "k": 20}, kind, []))
                else:
                    text = ""
                    while not text:
                        row = self.text_items.iloc[self.rng.integers(len(self.text_items))]
                        text = self.sentence(row)
                    out.append(({"text": text, "k": 20}, kind, [str(row.item_id)]))
            elif kind == "image":
                row = self.image_items.iloc[self.rng.integers(len(self.image_items))]
                photo = self.photo(row)
                if scenario == "dark":
                    photo = darker(photo, strength)
                out.append(({"image": base64.b64encode(photo).decode("ascii"), "k": 20}, kind, [str(row.item_id)]))
            elif kind in ("user", "history"):
                cohort = scenario if scenario in ("taste", "popularity") and self.rng.random() < strength else "all"
                u = int(self.rng.choice(self.cohorts[cohort]))
                if kind == "user":
                    out.append(({"user_id": self.users[u], "k": 20}, kind, []))
                else:
                    h = self.histories[u]  # the last 10 to 30 items before the 5 held out
                    sent = self.item_ids[h[-5 - int(self.rng.integers(10, 31)) : -5]].tolist()
                    out.append(({"history": sent, "k": 20}, kind, self.item_ids[h[-5:]].tolist()))
            else:
                out.append(({"k": 20}, kind, []))
        return out


def send(client, url: str, requests, tag: str = "probe", batch: int = 32) -> dict[str, list[float]]:
    """Send the requests, each batch with the request id ``<tag>/<n>`` (the inference log keeps it, so a
    window is read back by its tag); Recall@20 per request kind that has right answers."""
    recall: dict[str, list[float]] = {}
    for start in range(0, len(requests), batch):
        part = requests[start : start + batch]
        r = client.post(url, json={"instances": [p[0] for p in part]}, headers={"x-request-id": f"{tag}/{start}"})
        if r.status_code != 200:
            raise SystemExit(f"the transformer answered {r.status_code}: {r.text[:300]}")
        for (_, kind, truth), pred in zip(part, r.json()["predictions"]):
            if kind in ("text", "image", "history") and (truth or kind == "text"):
                got = {i["item_id"] for i in pred["items"][:20]}
                recall.setdefault(kind, []).append(len(got & set(truth)) / len(truth) if truth else 0.0)
    return recall


def tag(key: tuple) -> str:
    """A window's request-id tag: phase, shift, strength and repeat, e.g. ``report:aa:0:17``."""
    return ":".join(f"{x:g}" if isinstance(x, float) else str(x) for x in key)


def split_log(logs: Path, keys: list[tuple]) -> tuple[pd.DataFrame, dict[tuple, pd.DataFrame]]:
    """The logged reference and each window, by the request-id tag their requests carried."""
    from fusionrec.monitoring.log import read_window

    frame = read_window(logs).frame
    tags = frame["request_id"].astype(str).str.rsplit("/", n=1).str[0]
    groups = {t: g.reset_index(drop=True) for t, g in frame.groupby(tags, sort=False)}
    missing = [k for k in ["reference", *map(tag, keys)] if k not in groups]
    if missing:
        raise SystemExit(f"the inference log has no records for {missing[:5]} (of {len(missing)}): resend them")
    return groups["reference"], {k: groups[tag(k)] for k in keys}


def upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """The one-sided Clopper-Pearson upper bound of a rate seen ``k`` times in ``n`` (0 of 20: 13.9 %)."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(confidence, k + 1, n - k))


def method_verdicts(
    frame: pd.DataFrame, reference: pd.DataFrame, sample: int, seed: int
) -> dict[tuple[str, float], dict]:
    """Per (method, threshold): each embedding signal's (score, drifted), by Evidently's methods on the same
    samples (a fixed-threshold method is computed once and compared with every threshold)."""
    from fusionrec.monitoring.drift import EMBEDDING_SIGNALS, _sample, _vectors, embedding_method

    out: dict[tuple[str, float], dict] = {}
    for name in EMBEDDING_SIGNALS:
        cur, ref = _sample(_vectors(frame, name), sample, seed), _sample(_vectors(reference, name), sample, seed + 1)
        if min(len(cur), len(ref)) < 50:
            continue
        for method, thresholds in METHODS.items():
            if method.endswith("_bootstrap"):
                for t in thresholds:
                    score, drifted, _ = embedding_method(method, t)(pd.DataFrame(cur), pd.DataFrame(ref))
                    out.setdefault((method, t), {})[name] = (float(score), bool(drifted))
            else:
                score, _, _ = embedding_method(method, thresholds[0])(pd.DataFrame(cur), pd.DataFrame(ref))
                for t in thresholds:
                    out.setdefault((method, t), {})[name] = (float(score), float(score) > t)
    return out


def probe_recall(client, url: str, traffic: Traffic, n: int) -> dict[str, float]:
    """Recall@20 on large probe sets of each kind of affected traffic (the windows alone are too small to
    tell a 10 % drop from noise): on-topic text, photos at each darkness, history requests per cohort."""
    out = {}
    for name, build in [
        ("text", lambda: traffic.window(n, "probe:text")),
        *((f"image@{x:g}", (lambda x=x: traffic.window(n, "probe:image", x))) for x in [0.0, *SCENARIOS["dark"]]),
        *((f"history@{c}", (lambda c=c: traffic.window(n, f"probe:{c}"))) for c in ("all", "taste", "popularity")),
    ]:
        rec = send(client, url, build())
        out[name] = float(np.mean(next(iter(rec.values()))))
    return out


def expected_recall(probe: dict[str, float], scenario: str, strength: float) -> float:
    """Recall@20 of the affected traffic at a strength: the mixture of the probes' (off-topic text has no
    right answer: 0)."""
    if scenario == "topic":
        return (1 - strength) * probe["text"]
    if scenario == "dark":
        return probe[f"image@{strength:g}"]
    return (1 - strength) * probe["history@all"] + strength * probe[f"history@{scenario}"]


def a_span(text: str, rng: np.random.Generator) -> str:
    """A query-like variant of a description, made otherwise than the traffic's sentences: a random run of
    8 to 30 of its words."""
    words = (text or "").split()
    if len(words) < 8:
        return text
    n = int(rng.integers(8, min(30, len(words)) + 1))
    at = int(rng.integers(0, len(words) - n + 1))
    return " ".join(words[at : at + n])


def a_retake(path: str, rng: np.random.Generator) -> bytes:
    """A query-like variant of a poster, made otherwise than the traffic's phone photos: cropped on each side,
    tilted, contrast, colour and brightness changed, shrunk, re-compressed."""
    import io

    from PIL import Image, ImageEnhance

    img = Image.open(path).convert("RGB")
    w, h = img.size
    cw, ch = int(w * rng.uniform(0.7, 0.95)), int(h * rng.uniform(0.7, 0.95))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img.crop((x, y, x + cw, y + ch)).rotate(
        float(rng.uniform(-4, 4)), resample=Image.BILINEAR, fillcolor=(128, 128, 128)
    )
    for enhance in (ImageEnhance.Contrast, ImageEnhance.Color, ImageEnhance.Brightness):
        img = enhance(img).enhance(float(rng.uniform(0.8, 1.2)))
    scale = float(rng.uniform(0.5, 1.0))
    img = img.resize((max(32, int(img.width * scale)), max(32, int(img.height * scale))))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=int(rng.integers(50, 90)))
    return out.getvalue()


def catalogue_as_queries(settings, art, ds, aa: list[pd.DataFrame], seed: int, n: int = 400) -> None:
    """Could the model's own data stand in for what callers bring? The classifier test (the settings' method)
    of each A/A window's query vectors against the catalogue's own item vectors and against query-like
    variants of the catalogue encoded here (runs of words, re-taken posters); of its new users' vectors
    against the model's answers for training users by their latest items, at the same history lengths."""
    from fusionrec.encoders.pipeline import build_encoders, item_texts
    from fusionrec.monitoring.drift import embedding_method

    rng = np.random.default_rng(seed)
    items = ds.items.sort_values("item_idx").reset_index(drop=True)
    encoders = build_encoders(settings, {"text", "image"})
    texts = item_texts(items, ds.text_fields)
    pick = rng.permutation(len(items))[:n]
    own = {
        m: getattr(art.model, f"feat_{m}").detach().cpu().numpy()[getattr(art.model, f"mask_{m}").numpy()]
        for m in ("text", "image")
    }
    variants = {
        "text": encoders["text"].encode([a_span(texts[i], rng) for i in pick if texts[i]]).values,
        "image": encoders["image"]
        .encode([a_retake(p, rng) for p in items["image"].iloc[pick] if isinstance(p, str)])
        .values,
    }
    method = embedding_method(settings.monitoring.embedding_method, settings.monitoring.embedding_threshold)
    print(
        "\n0. the model's own data as the reference of what callers bring: Evidently's classifier test "
        f"({settings.monitoring.embedding_method} {settings.monitoring.embedding_threshold:g}) of each A/A window's "
        "vectors against it (ROC AUC min-max; windows that drift)"
    )
    for m in ("text", "image"):
        for label, ref in (("the items' own vectors", own[m]), ("query-like variants of the items", variants[m])):
            scores, drifted = [], 0
            for i, w in enumerate(aa):
                cur = np.stack([v for v in w[f"query_{m}"] if v is not None])
                sample = ref[np.random.default_rng(seed + i).permutation(len(ref))[: max(len(cur), 100)]]
                score, d, _ = method(pd.DataFrame(cur), pd.DataFrame(sample))
                scores.append(float(score))
                drifted += bool(d)
            print(
                f"  {m + ' queries':<13} vs {label:<34} AUC {min(scores):.2f}-{max(scores):.2f}; "
                f"{drifted} of {len(aa)} A/A windows drift"
            )
    from fusionrec.recommender import Recommender, Row

    rec = Recommender(art)
    lengths = art.history_mask.sum(1).numpy()
    scores, drifted = [], 0
    for i, w in enumerate(aa):
        new_users = w[w["kind"] == "history"]
        rows = []
        for h in new_users["history_length"].astype(int):
            u = int(rng.choice(np.flatnonzero(lengths >= h))) if (lengths >= h).any() else int(np.argmax(lengths))
            stored = art.history[u][art.history_mask[u]].numpy()
            rows.append(Row(kind="recommend", k=20, history=rec.item_ids[stored[-max(h, 1) :]].tolist()))
        ref = np.stack([r.user_vector for r in rec.recommend(rows)])
        score, d, _ = method(pd.DataFrame(np.stack(new_users["user_vector"].to_list())), pd.DataFrame(ref))
        scores.append(float(score))
        drifted += bool(d)
    print(
        f"  {'new users':<13} vs {'training users at the same lengths':<34} AUC {min(scores):.2f}-{max(scores):.2f}; "
        f"{drifted} of {len(aa)} A/A windows drift"
    )


def send_all(settings, env, traffic, work: Path, logs: Path, plan, args):
    """Send the probes, the reference and every window of the plan through the servers; read back what the
    transformer logged. Returns the windows, the reference and the probes' Recall@20 (saved as probe.json)."""
    import json

    import httpx

    from fusionrec.api.access import client_headers
    from fusionrec.platform import local

    servers = local.serve(settings, feast=False, log_dir=work / "servers", env=env, layout="two_hops")
    client = httpx.Client(timeout=120, headers=client_headers(settings))
    url = f"{servers.transformer_url}/v1/models/{MODEL}:predict"
    t_send = time.perf_counter()
    try:
        probe = probe_recall(client, url, traffic, args.probe)
        (work / "probe.json").write_text(json.dumps(probe))
        reference = traffic.window(args.reference)
        traffic.sent = {r[0]["text"] for r in reference if "text" in r[0]}
        send(client, url, reference, "reference")
        for n, (phase, scenario, strength, i) in enumerate(plan):
            requests = traffic.window(args.window, None if scenario == "aa" else scenario, strength)
            send(client, url, requests, tag((phase, scenario, strength, i)))
            print(f"\r  traffic: window {n + 1}/{len(plan)} sent", end="", flush=True)
        print()
    finally:
        servers.stop()  # the log writer flushes on the way down
    reference, windows = split_log(logs, plan)
    sent = len(reference) + sum(len(f) for f in windows.values())
    print(
        f"traffic: {sent:,} logged requests (and {args.probe} per Recall@20 probe) through the servers in "
        f"{time.perf_counter() - t_send:.0f} s, logged under {work}"
    )
    return windows, reference, probe


def choose(table: dict[tuple[str, float], tuple[float, dict]], default: tuple[str, float]) -> tuple[str, float]:
    """The method and threshold of the development table to report with: at most 5 % false alarms, the
    fewest shifts missed, the smallest strengths caught, the fewest false alarms, the settings' default."""

    def cost(mt):
        rate, caught = table[mt]
        missed = sum(v is None for v in caught.values())
        late = sum(len(SCENARIOS[s]) if v is None else SCENARIOS[s].index(v) for s, v in caught.items())
        return (rate > 0.05, missed, late, rate, mt != default)

    return min(table, key=cost)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=1000, help="Requests per window.")
    parser.add_argument("--reference", type=int, default=2000, help="Requests in the reference.")
    parser.add_argument("--aa", type=int, default=100, help="Fresh A/A windows the policy is reported on.")
    parser.add_argument("--aa-dev", type=int, default=20, help="A/A windows the method is chosen on.")
    parser.add_argument("--sample", type=int, default=2000, help="Rows per side for the method comparison.")
    parser.add_argument("--probe", type=int, default=300, help="Requests per Recall@20 probe.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default=None, help="Embedding-drift method (default: chosen on development).")
    parser.add_argument("--threshold", type=float, default=None, help="Its threshold (with --method).")
    parser.add_argument(
        "--platform-only",
        action="store_true",
        help="Judge against the platform's reference only (the two comparison references take minutes a window).",
    )
    parser.add_argument("--storage-uri", default=str(ROOT / "artifacts" / "movielens-100k-mm" / "models"))
    parser.add_argument(
        "--replay",
        type=Path,
        default=None,
        help="Re-evaluate the traffic a previous run logged (its folder, printed at the start) "
        "instead of sending it again, e.g. with another --method; same --aa/--aa-dev.",
    )
    args = parser.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} is absent (movielens-100k-mm is read in place, never copied)")
        return 0
    if (args.method is None) != (args.threshold is None):
        parser.error("--method and --threshold go together")
    import record

    from fusionrec.artifact import load_artifact
    from fusionrec.config import load_settings
    from fusionrec.data.dataset import Dataset
    from fusionrec.monitoring import drift, policy
    from fusionrec.monitoring.log import read_window, write_records
    from fusionrec.monitoring.loop import _popularity
    from fusionrec.registry import resolve_version

    work = args.replay or Path(tempfile.mkdtemp(prefix="drift-"))
    env = {
        "FUSIONREC__SERVING__STORAGE_URI": args.storage_uri,
        "FUSIONREC__SERVING__PREDICTOR_PORT": str(_port()),
        "FUSIONREC__SERVING__PREDICTOR_GRPC_PORT": str(_port()),
        "FUSIONREC__SERVING__TRANSFORMER_PORT": str(_port()),
        "FUSIONREC__ENCODERS__DEVICE": "cpu",
        "FUSIONREC__MONITORING__FOLDER": str(work / "monitoring"),
        "FUSIONREC__MONITORING__LOG_FLUSH_S": "0.5",
    }
    settings = load_settings(env=env)
    default = (settings.monitoring.embedding_method, settings.monitoring.embedding_threshold)
    art = load_artifact(resolve_version(args.storage_uri, settings.paths.cache))
    ds = Dataset.load(ROOT / "artifacts" / "movielens-100k-mm" / "validated")
    traffic = Traffic(art, ds, args.seed)
    popularity = _popularity(art)
    logs = work / "monitoring" / "logs"
    mon = settings.monitoring
    print(
        f"model {art.version}: {len(traffic.item_ids)} items; windows of {args.window} requests "
        f"(mix {', '.join(f'{k} {v:.0%}' for k, v in MIX.items())}), reference {args.reference}; "
        f"{args.aa_dev} development and {args.aa} reporting A/A windows; policy: PSI > {mon.value_threshold:g} "
        f"on values, fire on any of {', '.join(mon.fire_on)} or {mon.drift_share:.0%} of the signals"
    )
    shifts = [(s, x, i) for s, strengths in SCENARIOS.items() for x in strengths for i in range(2)]
    plan = [("dev", "aa", 0.0, i) for i in range(args.aa_dev)] + [("dev", *k) for k in shifts]
    plan += [("report", "aa", 0.0, i) for i in range(args.aa)] + [("report", *k) for k in shifts]
    if args.replay:
        import json

        probe = json.loads((work / "probe.json").read_text())
        reference, windows = split_log(logs, plan)
        print(f"replaying {len(reference) + sum(map(len, windows.values())):,} logged requests from {work}")
    else:
        windows, reference, probe = send_all(settings, env, traffic, work, logs, plan, args)
    print(f"Recall@20 probes: {', '.join(f'{k} {v:.3f}' for k, v in probe.items())}")
    start = datetime.now(timezone.utc)

    def phase(name: str) -> tuple[list[pd.DataFrame], dict[tuple[str, float, int], pd.DataFrame]]:
        aa = [windows[(name, "aa", 0.0, i)] for i in range(args.aa_dev if name == "dev" else args.aa)]
        return aa, {k: windows[(name, *k)] for k in shifts}

    # 1. development: every embedding-drift method and threshold, false alarms on the A/A windows and the
    # smallest strength of each shift caught within two windows; the choice
    dev_aa, dev_shift = phase("dev")
    table: dict[tuple[str, float], tuple[float, dict]] = {}
    if args.method is None:
        aa_v = [method_verdicts(f, reference, args.sample, args.seed + i) for i, f in enumerate(dev_aa)]
        det_v = {k: method_verdicts(f, reference, args.sample, args.seed + 100) for k, f in dev_shift.items()}
        for method, thresholds in METHODS.items():
            for t in thresholds:
                alarms = float(np.mean([any(d for _, d in w.get((method, t), {}).values()) for w in aa_v]))
                caught = {}
                for scenario, strengths in SCENARIOS.items():
                    hit = [
                        x
                        for x in strengths
                        if any(any(d for _, d in det_v[(scenario, x, i)].get((method, t), {}).values()) for i in (0, 1))
                    ]
                    caught[scenario] = min(hit) if hit else None
                table[(method, t)] = (alarms, caught)
        chosen = choose(table, default)
        print(
            f"\n1. development: embedding-drift methods (Evidently's) on the user, text-query and photo-query "
            f"vectors; a window alarms when any of them drifts. False alarms over {args.aa_dev} A/A windows; per "
            "shift, the smallest strength caught within two windows (- : none):"
        )
        print(f"{'method':<20}{'threshold':>10}{'false alarms':>14}" + "".join(f"{s:>12}" for s in SCENARIOS))
        for (method, t), (alarms, caught) in table.items():
            mark_ = "  <- chosen" if (method, t) == chosen else ""
            mark_ += "  (settings' default)" if (method, t) == default else ""
            cells = "".join(f"{'-' if v is None else f'{v:g}':>12}" for v in caught.values())
            print(f"{method:<20}{t:>10g}{alarms:>14.0%}{cells}{mark_}")
    else:
        chosen = (args.method, args.threshold)
        print(f"\n1. development: skipped (--method {args.method} --threshold {args.threshold:g} given)")
    mon = mon.model_copy(update={"embedding_method": chosen[0], "embedding_threshold": chosen[1]})
    if chosen != default:
        print(
            f"the choice differs from the settings' default {default[0]} {default[1]:g}: "
            f"FUSIONREC__MONITORING__EMBEDDING_METHOD={chosen[0]} "
            f"FUSIONREC__MONITORING__EMBEDDING_THRESHOLD={chosen[1]:g}"
        )

    catalogue_as_queries(settings, art, ds, dev_aa, args.seed)

    # 2. reporting: the whole policy, as `fusionrec monitor run` applies it, on fresh windows, against each
    # reference: the platform's (the model's own answers, and the new users and queries of the reference
    # window pinned by an operator), the first traffic after a deploy (how it was before), and first
    # traffic an attacker sent (another-taste cohort)
    from fusionrec.monitoring.reference import ModelReference, is_known

    aa, shifted = phase("report")
    attacker = ("taste", SCENARIOS["taste"][-1], 0)  # that window is the attacker's reference: not judged
    references = {
        "model's own + pinned callers": ModelReference(art, reference[~is_known(reference["kind"])]),
        "first traffic (before)": reference,
        "attacker's first traffic": shifted[attacker],
    }
    if args.platform_only:
        references = dict(list(references.items())[:1])
    missed: list[str] = []

    def verdict(frame: pd.DataFrame, seed: int, against: pd.DataFrame):
        t = time.perf_counter()
        result = drift.evaluate(frame, against, mon, popularity=popularity, seed=seed)
        d = policy.decide(result, [], mon, now=datetime.now(timezone.utc), window=(start, start), model_version="b")
        return d, time.perf_counter() - t

    ok = True
    summary = []
    platform_aa = (0, len(aa), 1.0)
    for label, against in references.items():
        ours = label.startswith("model")
        judged = aa if ours else aa[:20]
        aa_decisions = []
        for i, f in enumerate(judged):
            aa_decisions.append(verdict(f, args.seed + 1000 + i, against))
            print(f"\r  {label}: A/A window {i + 1}/{len(judged)} judged", end="", flush=True)
        print()
        fired = sum(d.retrain for d, _ in aa_decisions)
        why: dict[str, int] = {}  # every signal's A/A drift count, whether or not the policy fired on it
        for d, _ in aa_decisions:
            for name in d.drifted:
                why[name] = why.get(name, 0) + 1
        rate, bound = fired / len(judged), upper_bound(fired, len(judged))
        if ours:
            platform_aa = (fired, len(judged), bound)
        print(
            f"\nreference: {label}. The policy ({mon.embedding_method} {mon.embedding_threshold:g} on embeddings, "
            f"PSI > {mon.value_threshold:g}) on fresh A/A windows: {fired} of {len(judged)} fired = {rate:.0%} "
            f"(95 % upper bound {bound:.1%})"
            + (f" (bar: at most 5 %: {'met' if rate <= 0.05 else 'NOT met'})" if ours else "")
            + f"; windows per drifted signal: {why or 'none'}; {np.mean([t for _, t in aa_decisions]):.1f} s per window"
        )
        print(
            "2. the policy on injected drift, two fresh windows per strength; Recall@20 of the affected traffic "
            "(its probes' mixture at that strength) against no drift"
        )
        print(f"{'shift':<12}{'strength':>9}{'fired':>7}{'recall':>8}{'drop':>7}   drifted signals")
        caught = {}
        for scenario, strengths in SCENARIOS.items():
            if label.startswith("attacker") and scenario != "taste":  # the attacker's cohort is the point
                caught[scenario] = "."
                continue
            base = expected_recall(probe, scenario, 0.0)
            first_detected, first_drop = None, None
            for x in strengths:
                keys = [(scenario, x, i) for i in range(2) if (scenario, x, i) != attacker or ours]
                ds_ = [verdict(shifted[k], args.seed + 1050 + k[2], against)[0] for k in keys]
                hit = any(d.retrain for d in ds_)
                rec = expected_recall(probe, scenario, x)
                drop = 1 - rec / base if base > 0 else 0.0
                if hit and first_detected is None:
                    first_detected = x
                if drop >= 0.10 - 1e-9 and first_drop is None:
                    first_drop = x
                names = sorted({n for d in ds_ for n in d.drifted})
                print(
                    f"{scenario:<12}{x:>9g}{'yes' if hit else 'no':>7}{rec:>8.3f}{drop:>7.0%}"
                    f"   {', '.join(names) or '-'}"
                )
            met = first_drop is None or (first_detected is not None and first_detected <= first_drop)
            if ours:
                ok &= met
                missed += [] if met else [scenario]
            caught[scenario] = "-" if first_detected is None else f"{first_detected:g}"
            print(
                f"{'':<12}smallest strength detected: {first_detected}; Recall@20 down 10 % from: {first_drop} "
                f"(of the strengths tried); bar "
                + ("not reached (Recall@20 never dropped 10 %)" if first_drop is None else "met" if met else "NOT met")
            )
        if ours:
            ok &= rate <= 0.05
        summary.append((label, f"{fired} of {len(judged)}", caught))
    print(
        "\nsummary: fresh A/A windows that fired, and the smallest strength of each shift that fired "
        "(- none; . not run)"
    )
    print(f"{'reference':<32}{'A/A fired':>11}" + "".join(f"{s:>12}" for s in SCENARIOS))
    for label, aa_fired, caught in summary:
        print(f"{label:<32}{aa_fired:>11}" + "".join(f"{caught[s]:>12}" for s in SCENARIOS))

    # 3. cost: read and evaluate 10,000 and 100,000 logged records
    pool = pd.concat([reference, *aa], ignore_index=True)
    print("\n3. cost of one window (read the Parquet log, then evaluate every signal):")
    cost = {}
    for n in (10_000, 100_000):
        folder = work / f"cost-{n}"
        rows = pool.sample(n, replace=True, random_state=n).to_dict("records")
        now = datetime.now(timezone.utc)
        for r in rows:
            r["time"] = now
        for i in range(0, n, 5000):
            write_records(folder, rows[i : i + 5000])
        t = time.perf_counter()
        frame = read_window(folder).frame
        t_read = time.perf_counter() - t
        t = time.perf_counter()
        drift.evaluate(frame, references["model's own + pinned callers"], mon, popularity=popularity)
        cost[n] = (t_read, time.perf_counter() - t)
        bar = f"  (bar: under 60 s: {'met' if sum(cost[n]) < 60 else 'NOT met'})" if n == 100_000 else ""
        print(f"  {n:>7,} records: read {cost[n][0]:.1f} s + evaluate {cost[n][1]:.1f} s = {sum(cost[n]):.1f} s{bar}")

    fired, n_aa, bound = platform_aa
    ours_caught = summary[0][2]
    shifts_text = ", ".join(f"{s} {v}" for s, v in ours_caught.items())
    record.write(
        "drift",
        "python benchmarks/drift.py",
        [
            record.Figure(
                "policy",
                f"drift detection, movielens-100k-mm, {len(reference) + sum(map(len, windows.values())):,} requests "
                f"through the running servers and the inference log (windows of {args.window}); method "
                + (
                    f"chosen on {args.aa_dev} development A/A windows and their own shifted windows"
                    if args.method is None
                    else "given (--method; chosen on the development windows by a run without it)"
                )
                + f": {chosen[0]} {chosen[1]:g}; "
                f"reported on {n_aa} fresh A/A windows: {fired} fired ({fired / n_aa:.0%}, 95 % upper bound "
                f"{bound:.1%}); the smallest strength that fired per shift: {shifts_text}",
                beside=(
                    f"the first traffic as the reference: {summary[1][1]} A/A fired; an attacker's first traffic "
                    f"as the reference: {summary[2][1]} A/A fired, its cohort caught at {summary[2][2]['taste']}"
                    if len(summary) == 3
                    else "the comparison references not run (--platform-only)"
                ),
                readme=f"drift, {n_aa} fresh A/A windows: {fired} started a retraining (95 % upper bound {bound:.1%}); "
                + (
                    "each shift caught at or before a 10 % Recall@20 drop"
                    if ok
                    else f"shifts caught at {shifts_text}; not before a 10 % Recall@20 drop: {', '.join(missed)}"
                ),
                value=fired / n_aa,
                bar="A/A at most 5 %; each shift detected at or before a 10 % Recall@20 drop",
                met=ok,
            ),
            record.Figure(
                "cost",
                f"drift evaluation of 100,000 logged records: read {cost[100_000][0]:.1f} s + evaluate "
                f"{cost[100_000][1]:.1f} s = {sum(cost[100_000]):.1f} s",
                beside=f"10,000 records: {sum(cost[10_000]):.1f} s",
                value=sum(cost[100_000]),
                bar="under 60 s on 2 cores",
                met=sum(cost[100_000]) < 60,
            ),
        ],
        chosen={"method": chosen[0], "threshold": chosen[1], "settings_default": list(default)},
        development={f"{m} {t:g}": {"false_alarms": a, "caught": c} for (m, t), (a, c) in table.items()},
        probe=probe,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
