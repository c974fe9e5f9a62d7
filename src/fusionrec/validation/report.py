"""The validation report: JSON for machines, one HTML page for people, the quarantine as CSV."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fusionrec.validation.runner import ValidationOutcome

QUARANTINE_ROWS_SHOWN = 200


def report_dict(outcome: ValidationOutcome, dataset_summary: dict[str, Any] | None) -> dict[str, Any]:
    """The report as a JSON-able dict."""
    c = outcome.clean.contract
    return {
        "dataset": c.name,
        "format": c.format,
        "root": str(c.root_dir),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "passed": outcome.passed,
        "seconds": round(outcome.seconds, 3),
        "checks": [
            {
                "key": r.key,
                "table": r.table,
                "column": r.column,
                "description": r.description,
                "action": r.action,
                "budget": r.budget,
                "records": r.records,
                "failed": r.failed,
                "share": round(r.share, 6),
                "passed": r.passed,
                "file": r.file,
                "examples": r.examples,
            }
            for r in outcome.results
        ],
        "quarantine": {
            "records": len(outcome.quarantine),
            "dropped": int((outcome.quarantine["action"] == "dropped").sum()),
            "masked": int((outcome.quarantine["action"] == "masked").sum()),
        },
        "clean": dataset_summary,
        "great_expectations": {"suites": outcome.gx_suites, "results": outcome.gx_results},
    }


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{margin-bottom:.2em} .ok{color:#1a7f37} .bad{color:#cf222e}
table{border-collapse:collapse;width:100%;margin:1em 0;font-size:14px}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa} td.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{background:#eee;width:120px;height:10px;display:inline-block;position:relative}
.bar i{position:absolute;left:0;top:0;bottom:0;background:#cf222e}
.bar b{position:absolute;top:-2px;bottom:-2px;width:2px;background:#222}
code{font-size:12px;color:#555}
"""


def _bar(share: float, budget: float) -> str:
    scale = max(share, budget, 1e-9) * 1.25
    return (
        f'<span class="bar" title="failed {share:.2%}, budget {budget:.2%}">'
        f'<i style="width:{min(100, share / scale * 100):.1f}%"></i>'
        f'<b style="left:{min(100, budget / scale * 100):.1f}%"></b></span>'
    )


def render_html(report: dict[str, Any], outcome: ValidationOutcome) -> str:
    """One self-contained page: verdict, the checks with their budgets, the clean counts, the quarantine."""
    e = html.escape
    verdict = (
        '<span class="ok">PASSED</span>'
        if report["passed"]
        else '<span class="bad">FAILED: nothing downstream was written</span>'
    )
    rows = []
    for r in report["checks"]:
        status = '<span class="ok">ok</span>' if r["passed"] else '<span class="bad">over budget</span>'
        eg = "<br>".join(f"line {x['line']}: <code>{e(repr(x['value']))}</code>" for x in r["examples"][:3])
        rows.append(
            f"<tr><td><code>{e(r['key'])}</code></td><td>{e(r['description'])}</td><td>{e(r['action'])}</td>"
            f"<td class=num>{r['records']:,}</td><td class=num>{r['failed']:,}</td>"
            f"<td class=num>{r['share']:.2%}</td><td class=num>{r['budget']:.2%}</td>"
            f"<td>{_bar(r['share'], r['budget'])}</td><td>{status}</td><td>{eg}</td></tr>"
        )
    q = outcome.quarantine.head(QUARANTINE_ROWS_SHOWN)
    qrows = "".join(
        f"<tr><td>{e(str(t.table))}</td><td class=num>{t.line}</td><td>{e(str(t.record_id))}</td>"
        f"<td>{e(str(t.action))}</td><td>{e(str(t.reason))}</td></tr>"
        for t in q.itertuples()
    )
    clean = report.get("clean")
    clean_html = f"<h2>Clean dataset</h2><pre>{e(json.dumps(clean, indent=2))}</pre>" if clean else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Validation: {e(report['dataset'])}</title>
<style>{_CSS}</style></head><body>
<h1>Validation of <code>{e(report['dataset'])}</code>: {verdict}</h1>
<p>{e(report['format'])} from <code>{e(report['root'])}</code>, {e(report['created'])}, {report['seconds']} s.
Great Expectations {e(_gx_version())} ran {len(report['checks'])} checks; a check fails when the share of
records that break it exceeds its error budget (black mark).</p>
<h2>Checks</h2>
<table><tr><th>check</th><th>rule</th><th>action</th><th>records</th><th>failed</th><th>share</th>
<th>budget</th><th></th><th>status</th><th>examples</th></tr>{''.join(rows)}</table>
{clean_html}
<h2>Quarantine ({report['quarantine']['records']:,} records: {report['quarantine']['dropped']:,} dropped,
{report['quarantine']['masked']:,} kept with a field masked)</h2>
<p>First {min(len(outcome.quarantine), QUARANTINE_ROWS_SHOWN)} shown; all are in <code>quarantine.csv</code>.</p>
<table><tr><th>table</th><th>line</th><th>record</th><th>action</th><th>reason</th></tr>{qrows}</table>
</body></html>"""


def _gx_version() -> str:
    import great_expectations as gx

    return gx.__version__


def write_report(outcome: ValidationOutcome, folder: Path, dataset_summary: dict[str, Any] | None) -> dict[str, Any]:
    """Write report.json, report.html, quarantine.csv and the GX suites/results into ``folder``."""
    folder = Path(folder)
    report = report_dict(outcome, dataset_summary)
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (folder / "report.html").write_text(render_html(report, outcome), encoding="utf-8")
    outcome.quarantine.to_csv(folder / "quarantine.csv", index=False)
    return report
