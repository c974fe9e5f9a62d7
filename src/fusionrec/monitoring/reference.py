"""The drift references: what a window of traffic is compared with. Neither is ever the first traffic after a
deploy, so no caller decides what drift is.

**The model's reference** is the model's own answers on trusted data, made when the version is written and
kept in it (``reference.parquet``, under the version's checksums), through the same
:class:`fusionrec.recommender.Recommender` the predictor runs: every training user (up to ``rows``) by
id (``user``); the same users as new users by the latest items of their stored history, at each of
:data:`HISTORY_LENGTHS` (``history``); anonymous requests (``fallback``). It stands for what the model
makes of its users: their vectors, the top score and the popularity of its answers.

**The query reference** is a window of real traffic an operator vouches for (``fusionrec monitor
reference --start --end``), its query rows kept under ``<monitoring>/reference/queries.parquet`` with the
identities of the encoders they were made by. Queries are the callers', not the model's: a text query is
not a catalogue description and a phone photo is not a poster, and nothing the catalogue can make stands
in for them (``benchmarks/drift.py`` measures the catalogue as a query reference: every A/A window
alarms). A query's vectors are in the encoders' spaces, so the pinned window serves every model version
with the same encoders; until one is pinned, the query rows are not compared and the decision says so.

What a caller chooses about a request is not compared either: which kinds are sent, their ``k``, the
history length, the latency. :func:`matched` draws the reference, for each window, in the window's own
mix of kinds (and history lengths), as many of each as the window has, and gives each reference row the
``k`` and latency of a window row of its kind, its answer cut to that ``k``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from fusionrec.monitoring.log import QUERY_MODALITIES

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference.parquet"
QUERIES_FILE, QUERIES_META = "queries.parquet", "queries.json"
REFERENCE_K = 100  # items kept per answer of the model's reference (the API's largest k): cut to each window row's k
# what a caller chooses about a request, taken from the window when the reference is matched to it
SHAPE = ("k", "history_length", "latency_ms")
ANONYMOUS_ROWS = 50
# the history lengths the ``history`` rows are made at; a window's history request is matched with the
# reference's rows of the nearest length at or below its own (a user vector from 3 items is not one from 50)
HISTORY_LENGTHS = (1, 2, 3, 5, 10, 20, 30, 50)  # fallback answers are one list: a few rows stand for every anonymous request


def build(artifact, *, rows: int = 2_000, seed: int = 0, batch: int = 256) -> pd.DataFrame:
    """The model's reference of a loaded version (:class:`fusionrec.registry.Artifact`) as log records.

    ``rows``: at most this many users, drawn at random (``seed``).
    """
    from fusionrec.recommender import Recommender, Row

    rec = Recommender(artifact)
    rng = np.random.default_rng(seed)
    now = datetime.now(timezone.utc)
    out: list[dict] = []

    def add(kind: str, results, history_lengths) -> None:
        for res, h in zip(results, history_lengths):
            out.append({"time": now, "request_id": f"reference-{len(out)}", "model_version": None,
                        "kind": kind, "user": None, "history_length": int(h), "k": len(res.item_ids),
                        "cold": bool(res.cold), "fallback": bool(res.fallback), "items": list(res.item_ids),
                        "scores": [float(s) for s in res.scores], "latency_ms": 0.0,
                        "user_vector": None if res.user_vector is None else res.user_vector.astype(np.float32).tolist(),
                        **{f"query_{m}": None for m in QUERY_MODALITIES}})

    k = min(REFERENCE_K, rec.n_items)
    users = artifact.users["user_id"].astype(str).to_numpy()
    users = users[np.sort(rng.permutation(len(users))[:rows])]
    for start in range(0, len(users), batch):
        part = users[start:start + batch]
        asked = [Row(kind="recommend", k=k, user_id=u) for u in part]
        add("user", rec.recommend(asked), [0] * len(asked))
        histories = [rec.item_ids[artifact.history[rec.user_index[u]][artifact.history_mask[rec.user_index[u]]]
                                  .numpy()].tolist() for u in part]
        # each user at each length a caller may send (the latest items of the stored history), where the
        # stored history is that long
        given = [(Row(kind="recommend", k=k, history=h[-n:]), n) for h in histories for n in HISTORY_LENGTHS
                 if len(h) >= n]
        if given:
            add("history", rec.recommend([g for g, _ in given]), [n for _, n in given])
    add("fallback", rec.recommend([Row(kind="recommend", k=k) for _ in range(ANONYMOUS_ROWS)]), [0] * ANONYMOUS_ROWS)

    return pd.DataFrame(out)


def write(artifact, folder: str | Path, **kwargs) -> Path:
    """Build the model's reference of ``artifact`` and write it as ``folder/reference.parquet``, of each
    answer its top score only (what the signals read)."""
    frame = build(artifact, **kwargs)
    frame["scores"] = [list(s)[:1] for s in frame["scores"]]
    path = Path(folder) / REFERENCE_FILE
    _write(frame, path)
    log.info("drift reference: %d answers of the model on its own users", len(frame))
    return path


def _write(frame: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fusionrec.monitoring.log import _schema

    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pylist(frame.to_dict("records"), schema=_schema()), tmp, compression="zstd")
    tmp.replace(path)


def of_artifact(artifact) -> pd.DataFrame:
    """A loaded version's reference: its ``reference.parquet`` (checked with the version's checksums when it
    was loaded), or, for a version written before the reference existed, built from the version now."""
    path = Path(artifact.path) / REFERENCE_FILE
    if path.is_file():
        return pd.read_parquet(path)
    log.warning("monitor: %s has no %s (written before it existed); building it from the version", artifact.version,
                REFERENCE_FILE)
    return build(artifact)


def is_query(kinds: pd.Series) -> pd.Series:
    """Which records are queries by example (text, image, like and their mixes)."""
    return ~kinds.astype(str).isin(["user", "history", "fallback"])


def query_identities(artifact) -> dict[str, str]:
    """The identities of the encoders a version's queries are made by (the query modalities it has)."""
    return {m: str(e.get("identity")) for m, e in sorted(artifact.encoders.items()) if m in QUERY_MODALITIES}


def pin_queries(frame: pd.DataFrame, identities: dict[str, str], folder: str | Path, *, window: tuple) -> Path:
    """Keep the query records of ``frame`` (a window an operator vouches for) as the query reference of the
    encoders ``identities``, under ``folder/queries.parquet`` (users left out) and ``queries.json``."""
    import json

    rows = frame[is_query(frame["kind"])].copy()
    rows["user"] = None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write(rows, folder / QUERIES_FILE)
    meta = {"encoders": identities, "records": len(rows), "start": str(window[0]), "end": str(window[1]),
            "pinned": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    tmp = folder / f".{QUERIES_META}.tmp"
    tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    tmp.replace(folder / QUERIES_META)
    return folder / QUERIES_FILE


def pinned_queries(folder: str | Path, identities: dict[str, str]) -> tuple[pd.DataFrame | None, str]:
    """The query reference pinned under ``folder`` when it was made by the encoders ``identities``, and why
    not otherwise."""
    import json

    folder = Path(folder)
    try:
        meta = json.loads((folder / QUERIES_META).read_text(encoding="utf-8"))
        frame = pd.read_parquet(folder / QUERIES_FILE)
    except FileNotFoundError:
        return None, "no query reference is pinned (fusionrec monitor reference --start ... --end ...)"
    except (OSError, ValueError) as e:
        return None, f"the pinned query reference cannot be read ({type(e).__name__})"
    if not isinstance(meta, dict) or meta.get("encoders") != identities:
        return None, "the pinned query reference was made by other encoders than the served model's; pin another"
    return frame, f"the query window pinned {str(meta.get('pinned'))[:25]}"


def _groups(frame: pd.DataFrame, kinds: set[str]) -> pd.Series:
    """Each row's group: its kind, or a composite query's first part the reference has (``text+image`` ->
    ``text``), or None when the reference has none; ``history`` rows by length (``history@10``)."""
    def group(kind: str, length: int) -> str | None:
        g = kind if kind in kinds else next((p for p in str(kind).split("+") if p in kinds), None)
        if g == "history":
            return f"history@{max([n for n in HISTORY_LENGTHS if n <= max(length, 1)])}"
        return g

    return pd.Series([group(str(k), int(h)) for k, h in zip(frame["kind"], frame["history_length"])], index=frame.index)


def matched(reference: pd.DataFrame, window: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Reference rows in the window's mix of kinds: as many of each kind (and history length) as the window
    has, each with the ``k`` and latency of a window row of its kind and its answer cut to that ``k``.

    A kind's rows are drawn without repeats while the reference has enough of them, and all of them plus
    repeats beyond that (a linear classifier, Evidently's test, gains nothing from a repeated row). Kinds
    (and history lengths) of the window the reference has nothing for are left out of the match.
    """
    rng = np.random.default_rng(seed)
    kinds = set(reference["kind"].astype(str))
    groups, ref_groups = _groups(window, kinds), _groups(reference, kinds)
    available = set(ref_groups.dropna())
    parts = []
    for g, n in groups[groups.isin(available)].value_counts().items():
        ref = reference[ref_groups == g]
        take = (rng.choice(len(ref), n, replace=False) if len(ref) >= n else
                np.concatenate([np.arange(len(ref)), rng.choice(len(ref), n - len(ref), replace=True)]))
        ref = ref.iloc[np.sort(take)].copy()
        shape = window[groups == g]
        shape = shape.iloc[rng.permutation(len(shape))]
        for col in SHAPE:
            ref[col] = shape[col].to_numpy()
        ks = ref["k"].astype(int).to_numpy()
        ref["items"] = [list(items)[:q] for items, q in zip(ref["items"], ks)]
        ref["scores"] = [list(scores)[:q] for scores, q in zip(ref["scores"], ks)]
        parts.append(ref)
    return pd.concat(parts, ignore_index=True) if parts else reference.iloc[:0]
