"""One sweep trial: a Tune function trainable that runs one distributed training through the training layer.

The trial builds its config (preset → ``base.set`` → command-line overrides → the trial's point → its seed),
launches a ``TorchTrainer`` with :func:`toco_ray.distributed.launch` and forwards each evaluation's report to Tune
with ``TuneReportCallback`` (what ASHA and Optuna read). The training run is an MLflow child of the sweep's parent
run, tagged with the trial's identity; rank 0 of the trial logs its params and full metric history into it.

A trial's run name is a function of its point (grid) or its Optuna trial number, so a trial that Tune starts
again after an interruption finds its own run: an unfinished run continues from its latest checkpoint in the same
MLflow run, and a finished one is not trained again — its final numbers are reported to Tune from MLflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toco_ray.tuning.sampling import ConstrainedSpace
from toco_ray.tuning.space import Point, SearchSpace

POINT_KEY = "point"  # grid sweeps: the Tune config holds the point's slug (``p03-80-s0``) under this key
# MLflow tags of a sweep's runs
ROLE_TAG = "toco.sweep.role"  # parent | trial
SWEEP_TAG = "toco.sweep.name"
ROW_TAG = "toco.sweep.row"
TRIAL_ID_TAG = "toco.sweep.trial_id"
OPTUNA_NUMBER_TAG = "toco.sweep.optuna_trial"
SEED_TAG = "toco.sweep.seed"
STOPPED_TAG = "toco.sweep.stopped_early"
REPORTED_TAG = "toco.sweep.reported_from_mlflow"
# Final numbers re-reported from MLflow: Tune key → MLflow metric (the keys the training loop reports)
FINAL_METRICS = {"cam_miou": "eval/cam_miou", "aux_cam_miou": "eval/aux_cam_miou", "seg_miou": "eval/seg_miou",
                 "loss": "loss/total"}


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares (sent once through ``tune.with_parameters``).

    Attributes:
        space: the checked search space.
        sweep_name: the sweep's name (prefix of its trials' run names).
        sweep_dir: the sweep folder; trial runs live in ``<sweep_dir>/runs/<run name>``.
        tracking_uri, experiment: where the MLflow runs go.
        parent_run_id: the sweep's MLflow parent run.
        extra: command-line config overrides applied to every trial (data root, smoke schedule).
        workers, cpus_per_worker, gpus_per_worker: each trial's Ray Train workers.
        max_failures: worker-group failures a trial's training recovers from.
    """

    space: SearchSpace
    sweep_name: str
    sweep_dir: str
    tracking_uri: str
    experiment: str
    parent_run_id: str
    extra: dict[str, Any]
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float = 0.0
    max_failures: int = 1


@dataclass(frozen=True)
class TrialPlan:
    """A trial's identity and overrides, derived from its Tune config alone (so the driver can derive it too)."""

    run_name: str
    label: str
    overrides: dict[str, Any]
    seed: int
    optuna_number: int | None = None

    def tags(self, sweep_name: str, trial_id: str) -> dict[str, str]:
        tags = {ROLE_TAG: "trial", SWEEP_TAG: sweep_name, ROW_TAG: self.label, TRIAL_ID_TAG: trial_id,
                SEED_TAG: str(self.seed)}
        if self.optuna_number is not None:
            tags[OPTUNA_NUMBER_TAG] = str(self.optuna_number)
        return tags


def grid_config(point: Point) -> dict[str, Any]:
    """The Tune config of a grid point: its slug, readable in Tune's tables; the space holds the rest."""
    return {POINT_KEY: point.slug}


def plan_trial(space: SearchSpace, sweep_name: str, config: Mapping[str, Any]) -> TrialPlan:
    """The plan of the trial whose Tune config is ``config`` (grid point, or Optuna's suggestion)."""
    if space.kind == "grid":
        point = {p.slug: p for p in space.grid_points()}[config[POINT_KEY]]
        return TrialPlan(f"{sweep_name}-{point.slug}", point.label, dict(point.overrides), point.seed)
    number = int(config[ConstrainedSpace.TRIAL_NUMBER_KEY])
    overrides = {key: config[key] for key in space.search}
    return TrialPlan(f"{sweep_name}-t{number:03d}", f"trial {number}", overrides, space.seeds[0], number)


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    """The Tune function trainable (wrapped with ``tune.with_parameters(run_trial, context=...)``)."""
    from mlflow import MlflowClient
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from toco_ray.config import save_yaml
    from toco_ray.distributed import TrainJob, launch
    from toco_ray.distributed.job import CONFIG_FILE

    plan = plan_trial(context.space, context.sweep_name, config)
    cfg = context.space.config(plan.overrides, plan.seed, context.extra)
    client = MlflowClient(tracking_uri=context.tracking_uri)
    existing = find_trial_run(client, context.experiment, plan.run_name)
    if existing is not None and existing.info.status == "FINISHED":
        client.set_tag(existing.info.run_id, REPORTED_TAG, "true")
        tune.report(final_report(client, existing.info.run_id))
        return
    job = TrainJob(
        cfg=cfg,
        output_dir=Path(context.sweep_dir),
        run_name=plan.run_name,
        workers=context.workers,
        cpus_per_worker=context.cpus_per_worker,
        gpus_per_worker=context.gpus_per_worker,
        tracking_uri=context.tracking_uri,
        experiment=context.experiment,
        resume=existing is not None,
        max_failures=context.max_failures,
        keep_checkpoints=1,
        parent_run_id=context.parent_run_id,
        tags=plan.tags(context.sweep_name, tune.get_context().get_trial_id()),
    )
    if job.resume and not (job.run_dir / CONFIG_FILE).is_file():
        save_yaml(cfg, job.run_dir / CONFIG_FILE)  # interrupted between creating its MLflow run and starting
    launch(job, callbacks=[TuneReportCallback()], end_on_error=False)  # the sweep's ChildRunCloser ends the run


def find_trial_run(client, experiment: str, run_name: str):
    """The MLflow run of a trial (by its run name), or None."""
    from toco_ray.tracking import find_run

    found = client.get_experiment_by_name(experiment)
    run_id = find_run(client, found.experiment_id, run_name) if found is not None else None
    return client.get_run(run_id) if run_id else None


def final_report(client, run_id: str) -> dict[str, float]:
    """A finished run's last evaluation as a Tune result (the keys the training loop reports)."""
    from toco_ray.distributed.loop import REPORT_ITERATION

    metrics = client.get_run(run_id).data.metrics
    report = {key: metrics[name] for key, name in FINAL_METRICS.items() if name in metrics}
    history = client.get_metric_history(run_id, FINAL_METRICS["cam_miou"])
    report[REPORT_ITERATION] = max((m.step for m in history), default=0)
    return report
