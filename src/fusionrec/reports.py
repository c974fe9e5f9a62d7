"""Reports people look at: the challenger/champion gallery (HTML, self-contained, for the Kubeflow UI).

For a few sample users, the pictures and titles of their history beside the top 10 of the challenger
and of the champion; a recommended item the user went on to interact with (their held-out test items)
is framed green, an item only one of the two models shows is marked, so an engineer sees at a glance
what changed.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

THUMB = 72  # pixels, the longer side


def thumbnail(path: str | None, size: int = THUMB) -> str | None:
    """A small JPEG data URI of an image file, or None when there is no readable image."""
    if not path or "://" in str(path):
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=80)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass
class GalleryRow:
    """One sample user: their history and each model's top K (item indices), and their held-out items."""

    user_id: str
    history: list[int]
    challenger: list[int]
    champion: list[int] | None
    held_out: set[int]


def sample_rows(
    dataset, challenger: Path, champion: Path | None, *, users: int = 4, k: int = 10, seed: int = 0
) -> list[GalleryRow]:
    """Pick ``users`` users who have held-out test items (the challenger's split) and rank for them."""
    from fusionrec import metrics as metrics_file
    from fusionrec.artifact import load_artifact
    from fusionrec.data.splits import make_split
    from fusionrec.recommender import Recommender, Row

    split_info = metrics_file.read(challenger).split
    split = make_split(dataset, split_info.protocol, seed=split_info.seed)
    rng = np.random.default_rng(seed)
    with_test = np.unique(split.test["user_idx"].to_numpy())
    chosen = np.sort(rng.choice(with_test, size=min(users, len(with_test)), replace=False))
    user_ids = dataset.users.set_index("user_idx")["user_id"].astype(str)
    item_ids = dataset.items.set_index("item_idx")["item_id"].astype(str)
    item_index = {i: n for n, i in item_ids.items()}
    models = {"challenger": Recommender(load_artifact(challenger))}
    if champion is not None:
        models["champion"] = Recommender(load_artifact(champion))
    rows = []
    for u in chosen:
        uid = user_ids.loc[u]
        train = split.train[split.train["user_idx"] == u].sort_values("timestamp")
        # exclude what the models learnt from, not the held-out items (serving would exclude those too)
        known = item_ids.loc[
            np.concatenate(
                [train["item_idx"].to_numpy(), split.valid.loc[split.valid["user_idx"] == u, "item_idx"].to_numpy()]
            )
        ]
        row = Row("recommend", k, user_id=uid, exclude_seen=False, exclude=known.tolist())
        tops = {name: [item_index[i] for i in rec.recommend([row])[0].item_ids] for name, rec in models.items()}
        rows.append(
            GalleryRow(
                uid,
                train["item_idx"].tolist()[-k:][::-1],
                tops["challenger"],
                tops.get("champion"),
                set(split.test.loc[split.test["user_idx"] == u, "item_idx"].tolist()),
            )
        )
    return rows


def gallery_html(dataset, rows: list[GalleryRow], *, title: str) -> str:
    """The gallery as one self-contained HTML page (images inlined)."""
    items = dataset.items.set_index("item_idx")
    titles = (items["title"] if "title" in items else items["item_id"]).astype(str)
    images = items["image"] if "image" in items else None
    cache: dict[int, str | None] = {}

    def card(i: int, *, hit: bool = False, only: bool = False) -> str:
        if i not in cache:
            cache[i] = thumbnail(images.loc[i] if images is not None else None)
        src = cache[i]
        pic = f'<img src="{src}" alt="">' if src else '<div class="noimg">no image</div>'
        cls = "card" + (" hit" if hit else "") + (" only" if only else "")
        title = html.escape(titles.loc[i])
        return f'<div class="{cls}" title="{title}">{pic}<span>{html.escape(titles.loc[i][:40])}</span></div>'

    def strip(label: str, ids: list[int] | None, other: list[int] | None, held_out: set[int]) -> str:
        if ids is None:
            return f'<tr><th>{label}</th><td class="none">no champion yet</td></tr>'
        cards = "".join(card(i, hit=i in held_out, only=other is not None and i not in other) for i in ids)
        hits = sum(i in held_out for i in ids)
        return f"<tr><th>{label}<br><small>{hits} of {len(ids)} held out</small></th><td>{cards}</td></tr>"

    body = []
    for r in rows:
        body.append(
            f'<h2>user {html.escape(r.user_id)}</h2><table>'
            f'<tr><th>history<br><small>latest first</small></th><td>{"".join(card(i) for i in r.history)}</td></tr>'
            f'{strip("challenger", r.challenger, r.champion, r.held_out)}'
            f'{strip("champion", r.champion, r.challenger, r.held_out)}</table>'
        )
    style = (
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}th{text-align:left;width:8em;"
        "vertical-align:top;padding:4px}td{padding:4px}.card{display:inline-block;width:84px;margin:2px;"
        "vertical-align:top;font-size:10px;border:3px solid transparent}.card img,.noimg{width:72px;height:72px;"
        "object-fit:cover;display:block;background:#eee;font-size:9px}.hit{border-color:#2a2}"
        ".only{box-shadow:0 0 0 2px #e90 inset}.none{color:#888}"
    )
    legend = (
        '<p><span class="card hit">green frame</span>: an item the user went on to interact with (held out '
        'from training); <span class="card only">orange edge</span>: shown by this model only.</p>'
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{legend}{''.join(body)}</body></html>"
    )
