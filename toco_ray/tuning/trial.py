"""One sweep trial: a Tune function trainable that trains one run through the training layer.

The trial builds its config (preset → ``base.set`` → command-line overrides → the trial's point → its seed) and
trains it as an MLflow child of the sweep's parent run, tagged with the trial's identity; each evaluation's report
reaches Tune (what ASHA and Optuna read). A trial of one CPU worker trains inside this function's own process
(:func:`~toco_ray.distributed.train_in_process`, reporting with ``tune.report``); a trial of several workers, or on
GPUs, launches a ``TorchTrainer`` whose reports ``TuneReportCallback`` forwards.

A trial's run name is a function of its point (grid) or its Optuna trial number, so a trial that Tune starts
again after an interruption finds its own run: an unfinished run continues from its latest checkpoint in the same
MLflow run, and a finished one is not trained again — its final numbers are reported to Tune from MLflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from toco_ray.config import save_yaml
from toco_ray.distributed import TrainHook, TrainJob, launch, train_in_process
from toco_ray.distributed.job import CONFIG_FILE
from toco_ray.tracking import COMMAND_TAG
from toco_ray.tuning import runs
from toco_ray.tuning.sampling import ConstrainedSpace
from toco_ray.tuning.space import GridSpace, Point, SearchSpace

POINT_KEY = "point"  # grid sweeps: the Tune config holds the point's slug (``p03-80-s0``) under this key


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
        workers, cpus_per_worker, gpus_per_worker: each trial's workers.
        in_process: the trial trains in its own process (one CPU worker), not in a ``TorchTrainer``.
        max_failures: worker-group failures a ``TorchTrainer`` trial recovers from.
        hooks: extra worker-loop hooks of every trial's training (tests hold or fail a trial with them).
        command: the sweep driver's command line, each trial run's ``command`` tag (not the Ray worker's argv).
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
    in_process: bool = False
    max_failures: int = 1
    hooks: tuple[TrainHook, ...] = field(default=())
    command: str = ""


@dataclass(frozen=True)
class TrialPlan:
    """A trial's identity and overrides, derived from its Tune config alone (so the driver can derive it too)."""

    run_name: str
    label: str
    overrides: dict[str, Any]
    seed: int
    optuna_number: int | None = None
    title: str = ""  # the MLflow run's display name (the run is found again by ``run_name``)

    def tags(self, sweep_name: str, trial_id: str, varied: list[str]) -> dict[str, str]:
        return runs.trial_tags(sweep_name, self.label, self.seed, trial_id, self.optuna_number, varied)


def grid_config(point: Point) -> dict[str, Any]:
    """The Tune config of a grid point: its slug, readable in Tune's tables; the space holds the rest."""
    return {POINT_KEY: point.slug}


def plan_trial(space: SearchSpace, sweep_name: str, config: Mapping[str, Any]) -> TrialPlan:
    """The plan of the trial whose Tune config is ``config`` (grid point, or Optuna's suggestion)."""
    if isinstance(space, GridSpace):
        point = {p.slug: p for p in space.grid_points()}[config[POINT_KEY]]
        return TrialPlan(runs.trial_run_name(sweep_name, point.slug), point.label, dict(point.overrides), point.seed,
                         title=point.title)
    number = int(config[ConstrainedSpace.TRIAL_NUMBER_KEY])
    overrides = {key: config[key] for key in space.search}
    title = runs.optuna_trial_title(number)
    return TrialPlan(runs.trial_run_name(sweep_name, title), f"trial {number}", overrides, space.seeds[0], number,
                     title=title)


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    """The Tune function trainable (wrapped with ``tune.with_parameters(run_trial, context=...)``)."""
    plan = plan_trial(context.space, context.sweep_name, config)
    client = MlflowClient(tracking_uri=context.tracking_uri)
    existing = runs.find_trial_run(client, context.experiment, plan.run_name)
    if existing is not None and existing.info.status == "FINISHED":  # Tune ran it again after an interruption
        client.set_tag(existing.info.run_id, runs.REPORTED_TAG, "true")
        tune.report(runs.final_report(client, existing.info.run_id))
        return
    job = trial_job(context, plan, resume=existing is not None)
    if job.resume and not (job.run_dir / CONFIG_FILE).is_file():
        save_yaml(job.cfg, job.run_dir / CONFIG_FILE)  # interrupted between creating its MLflow run and starting
    # end_on_error=False: the sweep's ChildRunCloser ends the run (a trial Tune stops is torn down mid-training)
    if context.in_process:
        train_in_process(job, report=tune.report, end_on_error=False)
    else:
        launch(job, callbacks=[TuneReportCallback()], end_on_error=False)


def trial_job(context: TrialContext, plan: TrialPlan, resume: bool) -> TrainJob:
    """The training job of a trial: its config, its run in the sweep folder, its MLflow parent and tags."""
    return TrainJob(
        cfg=context.space.config(plan.overrides, plan.seed, context.extra),
        output_dir=Path(context.sweep_dir),
        run_name=plan.run_name,
        title=plan.title,
        params={runs.VARIANT_PARAM: plan.label},
        print_per_class=False,
        workers=context.workers,
        cpus_per_worker=context.cpus_per_worker,
        gpus_per_worker=context.gpus_per_worker,
        tracking_uri=context.tracking_uri,
        experiment=context.experiment,
        resume=resume,
        max_failures=context.max_failures,
        keep_checkpoints=1,
        parent_run_id=context.parent_run_id,
        tags={**plan.tags(context.sweep_name, tune.get_context().get_trial_id(), context.space.varied_keys()),
              **({COMMAND_TAG: context.command} if context.command else {})},
        hooks=context.hooks,
    )
