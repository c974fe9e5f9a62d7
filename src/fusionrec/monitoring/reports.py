"""A window's HTML reports (Evidently's, one per row set) under ``reports/<window end>/``, with an index
page that states the decision and links them, and the snapshots as JSON beside them."""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path

from fusionrec.monitoring.drift import DriftResult
from fusionrec.monitoring.policy import Decision


def write_reports(folder: Path, result: DriftResult, decision: Decision, at: datetime) -> list[Path]:
    """Write the reports and return their paths, the index first."""
    target = folder / f"{at:%Y-%m-%dT%H%M%S}"
    target.mkdir(parents=True, exist_ok=True)
    pages = []
    for name, snap in result.snapshots.items():
        snap.save_html(str(target / f"{name}.html"))
        snap.save_json(str(target / f"{name}.json"))
        pages.append(target / f"{name}.html")
    rows = "".join(
        f"<tr><td>{html.escape(s.name)}</td><td>{s.method}</td><td>{'' if s.score is None else f'{s.score:.4f}'}</td>"
        f"<td>{s.threshold:g}</td><td>{s.rows}</td>"
        f"<td>{'not enough data' if s.drifted is None else 'DRIFT' if s.drifted else 'ok'}"
        "</td></tr>"
        for s in result.signals
    )
    links = "".join(f'<li><a href="{p.name}">{p.stem}</a></li>' for p in pages)
    index = target / "index.html"
    index.write_text(
        "<!doctype html><meta charset=utf-8><title>fusionrec drift</title>"
        f"<h1>Window {html.escape(decision.window_start)} to {html.escape(decision.window_end)}</h1>"
        f"<p>Model {html.escape(str(decision.model_version))}, {decision.records} records. "
        f"<b>{html.escape(decision.status)}</b>: {html.escape(decision.reason)}</p>"
        "<table border=1 cellpadding=4><tr><th>signal</th><th>method</th><th>score</th><th>threshold</th><th>rows</th>"
        f"<th>verdict</th></tr>{rows}</table><h2>Evidently reports</h2><ul>{links}</ul>",
        encoding="utf-8",
    )
    return [index, *pages]
