"""The drift references: what a window of traffic is compared with. Neither is ever the first traffic after a
deploy, so no caller decides what drift is.

A request either names what the model knows (a training user by id, or nobody: an anonymous request) or
brings what it does not (a new user's history, a text, a photo). The two are referred differently:

- **The model's own answers** (:class:`ModelReference`) for the first: the served version, through the
  same :class:`fusionrec.recommender.Recommender` the predictor runs, answering, for each such request of
  the window (up to ``draws`` of them each, in the window's mix), a training user by id at the same ``k``,
  or an anonymous request.
  The callers chose the kinds and the ``k``; the users and the answers come from the version, which is
  checksummed in the registry. It stands for the known users' vectors, the top scores and the popularity
  of the answers.
- **The callers' window** for the second: a window of real traffic an operator vouches for (``fusionrec
  monitor reference --start --end``), its ``history`` and query rows kept under
  ``<monitoring>/reference/callers.parquet`` with the identities of the encoders the queries were made by.
  What callers bring is theirs, not the model's: a text query is not a catalogue description, a phone
  photo is not a poster, a new user is not a training user, and nothing the version holds stands in for
  them (``benchmarks/drift.py`` measures the catalogue as a query reference and the training users as a
  new-user reference). A query's vectors are in the encoders' spaces, so the pinned queries serve every
  version with the same encoders; a new user's vector is in the model's, so the pinned history rows serve
  the version they were logged by only. What has no reference is not compared, and the decision says so.

Rows of the callers' window are drawn in the window's mix of kinds (:func:`matched`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from fusionrec.monitoring.log import QUERY_MODALITIES

log = logging.getLogger(__name__)

CALLERS_FILE, CALLERS_META = "callers.parquet", "callers.json"
KNOWN = ("user", "fallback")  # kinds of request that name only what the model knows
# what a caller chooses about a request, taken from the window row a reference row stands in for
SHAPE = ("kind", "k", "history_length", "latency_ms")
DRAWS = 2  # reference rows per window row


def is_known(kinds: pd.Series) -> pd.Series:
    """Which records name only what the model knows (a training user by id, or an anonymous request)."""
    return kinds.astype(str).isin(KNOWN)


def is_query(kinds: pd.Series) -> pd.Series:
    """Which records are queries by example (text, image, like and their mixes)."""
    return ~kinds.astype(str).isin([*KNOWN, "history"])


class ModelReference:
    """The model's own answers for a window's known-user and anonymous requests, and the ``callers``' pinned
    rows (logged records; None: none pinned) for the rest (see the module docstring)."""

    def __init__(self, artifact, callers: pd.DataFrame | None = None, draws: int = DRAWS) -> None:
        from fusionrec.recommender import Recommender

        self.callers = callers if callers is not None else pd.DataFrame(columns=["kind"])
        self.draws = draws
        self.rec = Recommender(artifact)
        self.users = artifact.users["user_id"].astype(str).to_numpy()
        self.theirs = set(self.callers["kind"].astype(str))  # the kinds the callers' window has rows of

    def covers(self, window: pd.DataFrame) -> pd.Series:
        """Which rows of ``window`` have something to be compared with."""
        return is_known(window["kind"]) | _groups(window, self.theirs).notna()

    def draw(self, window: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
        """Reference records for ``window`` (logged records), in its mix of kinds: the model's answers for its
        known-user and anonymous rows, the callers' pinned rows matched to the rest (:func:`scale`)."""
        from fusionrec.recommender import Row

        rng = np.random.default_rng(seed)
        known = window[is_known(window["kind"])]
        brought = window[~is_known(window["kind"])]
        pinned = self.callers
        groups = _groups(brought, self.theirs)
        times = scale(
            pd.concat([known[["kind"]], groups[groups.notna()].to_frame("kind")]),
            _groups(pinned, self.theirs).value_counts().to_dict(),
            self.draws,
        )
        parts = []
        for kind, group in known.groupby("kind"):
            shapes = group.iloc[rng.choice(len(group), int(times * len(group)), replace=times > 1)]
            if kind == "user":  # as traffic does: each user once while there are enough, then again
                users = self.users[rng.choice(len(self.users), len(shapes), replace=len(shapes) > len(self.users))]
            else:
                users = [None] * len(shapes)
            rows = [Row(kind="recommend", k=int(k), user_id=u) for k, u in zip(shapes["k"], users)]
            if rows:
                out = pd.DataFrame([_record(res, n) for n, res in enumerate(self.rec.recommend(rows))])
                for col in SHAPE:
                    out[col] = shapes[col].to_numpy()
                parts.append(out)
        if len(pinned) and len(brought):
            parts.append(matched(pinned, brought, seed, times))
        parts = [p for p in parts if len(p)]
        return pd.concat(parts, ignore_index=True) if parts else window.iloc[:0]


def scale(window: pd.DataFrame, available: dict[str, int], most: float = DRAWS) -> float:
    """How many reference rows per window row every kind can have without repeating a pinned one: at most
    ``most``, and no more than the scarcest kind allows (``available``: pinned rows per kind; a kind not
    named has no limit). One share for all kinds keeps the window's mix (a mix of other shares is told
    apart by the mix; a repeated query is memorised by a classifier in a space of more dimensions than
    rows; the model's known users repeat as in traffic, in a space of fewer)."""
    counts = window["kind"].astype(str).value_counts()
    shares = [available[k] / n for k, n in counts.items() if k in available and n]
    return float(min([most, *shares]))


def _record(res, n: int) -> dict:
    """A reference answer in the log's columns (the shape columns are the window's)."""
    return {
        "time": datetime.now(timezone.utc),
        "request_id": f"reference-{n}",
        "model_version": None,
        "user": None,
        "cold": bool(res.cold),
        "fallback": bool(res.fallback),
        "items": list(res.item_ids),
        "scores": [float(s) for s in res.scores],
        "user_vector": None if res.user_vector is None else res.user_vector.astype(np.float32).tolist(),
        **{f"query_{m}": None for m in QUERY_MODALITIES},
    }


def query_identities(artifact) -> dict[str, str]:
    """The identities of the encoders a version's queries are made by (the query modalities it has)."""
    return {m: str(e.get("identity")) for m, e in sorted(artifact.encoders.items()) if m in QUERY_MODALITIES}


def pin_callers(frame: pd.DataFrame, identities: dict[str, str], folder: str | Path, *, window: tuple) -> Path:
    """Keep the history and query records of ``frame`` (a window an operator vouches for) as the callers'
    reference, under ``folder/callers.parquet`` (users left out) and ``callers.json`` (the encoders'
    ``identities``, the window, the counts)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from fusionrec.io import atomic_write_text
    from fusionrec.monitoring.log import _schema

    rows = frame[~is_known(frame["kind"])].copy()
    rows["user"] = None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{CALLERS_FILE}.tmp"
    pq.write_table(pa.Table.from_pylist(rows.to_dict("records"), schema=_schema()), tmp, compression="zstd")
    tmp.replace(folder / CALLERS_FILE)
    meta = {
        "encoders": identities,
        "start": str(window[0]),
        "end": str(window[1]),
        "kinds": {str(k): int(n) for k, n in rows["kind"].value_counts().items()},
        "versions": sorted(str(v) for v in rows["model_version"].unique()),
        "pinned": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(folder / CALLERS_META, json.dumps(meta, indent=2))
    return folder / CALLERS_FILE


def pinned_callers(folder: str | Path, identities: dict[str, str], version: str) -> tuple[pd.DataFrame | None, str]:
    """The callers' rows pinned under ``folder`` that serve ``version``: its queries when they were made by
    the encoders ``identities``, its history rows when ``version`` logged them; and what is missing, in words."""
    import json

    folder = Path(folder)
    try:
        meta = json.loads((folder / CALLERS_META).read_text(encoding="utf-8"))
        frame = pd.read_parquet(folder / CALLERS_FILE)
    except FileNotFoundError:
        return None, "no callers' window is pinned (fusionrec monitor reference --start ... --end ...)"
    except (OSError, ValueError) as e:
        return None, f"the pinned callers' window cannot be read ({type(e).__name__})"
    same = isinstance(meta, dict) and meta.get("encoders") == identities
    keep = (is_query(frame["kind"]) & same) | ((frame["kind"] == "history") & (frame["model_version"] == version))
    missing = [
        *([] if same else ["its queries were made by other encoders"]),
        *([] if (keep & (frame["kind"] == "history")).any() else [f"it holds no history requests of {version}"]),
    ]
    why = f"the callers' window pinned {str(meta.get('pinned'))[:25]}" + (f" ({'; '.join(missing)})" if missing else "")
    return (frame[keep].reset_index(drop=True) if keep.any() else None), why


def _group(kind: str, kinds: set[str]) -> str | None:
    """A kind's group among the reference's ``kinds``: the kind itself, or the query it was made from (a
    one-space query ``text>image`` -> ``text``: the same vectors, searched elsewhere), or a composite
    query's first part (``text+image`` -> ``text``), or None when the reference has none."""
    if kind in kinds:
        return kind
    made = kind.split(">", 1)[0]
    if made in kinds:
        return made
    return next((p for p in made.split("+") if p in kinds), None)


def _groups(frame: pd.DataFrame, kinds: set[str]) -> pd.Series:
    """Each row's group (:func:`_group`)."""
    return frame["kind"].astype(str).map(lambda kind: _group(kind, kinds))


def matched(reference: pd.DataFrame, window: pd.DataFrame, seed: int = 0, times: float | None = None) -> pd.DataFrame:
    """Rows of ``reference`` (logged records) in the window's mix of kinds: ``times`` per window row of a kind
    the reference has (default: as many as every kind allows, at most :data:`DRAWS`; never a row twice), each
    given the ``k`` and latency of a window row of its group (:func:`_group`), the kind of that row
    (``stands_for``) and its answer cut to that ``k``. Kinds the reference has nothing for are left out."""
    rng = np.random.default_rng(seed)
    kinds = set(reference["kind"].astype(str))
    groups, ref_groups = _groups(window, kinds), _groups(reference, kinds)
    window, groups = window[groups.notna()], groups[groups.notna()]
    if times is None:
        times = scale(window.assign(kind=groups), ref_groups.value_counts().to_dict())
    parts = []
    for g, n in groups.value_counts().items():
        ref = reference[ref_groups == g]
        ref = ref.iloc[np.sort(rng.choice(len(ref), min(len(ref), int(times * n)), replace=False))].copy()
        shape = window[groups == g]
        shape = shape.iloc[rng.choice(len(shape), len(ref), replace=True)]
        for col in SHAPE[1:]:
            ref[col] = shape[col].to_numpy()
        ref["stands_for"] = shape["kind"].astype(str).to_numpy()  # the window kind a pinned row stands in for
        ks = ref["k"].astype(int).to_numpy()
        ref["items"] = [list(items)[:q] for items, q in zip(ref["items"], ks)]
        ref["scores"] = [list(scores)[:q] for scores, q in zip(ref["scores"], ks)]
        parts.append(ref)
    return pd.concat(parts, ignore_index=True) if parts else reference.iloc[:0]
