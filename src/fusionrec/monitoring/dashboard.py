"""The SRE view: an Evidently workspace (a local folder) with one project whose dashboard is made here.

Panels: drift share and the retraining decisions over time, each signal's drift score, request volume,
latency, fallback and cold-user rates. Each monitored window adds its Evidently snapshots (the request
report, one per embedding signal) and a decision snapshot; the panels read their metrics by type and
configuration. ``fusionrec monitor ui`` serves the workspace with Evidently's own UI.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from fusionrec.monitoring.drift import EMBEDDING_SIGNALS, VALUE_SIGNALS, DriftResult
from fusionrec.monitoring.policy import Decision

PROJECT = "fusionrec monitoring"
DECISION_TAG = "decision"


def workspace(folder: str | Path):
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently sends nothing out
    from evidently.ui.workspace import Workspace

    return Workspace(str(folder))


def _panels() -> list[Any]:
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import bar_plot_panel, line_plot_panel, text_panel

    def pm(metric: str, legend: str, tags: list[str], **labels: str) -> PanelMetric:
        return PanelMetric(legend=legend, metric=metric, tags=tags, metric_labels=labels)

    return [
        text_panel(
            "fusionrec: drift, traffic and retraining",
            "One point per monitored window (fusionrec monitor run). "
            "Decisions: 1 = retraining started, debounced = drift inside the cooldown.",
        ),
        line_plot_panel(
            "Drift share",
            [pm("MeanValue", "share of signals drifted", [DECISION_TAG], column="drifted")],
            "Share of the evaluated signals whose drift score passed its threshold",
            size="half",
        ),
        bar_plot_panel(
            "Retraining decisions",
            [
                pm("MaxValue", "retrain", [DECISION_TAG], column="retrain"),
                pm("MaxValue", "debounced", [DECISION_TAG], column="debounced"),
            ],
            "Per window: a retraining run started, or drift held back by the debounce",
            size="half",
        ),
        line_plot_panel(
            "Drift of the request features and answers (PSI)",
            [pm("ValueDrift", name, ["requests"], column=name) for name in VALUE_SIGNALS],
            "Population stability index against the reference, per signal",
            size="half",
        ),
        line_plot_panel(
            "Embedding drift",
            [pm("EmbeddingsDrift", name, [name], embeddings_name=name) for name in EMBEDDING_SIGNALS],
            "Evidently's embedding-drift score per signal (the method in the settings)",
            size="half",
        ),
        line_plot_panel(
            "Request volume", [pm("RowCount", "records", ["requests"])], "Logged instances per window", size="half"
        ),
        line_plot_panel(
            "Latency (ms)",
            [
                pm("MeanValue", "mean", ["requests"], column="latency_ms"),
                pm("QuantileValue", "p95", ["requests"], column="latency_ms"),
            ],
            "Transformer latency per instance's request",
            size="half",
        ),
        line_plot_panel(
            "Fallback and cold-user rates",
            [
                pm("MeanValue", "fallback", ["requests"], column="fallback"),
                pm("MeanValue", "cold users", ["requests"], column="cold"),
            ],
            "Share of requests served by popularity, and by a new user's history",
            size="half",
        ),
        line_plot_panel(
            "Recommendation quality from feedback",
            [
                pm("PopularityBiasMetric", "popularity bias (ARP)", ["quality"]),
                pm("Novelty", "novelty", ["quality"]),
                pm("Personalization", "personalisation", ["quality"]),
            ],
            "Windows with feedback (later interactions pushed to Feast); recall and NDCG are in the window's report",
            size="half",
        ),
    ]


def project(ws, name: str = PROJECT):
    """The monitoring project, made with its dashboard the first time."""
    found = ws.search_project(name)
    if found:
        return found[0]
    proj = ws.create_project(name)
    proj.description = "Inference-log drift against the serving model's reference, and the retraining decisions"
    for panel in _panels():
        proj.dashboard.add_panel(panel)
    proj.save()
    return proj


def decision_snapshot(decision: Decision, result: DriftResult, at: datetime):
    """The decision as an Evidently snapshot: one row per evaluated signal (drifted 0/1), with the decision
    in every row, so that the dashboard plots the drift share and the decisions over time."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MaxValue, MeanValue, RowCount

    rows = [{"drifted": float(bool(s.drifted))} for s in result.evaluated] or [{"drifted": 0.0}]
    frame = pd.DataFrame(rows).assign(
        retrain=float(decision.retrain),
        debounced=float(decision.debounced),
        enough=float(decision.status != "not enough data"),
    )
    definition = DataDefinition(numerical_columns=list(frame.columns))
    report = Report(
        [
            RowCount(),
            MeanValue(column="drifted"),
            MaxValue(column="retrain"),
            MaxValue(column="debounced"),
            MaxValue(column="enough"),
        ]
    )
    meta = {k: str(v) for k, v in asdict(decision).items() if k in ("status", "reason", "model_version", "run")}
    return report.run(
        Dataset.from_pandas(frame, data_definition=definition),
        None,
        timestamp=at,
        tags=[DECISION_TAG, decision.status],
        metadata=meta,
    )


def add_window(folder: str | Path, result: DriftResult, decision: Decision, at: datetime) -> None:
    """Add a window's snapshots and its decision to the workspace's monitoring project."""
    ws = workspace(folder)
    proj = project(ws)
    for snap in result.snapshots.values():
        ws.add_run(proj.id, snap, include_data=False)
    ws.add_run(proj.id, decision_snapshot(decision, result, at), include_data=False)
