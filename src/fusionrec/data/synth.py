"""Synthetic multimodal datasets with planted tastes that only the fused modalities reveal.

Each item has a *genre*, told only by its text (the words of its description), a *colour* and a
*shape*, shown only by its image (a rendered picture), and a *tempo*, carried only by a precomputed
``audio`` vector. Each user likes one genre and one colour; whom they interact with follows
``popularity + genre match + colour match``. A text-only model can learn half of a user's taste, an
image-only model the other half, a fused model all of it. Tempo is a distractor nobody cares about.

The output is a ``raw_catalogue`` dataset with its contract (``dataset.yaml``) plus the hidden truth
(``truth/``) for tests. Deterministic per seed. Optional planted defects exercise validation.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

GENRES = {
    "mystery": ["detective", "clue", "secret", "investigation", "suspect", "riddle", "alibi"],
    "comedy": ["hilarious", "prank", "jokes", "laughter", "silly", "comic", "farce"],
    "romance": ["love", "heart", "wedding", "kiss", "passion", "lovers", "courtship"],
    "science": ["robot", "spaceship", "galaxy", "laboratory", "experiment", "android", "planet"],
    "horror": ["ghost", "haunted", "monster", "nightmare", "scream", "vampire", "curse"],
    "sport": ["football", "stadium", "champion", "race", "coach", "tournament", "athlete"],
}
COLOURS = {
    "red": (210, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 210),
    "yellow": (230, 200, 30),
    "purple": (140, 50, 170),
    "orange": (240, 130, 20),
}
SHAPES = ("circle", "square", "triangle", "star")
TEXTURES = ("plain", "stripes", "dots")
TEMPOS = ("slow", "medium", "fast")
MOODS = ["quiet", "bold", "gentle", "strange", "bright", "dark", "warm", "restless", "classic", "modern"]
FILLER = ["story", "tale", "journey", "chronicle", "portrait", "adventure", "saga", "sketch"]
NOUNS = [
    "Harbor",
    "Window",
    "Garden",
    "Bridge",
    "River",
    "Tower",
    "Letter",
    "Island",
    "Market",
    "Mirror",
    "Forest",
    "Lantern",
    "Station",
    "Canyon",
    "Orchard",
    "Signal",
]
REGIONS = ["north", "south", "east", "west", "centre"]
AUDIO_DIM = 16
# The long-tail shop: 8 purchases a user, a flat popularity, families of 2-6 colours; about half of a
# shopper's purchases are another colour of a product they already bought (drawn by their colour), the
# way shop baskets repeat a cut in several colours: an ID model never sees the new colour, content does.
LONGTAIL = {"per_user": 8, "popularity_weight": 0.25, "variants": (2, 6), "siblings": 0.5}
START_TS = 1_704_067_200  # 2024-01-01


class SynthConfig(BaseModel):
    """How big and how noisy the synthetic dataset is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(1000, ge=1)
    items: int = Field(500, ge=1)
    interactions: int | None = Field(None, ge=1)  # default: 30 per user
    seed: int = 0
    image_size: int = Field(64, ge=16, le=512)
    genre_weight: float = 2.0  # taste strength, in logits
    colour_weight: float = 2.0
    popularity_weight: float = 1.0
    defects: float = Field(0.0, ge=0.0, le=0.5)  # share of items/interactions given a planted defect
    workers: int = Field(0, ge=0)  # image-rendering processes; 0 = number of CPUs
    # "dense": movie-like, every item drawn by popularity and taste. "longtail": shop-like (see LONGTAIL):
    # product families of one shape, texture and description in 2-6 colours, article numbers with a
    # leading zero as ids, a flat popularity, 8 interactions per user by default: most items are bought
    # once or twice, and a user's taste shows in the content of what they bought.
    catalogue: Literal["dense", "longtail"] = "dense"
    # "names": a title of its own per item that tells nothing ("The Quiet Harbor 12"). "shop": a shop's
    # catalogue: titles that name the product's shape and colour, and its pattern for half the families
    # ("Striped star tee, red", "Star tee, blue"), what a text can teach of a photo (fusionrec.bridge); and
    # photos that carry their family's own print, the same on every colour, as one product's photos do.
    # The interactions are the same.
    titles: Literal["names", "shop"] = "names"


@dataclass
class SynthResult:
    """Where the dataset went and what was planted."""

    folder: Path
    contract_path: Path
    counts: dict[str, int]
    defects: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, object]:
        return {
            "folder": str(self.folder),
            **self.counts,
            "planted_defects": self.defects,
            "seconds": round(self.seconds, 2),
        }


def _render(args: tuple[str, str, str, str, int, int, int | None]) -> None:
    """Draw one item's picture: its colour and shape over a neutral textured background, and its family's
    print over the shape where it has one (``motif``: the print's seed)."""
    from PIL import Image, ImageDraw

    path, colour, shape, texture, size, seed, motif = args
    rng = np.random.default_rng(seed)
    bg = tuple(int(v) for v in rng.integers(200, 250, 3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    grey = tuple(int(v) for v in rng.integers(120, 180, 3))
    step = max(4, size // 8)
    if texture == "stripes":
        for x in range(0, size, step):
            d.line([(x, 0), (x, size)], fill=grey, width=max(1, size // 32))
    elif texture == "dots":
        for x in range(step // 2, size, step):
            for y in range(step // 2, size, step):
                d.ellipse([x - 1, y - 1, x + 1, y + 1], fill=grey)
    rgb = np.clip(np.array(COLOURS[colour]) + rng.integers(-15, 16, 3), 0, 255)
    fill = tuple(int(v) for v in rgb)
    m = size * (0.15 + 0.1 * rng.random())
    box = [m, m, size - m, size - m]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    elif shape == "triangle":
        d.polygon([(size / 2, m), (size - m, size - m), (m, size - m)], fill=fill)
    else:
        c, r_out, r_in = size / 2, size / 2 - m, (size / 2 - m) * 0.45
        pts = []
        for k in range(10):
            r = r_out if k % 2 == 0 else r_in
            a = np.pi / 2 + k * np.pi / 5
            pts.append((c + r * np.cos(a), c - r * np.sin(a)))
        d.polygon(pts, fill=fill)
    if motif is not None:  # the family's print: the same few dark marks on every colour of the product
        r = np.random.default_rng(motif)
        for _ in range(8):
            ink = (25, 25, 25) if r.random() < 0.6 else (245, 245, 245)
            x, y = r.uniform(0.3, 0.7, 2) * size
            w = size * r.uniform(0.06, 0.16)
            kind = int(r.integers(0, 3))
            if kind == 0:
                d.ellipse([x - w, y - w, x + w, y + w], fill=ink)
            elif kind == 1:
                d.rectangle([x - w, y - w / 2, x + w, y + w / 2], fill=ink)
            else:
                d.line([(x - w, y - w), (x + w, y + w)], fill=ink, width=max(1, size // 24))
    img.save(path, format="JPEG", quality=90)


def _describe(rng: np.random.Generator, genre: str) -> str:
    words = rng.choice(GENRES[genre], size=3, replace=False)
    mood, filler = rng.choice(MOODS), rng.choice(FILLER)
    return (
        f"A {mood} {filler} of {words[0]} and {words[1]}. "
        f"Everything turns on the {words[2]}, and nothing is quite what it seems."
    )


def _with_siblings(
    rng: np.random.Generator,
    ranked: np.ndarray,
    n: int,
    family: np.ndarray,
    starts: np.ndarray,
    liked_colour: np.ndarray,
) -> np.ndarray:
    """A long-tail shopper's ``n`` purchases: the first by taste (``ranked``, best first), the rest (a
    share LONGTAIL["siblings"]) other colours of the families already bought, the shopper's own colour
    first (then at random); taste fills in where the families have run out."""
    anchors = ranked[: max(1, n - int(n * LONGTAIL["siblings"]))]
    members = np.concatenate([np.arange(starts[f], starts[f + 1]) for f in family[anchors]])
    members = np.setdiff1d(members, anchors)
    key = liked_colour[members] * 2.0 + rng.random(len(members))
    picked = members[np.argsort(-key, kind="stable")][: n - len(anchors)]
    out = np.concatenate([anchors, picked])
    if len(out) < n:
        rest = ranked[~np.isin(ranked, out)]
        out = np.concatenate([out, rest[: n - len(out)]])
    return out


PRODUCTS = ("tee", "top", "dress", "bag", "scarf", "cap", "mug", "cushion")
PATTERN_WORDS = {"plain": "plain", "stripes": "striped", "dots": "dotted"}


def _shop_titles(seed, family, shape, texture, colour, colours) -> list[str]:
    """A shop's titles (``SynthConfig.titles``): a product noun per family, its shape and colour, and its
    pattern for a random half of the families; drawn from a generator of their own, so the rest of the
    dataset does not change with them."""
    rng = np.random.default_rng([seed, 7919])
    n_families = int(family.max()) + 1
    noun = rng.integers(0, len(PRODUCTS), n_families)
    named = rng.random(n_families) < 0.5
    out = []
    for f, s, t, c in zip(family.tolist(), shape.tolist(), texture.tolist(), colour.tolist()):
        pattern = f"{PATTERN_WORDS[TEXTURES[t]]} " if named[f] else ""
        out.append(f"{pattern}{SHAPES[s]} {PRODUCTS[noun[f]]}, {colours[c]}".capitalize())
    return out


def _descriptions(rng: np.random.Generator, genres: list[str], item_genre: np.ndarray, family: np.ndarray) -> list[str]:
    """One description per family (an item of its own family in the dense catalogue)."""
    text: dict[int, str] = {}
    for f, g in zip(family.tolist(), item_genre):
        if f not in text:
            text[f] = _describe(rng, genres[g])
    return [text[f] for f in family.tolist()]


def _contract(cfg: SynthConfig) -> dict:
    kind = "" if cfg.catalogue == "dense" else f"-{cfg.catalogue}"
    return {
        "name": f"synthetic{kind}-{cfg.users}u-{cfg.items}i-s{cfg.seed}",
        "format": "raw_catalogue",
        "description": "fusionrec synthetic dataset: genre in the text, colour and shape in the image, tempo in audio",
        "root": ".",
        "interactions": {
            "path": "interactions.parquet",
            "roles": {"user_id": "user_id", "item_id": "item_id", "rating": "rating", "timestamp": "timestamp"},
            "timestamp_unit": "s",
            "rating_range": [1, 5],
            "implicit": {"min_rating": None},
        },
        "items": {
            "path": "items.csv",
            "roles": {
                "item_id": "item_id",
                "title": "title",
                "text": ["title", "description"],
                "image": "image",
                "side_features": ["price", "year"],
            },
        },
        "users": {"path": "users.csv", "roles": {"user_id": "user_id", "side_features": ["age", "region"]}},
        "modalities": [{"name": "audio", "path": "audio.npy", "ids_path": "audio_ids.txt", "dim": AUDIO_DIM}],
    }


def generate(cfg: SynthConfig, out: str | Path, *, progress: bool = True) -> SynthResult:
    """Write a synthetic dataset and its contract to ``out`` (replaced atomically).

    Returns:
        SynthResult with the counts written and the defects planted.
    """
    import time

    import yaml

    from fusionrec.io import atomic_dir
    from fusionrec.progress import progress as progress_bar

    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    n_u, n_i = cfg.users, cfg.items
    longtail = cfg.catalogue == "longtail"
    target = cfg.interactions or (LONGTAIL["per_user"] if longtail else 30) * n_u
    popularity_weight = LONGTAIL["popularity_weight"] if longtail else cfg.popularity_weight

    genres, colours = list(GENRES), list(COLOURS)
    if longtail:  # families of one genre, shape and texture in 2-6 distinct colours
        low, high = LONGTAIL["variants"]
        sizes = []
        while sum(sizes) < n_i:
            sizes.append(int(rng.integers(low, high + 1)))
        sizes[-1] -= sum(sizes) - n_i
        family = np.repeat(np.arange(len(sizes)), sizes)
        fam_genre, fam_shape, fam_texture = (rng.integers(0, n, len(sizes)) for n in (len(genres), 4, 3))
        item_genre, item_shape, item_texture = fam_genre[family], fam_shape[family], fam_texture[family]
        item_colour = np.concatenate([rng.permutation(len(colours))[:k] for k in sizes])
        variant = np.concatenate([np.arange(k) for k in sizes])
        item_ids = np.array([f"0{f:06d}{v:03d}" for f, v in zip(family, variant)])  # article numbers
    else:
        family = np.arange(n_i)
        item_genre = rng.integers(0, len(genres), n_i)
        item_colour = rng.integers(0, len(colours), n_i)
        item_shape = rng.integers(0, len(SHAPES), n_i)
        item_texture = rng.integers(0, len(TEXTURES), n_i)
        item_ids = np.array([f"item-{k:06d}" for k in range(n_i)])
    item_tempo = rng.integers(0, len(TEMPOS), n_i)
    popularity = -np.log(np.arange(1, n_i + 1, dtype=np.float64))[rng.permutation(n_i)] * 0.5
    user_ids = np.array([f"user-{k:07d}" for k in range(n_u)])
    user_genre = rng.integers(0, len(genres), n_u)
    user_colour = rng.integers(0, len(colours), n_u)

    # Interactions per user: heavy-tailed, summing to about `target`, at most half the catalogue.
    weights = rng.lognormal(0.0, 0.8, n_u)
    cap = max(1, n_i // 2)
    share = target * weights / weights.sum()
    per_user = np.clip(np.floor(share), 2 if longtail else 1, cap).astype(np.int64)
    order = np.argsort(-(share - np.floor(share)), kind="stable")  # largest remainder first
    short = target - int(per_user.sum())
    while short > 0 and (per_user < cap).any():
        room = order[per_user[order] < cap][:short]
        per_user[room] += 1
        short -= len(room)

    # Sample each user's items without replacement by Gumbel-top-k, one taste profile at a time.
    starts = np.searchsorted(family, np.arange(family.max() + 2))  # family f: items starts[f]:starts[f + 1]
    rows_u, rows_i, rows_s = [], [], []
    profiles = user_genre * len(colours) + user_colour
    for prof in progress_bar(np.unique(profiles), desc="interactions", unit="profile", enabled=progress):
        users = np.flatnonzero(profiles == prof)
        g, c = divmod(int(prof), len(colours))
        score = (
            popularity_weight * popularity
            + cfg.genre_weight * (item_genre == g)
            + cfg.colour_weight * (item_colour == c)
        )
        k_max = int(per_user[users].max())
        for chunk in np.array_split(users, max(1, len(users) * n_i // 5_000_000 + 1)):
            keys = score[None, :] + rng.gumbel(size=(len(chunk), n_i))
            top = (
                np.argpartition(-keys, k_max - 1, axis=1)[:, :k_max]
                if k_max < n_i
                else np.tile(np.arange(n_i), (len(chunk), 1))
            )
            # best first, so that a user's first per_user[u] are their Gumbel top-k (a sample without
            # replacement by taste), not any per_user[u] of the chunk's top k_max
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1), axis=1)
            for row, u in enumerate(chunk):
                if longtail:
                    chosen = _with_siblings(rng, top[row], per_user[u], family, starts, item_colour == c)
                else:
                    chosen = top[row, : per_user[u]]
                rows_u.append(np.full(len(chosen), u))
                rows_i.append(chosen)
                rows_s.append(score[chosen] - popularity_weight * popularity[chosen])
    u_idx = np.concatenate(rows_u)
    i_idx = np.concatenate(rows_i)
    affinity = np.concatenate(rows_s)
    rating = np.clip(np.rint(2.2 + 0.6 * affinity + rng.normal(0, 0.8, len(u_idx))), 1, 5).astype(np.int64)
    timestamp = START_TS + rng.integers(0, 365 * 86_400, len(u_idx))

    defects: dict[str, int] = {}
    n_bad_items = int(round(cfg.defects * n_i))
    n_bad_inter = int(round(cfg.defects * len(u_idx)))

    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": (
                _shop_titles(cfg.seed, family, item_shape, item_texture, item_colour, colours)
                if cfg.titles == "shop"
                else [
                    f"The {MOODS[k % len(MOODS)].title()} {NOUNS[(k // len(MOODS)) % len(NOUNS)]} {k}"
                    for k in range(n_i)
                ]
            ),
            # a family shares one description (a shop's product text names the product, not the colour)
            "description": _descriptions(rng, genres, item_genre, family),
            "image": [f"images/{i}.jpg" for i in item_ids],
            "price": np.round(rng.lognormal(2.5, 0.6, n_i), 2),
            "year": rng.integers(1990, 2025, n_i),
        }
    )
    users = pd.DataFrame({"user_id": user_ids, "age": rng.integers(16, 80, n_u), "region": rng.choice(REGIONS, n_u)})
    inter = pd.DataFrame(
        {"user_id": user_ids[u_idx], "item_id": item_ids[i_idx], "rating": rating, "timestamp": timestamp}
    )
    audio = np.eye(len(TEMPOS), AUDIO_DIM, dtype=np.float32)[item_tempo] * 2.0 + rng.normal(
        0, 0.3, (n_i, AUDIO_DIM)
    ).astype(np.float32)

    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        jobs = [
            (
                str(tmp / "images" / f"{item_ids[k]}.jpg"),
                colours[item_colour[k]],
                SHAPES[item_shape[k]],
                TEXTURES[item_texture[k]],
                cfg.image_size,
                cfg.seed * 1_000_003 + k,
                cfg.seed * 1_000_003 + 7919 * int(family[k]) + 1 if cfg.titles == "shop" else None,
            )
            for k in range(n_i)
        ]
        workers = cfg.workers or os.cpu_count() or 1
        if workers > 1 and n_i >= 200:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                list(
                    progress_bar(
                        pool.map(_render, jobs, chunksize=256), total=n_i, desc="images", unit="img", enabled=progress
                    )
                )
        else:
            for job in progress_bar(jobs, desc="images", unit="img", enabled=progress):
                _render(job)

        if n_bad_items:
            picks = rng.choice(n_i, size=min(n_i, 4 * n_bad_items), replace=False)
            missing, corrupt, no_text, dupes = np.array_split(picks, 4)
            for k in missing:
                (tmp / "images" / f"{item_ids[k]}.jpg").unlink()
            for k in corrupt:
                (tmp / "images" / f"{item_ids[k]}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
            items.loc[no_text, "description"] = None
            items = pd.concat([items, items.iloc[dupes]], ignore_index=True)
            defects.update(
                missing_images=len(missing),
                corrupt_images=len(corrupt),
                missing_text=len(no_text),
                duplicate_items=len(dupes),
            )
        if n_bad_inter:
            bad = rng.choice(len(inter), size=n_bad_inter, replace=False)
            unknown, bad_rating = np.array_split(bad, 2)
            inter["rating"] = inter["rating"].astype(object)
            inter.loc[unknown, "item_id"] = [f"ghost-{k}" for k in range(len(unknown))]
            inter.loc[bad_rating, "rating"] = "n/a"
            inter["rating"] = inter["rating"].astype(str)
            defects.update(unknown_items=len(unknown), bad_ratings=len(bad_rating))

        items.to_csv(tmp / "items.csv", index=False)
        users.to_csv(tmp / "users.csv", index=False)
        inter.to_parquet(tmp / "interactions.parquet", index=False)
        np.save(tmp / "audio.npy", audio)
        (tmp / "audio_ids.txt").write_text("\n".join(item_ids) + "\n", encoding="utf-8")
        (tmp / "truth").mkdir()
        pd.DataFrame(
            {
                "item_id": item_ids,
                "genre": np.array(genres)[item_genre],
                "colour": np.array(colours)[item_colour],
                "shape": np.array(SHAPES)[item_shape],
                "texture": np.array(TEXTURES)[item_texture],
                "family": family,
                "tempo": np.array(TEMPOS)[item_tempo],
            }
        ).to_parquet(tmp / "truth" / "items.parquet", index=False)
        pd.DataFrame(
            {"user_id": user_ids, "genre": np.array(genres)[user_genre], "colour": np.array(colours)[user_colour]}
        ).to_parquet(tmp / "truth" / "users.parquet", index=False)
        counts = {"users": n_u, "items": n_i, "interactions": len(inter)}
        (tmp / "truth" / "truth.json").write_text(
            json.dumps({"config": cfg.model_dump(exclude={"workers"}), "counts": counts, "defects": defects}, indent=2),
            encoding="utf-8",
        )
        contract = _contract(cfg)
        if n_bad_items or n_bad_inter:  # the planted defects fit inside these budgets
            budget = min(0.5, 2 * cfg.defects + 0.01)
            contract["checks"] = {
                k: {"budget": budget}
                for k in (
                    "items.item_id_unique",
                    "items.text_present",
                    "items.image_present",
                    "items.image_decodes",
                    "interactions.item_known",
                    "interactions.rating_is_number",
                )
            }
        (tmp / "dataset.yaml").write_text(
            "# Written by 'fusionrec data synth'; paths are relative to this folder.\n"
            + yaml.safe_dump(contract, sort_keys=False),
            encoding="utf-8",
        )
    out = Path(out)
    return SynthResult(out, out / "dataset.yaml", counts, defects, time.perf_counter() - t0)
