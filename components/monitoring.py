"""The monitoring pipeline's step as a KFP component: evaluate the latest window of the inference log and,
when the policy fires, start a training run through the Kubeflow Pipelines API (in the cluster).

The step reads its settings like every step (``settings`` overrides; the pseudonymisation key and object
storage credentials from Kubernetes Secrets in the environment). KFP copies the function's source into
the component, so every import is inside it.
"""

from typing import Callable

from kfp import dsl
from kfp.dsl import HTML, Metrics, Output


def monitor(settings: dict, kfp_host: str, training: dict, report: Output[HTML], drift: Output[Metrics]) -> str:
    """One turn of the monitoring loop; returns the decision's status ("quiet", "drift", ...)."""
    import shutil

    from fusionrec.config import settings_from
    from fusionrec.io import log_metrics
    from fusionrec.monitoring.loop import run_once
    from pipelines.monitoring import retrainer

    outcome = run_once(settings_from(settings), retrain=retrainer(kfp_host or None, training))
    d = outcome.decision
    if outcome.reports:
        shutil.copyfile(outcome.reports[0], report.path)
    else:
        with open(report.path, "w", encoding="utf-8") as f:
            f.write(f"<p>{d.status}: {d.reason}</p>")
    log_metrics(
        drift,
        {
            "records": d.records,
            "retrain": int(d.retrain),
            "debounced": int(d.debounced),
            **({"drift_share": d.share} if d.share is not None else {}),
            **{f"score/{k}": v for k, v in d.scores.items()},
        },
    )
    return d.status


def build(image: str) -> dict[str, Callable]:
    return {"monitor": dsl.component(monitor, base_image=image, install_kfp_package=False)}
