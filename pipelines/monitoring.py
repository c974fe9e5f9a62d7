"""The monitoring pipeline (KFP v2): one step that evaluates the latest window of the inference log and
starts the training pipeline when the retraining policy fires; and its recurring run (a schedule).

:func:`retrainer` is what starts that training run: the KFP local runner on this machine, or a run
through ``kfp.Client`` on a cluster, with the same training parameters either way.
"""

from pathlib import Path
from typing import Any, Callable

PIPELINE_NAME = "fusionrec-monitoring"
RECURRING_RUN = "fusionrec-monitoring-hourly"
DEFAULT_CRON = "0 5 * * * *"  # KFP's six-field cron: every hour, five minutes past (the hour's log files are closed)


LOCAL = ("pipeline_root", "deploy", "runner", "image", "cache")  # how a run is started here
CLUSTER = ("image", "service_account")  # ... and on a cluster


def retrainer(host: str | None, training: dict[str, Any]) -> Callable[[Any], str]:
    """A function that starts one training run and returns its id: ``run_local`` here (``host`` None),
    ``submit`` to the Kubeflow Pipelines API at ``host`` on a cluster. ``training`` holds the training
    pipeline's parameters (a :class:`pipelines.training.TrainingRun`'s fields) and how it is started
    (:data:`LOCAL`, :data:`CLUSTER`).

    Raises:
        ConfigError: a parameter is unknown or bad (when the retrainer is made, not when it fires).
    """
    from pipelines.training import TRAINING_SERVICE_ACCOUNT, Target, TrainingRun, run_local, submit

    how = {k: training[k] for k in (*LOCAL, *CLUSTER) if k in training}
    run = TrainingRun.of(**{k: v for k, v in training.items() if k not in how})  # checked now, not when it fires

    def start(decision) -> str:
        if host:  # the same image as this step's, on a cluster; the run's ServiceAccount when given
            target = Target(image=how["image"], cluster=True) if how.get("image") else Target(cluster=True)
            return submit(
                host, run, target=target, service_account=how.get("service_account", TRAINING_SERVICE_ACCOUNT)
            )
        done = run_local(run, **{k: v for k, v in how.items() if k in LOCAL})
        return f"local:{done.pipeline_root} promoted={done.promoted} champion={done.champion}"

    return start


def build_pipeline(image: str, cluster: bool = True):
    """The monitoring pipeline as a KFP pipeline function."""
    from kfp import dsl

    from components.monitoring import build
    from pipelines.training import FEATURE_STORE_CLIENT, PIPELINE_STEP, SECRETS, as_step_user

    c = build(image)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Drift of the latest inference-log window against the serving "
        "model's reference (Evidently); retrain when the policy fires.",
    )
    def fusionrec_monitoring(
        settings: dict = {"profile": "cluster"} if cluster else {}, kfp_host: str = "", training: dict = {}
    ):
        task = c["monitor"](settings=settings, kfp_host=kfp_host, training=training)
        task.set_display_name("monitor").set_caching_options(False)  # every turn reads a new window
        if cluster:
            from kfp import kubernetes

            task.set_cpu_request("2").set_memory_request("4G").set_memory_limit("4G")
            as_step_user(task)
            kubernetes.add_pod_label(task, *FEATURE_STORE_CLIENT)  # reads the feedback from the online store
            kubernetes.add_pod_label(task, *PIPELINE_STEP)
            kubernetes.use_secret_as_env(
                task, secret_name="fusionrec-redis", secret_key_to_env=SECRETS["fusionrec-redis"], optional=True
            )
            # the pseudonymisation key is required: without it the step fails rather than start a new key
            kubernetes.use_secret_as_env(
                task,
                secret_name="fusionrec-monitoring",
                secret_key_to_env={"log_key": "FUSIONREC__MONITORING__LOG_KEY"},
                optional=False,
            )
            kubernetes.mount_pvc(task, pvc_name="fusionrec-monitoring", mount_path="/mnt/monitoring")

    return fusionrec_monitoring


def compile_pipeline(out: str | Path, image: str, cluster: bool = True) -> Path:
    """Write the monitoring pipeline's IR YAML (to upload in the Kubeflow UI, or to schedule)."""
    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(image, cluster), str(out))
    return out


def schedule(
    host: str,
    *,
    image: str,
    training: dict[str, Any],
    cron: str = DEFAULT_CRON,
    experiment: str = "fusionrec-monitoring",
    kfp_host_in_cluster: str = "http://ml-pipeline.kubeflow:8888",
    settings: dict[str, Any] | None = None,
    service_account: str | None = None,
    training_service_account: str | None = None,
    client=None,
) -> str:
    """Create the recurring run that runs the monitoring pipeline on ``cron`` (at most one at a time, no
    catch-up after a pause), replacing an earlier one of the same name; returns its id.

    The run runs as ``service_account``; the training runs it starts run on ``image`` too, as
    ``training_service_account``."""
    import tempfile

    from pipelines.training import kfp_api

    training = {**training, "image": image}
    if training_service_account:
        training["service_account"] = training_service_account
    with kfp_api(host, client) as client, tempfile.TemporaryDirectory() as tmp:
        exp = client.create_experiment(experiment)
        earlier = client.list_recurring_runs(experiment_id=exp.experiment_id, page_size=100).recurring_runs or []
        for job in earlier:
            if job.display_name == RECURRING_RUN:
                client.delete_recurring_run(job.recurring_run_id)
        package = compile_pipeline(Path(tmp) / "monitoring.yaml", image)
        job = client.create_recurring_run(
            experiment_id=exp.experiment_id,
            job_name=RECURRING_RUN,
            cron_expression=cron,
            max_concurrency=1,
            no_catchup=True,
            pipeline_package_path=str(package),
            params={
                "settings": settings or {"profile": "cluster"},
                "kfp_host": kfp_host_in_cluster,
                "training": training,
            },
            service_account=service_account,
        )
    return job.recurring_run_id
