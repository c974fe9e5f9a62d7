"""Drift of a window of logged traffic against the model's reference, computed by Evidently (0.7 API).

The reference is the model's own answers on trusted data (``monitoring/reference.py``), drawn for each
window in the window's request shapes (the kinds, ``k``, history lengths and latencies of its rows):
what callers choose to ask is theirs, not a sign that the model is stale, so it is reported (``stats``:
the kind shares, the mean ``k`` and history length) and never compared. Signals, each a drift score from
Evidently and a verdict against its threshold:

- what the model answers, by PSI: the top score of a recommendation (``top_score``: the model's logit), the
  top similarity of a query by example (``query_score``: how well the best item matches a photo or a
  text; it falls when queries stop looking like the catalogue; compared between queries of the same kind
  only, since each kind's similarity lies in the space it searched), and the popularity of what is
  returned (``popularity``: the mean log1p training-interaction count of the returned items);
- embeddings (``EmbeddingsDrift``): the user vectors and the query vectors of text and image queries,
  each over the rows that carry one, by the method and threshold in the settings (chosen by
  ``benchmarks/drift.py``).

A signal whose rows number fewer than ``min_records`` on either side is "not enough data": it is neither
drifted nor quiet, and never raises an alarm. One Evidently report per row set (all requests, users,
text queries, image queries) gives the HTML reports and the snapshots the dashboard plots.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fusionrec.config import MonitoringSettings
from fusionrec.monitoring.log import QUERY_MODALITIES

log = logging.getLogger(__name__)

VALUE_SIGNALS = ("top_score", "query_score", "popularity")
EMBEDDING_SIGNALS = ("user_vector", *(f"query_{m}" for m in QUERY_MODALITIES))
NUMERIC = ("history_length", "k", "top_score", "query_score", "popularity", "latency_ms", "fallback", "cold")
# Evidently draws a t-SNE picture of SAMPLE_CONSTANT rows per side with every embedding-drift result; at its
# default of 2,500 rows the picture costs far more than the statistic (benchmarks/drift.py times a window).
TSNE_ROWS = 300


@dataclass
class Signal:
    """One signal's outcome in one window."""

    name: str
    score: float | None  # Evidently's drift score (None: not enough data)
    threshold: float
    drifted: bool | None  # None: not enough data
    rows: int  # current rows the signal was computed on
    method: str


@dataclass
class DriftResult:
    """A window's drift: its signals, the request statistics, and the Evidently snapshots."""

    records: int
    enough: bool
    signals: list[Signal] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)  # volume, latency, fallback and cold-user rates
    snapshots: dict[str, Any] = field(default_factory=dict)  # report name -> evidently Snapshot

    @property
    def evaluated(self) -> list[Signal]:
        return [s for s in self.signals if s.drifted is not None]

    @property
    def drifted(self) -> list[Signal]:
        return [s for s in self.signals if s.drifted]

    @property
    def share(self) -> float | None:
        """The share of evaluated signals that drifted (None when none could be evaluated)."""
        return len(self.drifted) / len(self.evaluated) if self.evaluated else None


def scalar_features(frame: pd.DataFrame, popularity: dict[str, float] | None = None) -> pd.DataFrame:
    """The per-record scalar columns the drift and the dashboard read, from logged records."""
    out = pd.DataFrame(
        {
            "kind": frame["kind"].astype(str),
            "history_length": frame["history_length"].astype(float),
            "k": frame["k"].astype(float),
            "latency_ms": frame["latency_ms"].astype(float),
            "fallback": frame["fallback"].astype(float),
            "cold": frame["cold"].astype(float),
        }
    )
    # a fallback's score is an interaction count, not the model's: it has no place in the score's distribution;
    # a query's score is a similarity in an encoder's space, not the model's logit: a signal of its own
    top = np.array([float(s[0]) if len(s) else np.nan for s in frame["scores"]])
    query = ~frame["kind"].isin(["user", "history", "fallback"]).to_numpy()
    out["top_score"] = np.where(frame["fallback"].to_numpy(bool) | query, np.nan, top)
    out["query_score"] = np.where(query, top, np.nan)
    if popularity is None:  # no popularity at hand: the signal is not evaluated
        out["popularity"] = np.nan
    else:
        out["popularity"] = [
            float(np.mean([np.log1p(popularity.get(i, 0.0)) for i in items])) if len(items) else np.nan
            for items in frame["items"]
        ]
    return out


def _same_kind_scores(frame: pd.DataFrame, reference: pd.DataFrame, cur: pd.DataFrame, ref: pd.DataFrame) -> None:
    """Keep ``query_score`` where both sides have queries of the same kind only (in place): a query's top
    similarity lies in the space it searched (a text query's own, the image space through the bridge for
    ``text>image``, a mean of two for ``text+image``), so a pinned ``text`` row standing in for a
    ``text>image`` one compares its vectors, never its score."""
    if "stands_for" in reference:
        stands = reference["stands_for"]
        other = (stands.notna() & (stands.astype(str) != reference["kind"].astype(str))).to_numpy()
        ref.loc[other, "query_score"] = np.nan
    kinds = set(reference.loc[ref["query_score"].notna().to_numpy(), "kind"].astype(str))
    cur.loc[~frame["kind"].astype(str).isin(kinds).to_numpy(), "query_score"] = np.nan


def _vectors(frame: pd.DataFrame, column: str) -> np.ndarray:
    rows = [v for v in frame[column] if v is not None and len(v)]
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), dtype=np.float32)


def _sample(a, n: int, seed: int):
    if len(a) <= n:
        return a
    idx = np.random.default_rng(seed).choice(len(a), n, replace=False)
    return a.iloc[np.sort(idx)] if isinstance(a, pd.DataFrame) else a[np.sort(idx)]


EMBEDDING_METHODS = ("model", "distance", "mmd", "ratio", "model_bootstrap", "distance_bootstrap")


def embedding_method(name: str, threshold: float):
    """Evidently's embedding-drift method by name.

    With a fixed threshold (drifted when the score is over it): ``model`` (the ROC AUC of a classifier
    telling the two windows apart), ``distance`` (the cosine distance between the two means), ``mmd`` (the
    maximum mean discrepancy), ``ratio`` (the share of components whose Wasserstein distance drifts).
    With Evidently's bootstrap (``threshold`` is the quantile of the score under no drift, drawn from the
    reference, which adapts it to the window's size): ``model_bootstrap``, ``distance_bootstrap``.
    """
    from evidently.metrics.embeddings import DistanceDriftMethod, MMDDriftMethod, ModelDriftMethod, RatioDriftMethod

    methods = {
        "model": lambda: ModelDriftMethod(threshold=threshold, bootstrap=False),
        "distance": lambda: DistanceDriftMethod(threshold=threshold, bootstrap=False, dist="cosine"),
        "mmd": lambda: MMDDriftMethod(threshold=threshold, bootstrap=False),
        "ratio": lambda: RatioDriftMethod(threshold=threshold),
        "model_bootstrap": lambda: ModelDriftMethod(bootstrap=True, quantile_probability=threshold),
        "distance_bootstrap": lambda: DistanceDriftMethod(
            bootstrap=True, quantile_probability=threshold, dist="cosine"
        ),
    }
    if name in methods:
        return methods[name]()
    raise ValueError(f"unknown embedding-drift method {name!r}; one of {EMBEDDING_METHODS}")


def _value_of(snapshot, metric: str, **config: Any) -> float:
    """A metric's value from a snapshot, by its type (``ValueDrift``) and its configuration (``column=...``)."""
    for m in snapshot.dict()["metrics"]:
        c = m.get("config", {})
        if c.get("type", "").endswith(f":{metric}") and all(c.get(k) == v for k, v in config.items()):
            return float(m["value"])
    raise KeyError(f"{metric} {config} is not in the snapshot")


def evaluate(
    frame: pd.DataFrame,
    reference,
    settings: MonitoringSettings,
    *,
    popularity: dict[str, float] | None = None,
    seed: int = 0,
    timestamp=None,
) -> DriftResult:
    """Drift of ``frame`` (logged records) against ``reference``: the model's own answers drawn in the
    window's shapes (a :class:`fusionrec.monitoring.reference.ModelReference`), or logged records drawn in
    the window's mix of kinds (:func:`fusionrec.monitoring.reference.matched`).

    Returns:
        A :class:`DriftResult`; ``enough`` is false (and no signal evaluated) when the window has fewer
        than ``settings.min_records`` records.
    """
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently sends nothing out
    import evidently.legacy.metrics.data_drift.embeddings_drift as evidently_embeddings
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift, MeanValue, QuantileValue, RowCount, ValueDrift

    evidently_embeddings.SAMPLE_CONSTANT = TSNE_ROWS
    result = DriftResult(records=len(frame), enough=len(frame) >= settings.min_records)
    if not result.enough:
        return result
    from fusionrec.monitoring.reference import matched

    frame = _sample(frame, settings.drift_sample, seed)
    reference = reference.draw(frame, seed + 1) if hasattr(reference, "draw") else matched(reference, frame, seed + 1)
    cur, ref = scalar_features(frame, popularity), scalar_features(reference, popularity)
    _same_kind_scores(frame, reference, cur, ref)
    definition = DataDefinition(numerical_columns=list(NUMERIC), categorical_columns=["kind"])
    metrics = [
        RowCount(),
        MeanValue(column="latency_ms"),
        QuantileValue(column="latency_ms", quantile=0.95),
        MeanValue(column="fallback"),
        MeanValue(column="cold"),
    ]
    valued = []
    for name in VALUE_SIGNALS:
        n_cur, n_ref = int(cur[name].notna().sum()), int(ref[name].notna().sum())
        if min(n_cur, n_ref) >= settings.min_records:
            metrics.append(ValueDrift(column=name, method="psi", threshold=settings.value_threshold))
            valued.append(name)
        else:
            result.signals.append(Signal(name, None, settings.value_threshold, None, n_cur, "psi"))
    report = Report(metrics)
    snap = report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
        timestamp=timestamp,
        tags=["requests"],
    )
    result.snapshots["requests"] = snap
    kinds = frame["kind"].astype(str)
    result.stats = {
        "records": float(result.records),
        "latency_mean_ms": float(frame["latency_ms"].mean()),
        "latency_p95_ms": float(frame["latency_ms"].quantile(0.95)),
        "fallback_rate": float(frame["fallback"].mean()),
        "cold_rate": float(frame["cold"].mean()),
        "k_mean": float(frame["k"].mean()),
        "history_length_mean": float(frame["history_length"].mean()),
        **{f"share_{k}": float(n) for k, n in kinds.value_counts(normalize=True).items()},
    }
    for name in valued:
        score = _value_of(snap, "ValueDrift", column=name)
        result.signals.append(
            Signal(
                name,
                score,
                settings.value_threshold,
                score >= settings.value_threshold,
                int(cur[name].notna().sum()),
                "psi",
            )
        )
    for name in EMBEDDING_SIGNALS:
        cv, rv = _vectors(frame, name), _vectors(reference, name)
        if min(len(cv), len(rv)) < settings.min_records or cv.shape[1] != rv.shape[1]:
            result.signals.append(
                Signal(name, None, settings.embedding_threshold, None, len(cv), settings.embedding_method)
            )
            continue
        cols = [f"{name}_{j}" for j in range(cv.shape[1])]
        definition = DataDefinition(numerical_columns=cols, embeddings={name: cols})
        method = embedding_method(settings.embedding_method, settings.embedding_threshold)
        # the verdict from the method itself (Evidently's own computation; the report keeps only the score)
        score, drifted, _ = method(pd.DataFrame(cv, columns=cols), pd.DataFrame(rv, columns=cols))
        snap = Report([RowCount(), EmbeddingsDrift(embeddings_name=name, drift_method=method)]).run(
            Dataset.from_pandas(pd.DataFrame(cv, columns=cols), data_definition=definition),
            Dataset.from_pandas(pd.DataFrame(rv, columns=cols), data_definition=definition),
            timestamp=timestamp,
            tags=[name],
        )
        result.snapshots[name] = snap
        result.signals.append(
            Signal(name, float(score), settings.embedding_threshold, bool(drifted), len(cv), settings.embedding_method)
        )
    return result
