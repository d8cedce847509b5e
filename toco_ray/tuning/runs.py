"""A sweep's MLflow record: its parent run, one child run per trial, their names and tags, and the queries that read
them back (the sweep's end, the report).

In MLflow a sweep is an experiment (``toco-sweep-<space>``) holding a parent run (``sweep-<name>``, tag
``toco.sweep.role = parent``) with the search space as an artifact, the sweep's definition as params and its wall time
as a metric, and one child run per trial (``<sweep>-<point slug>`` or ``<sweep>-t<Optuna number>``, role ``trial``),
tagged with its row, seed, Tune trial id and Optuna number. The trial's training logs the child's params and metric
history; how the child ended (``FINISHED``, stopped early by ASHA, ``FAILED``, ``KILLED`` by an interruption) is the
driver's to record, here. Every tag name of the record is defined below and nowhere else.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from toco_ray.config import yaml_load
from toco_ray.errors import TocoError
from toco_ray.metric_names import LOSS_TOTAL, REPORT_ITERATION, REPORT_LOSS, REPORT_METRICS, THROUGHPUT
from toco_ray.tracking import (
    RUN_NAME_TAG,
    RunLogger,
    artifact_root,
    end_run,
    find_run,
    get_or_create_experiment,
    is_local_store,
    provenance_tags,
    quote_filter,
)
from toco_ray.tuning.space import GridSpace, SearchSpace, label_slug, parse_space

if TYPE_CHECKING:  # annotations only: reading a sweep back (the report) must not load Ray
    from toco_ray.tuning.cluster import TrialResources
    from toco_ray.tuning.state import Sweep

EXPERIMENT_PREFIX = "toco-sweep-"  # MLflow experiment of a space: toco-sweep-<space name>
SPACE_ARTIFACT = "space"  # the search-space file, logged under this artifact path of the parent run
WALL_METRIC = "sweep/wall_s"  # the parent's wall time of all sessions, at step = number of sessions
# Tags of a sweep's runs
ROLE_TAG = "toco.sweep.role"
PARENT, TRIAL = "parent", "trial"  # its values
SWEEP_TAG = "toco.sweep.name"
SWEEP_DIR_TAG = "toco.sweep.dir"
SWEEP_KIND_TAG = "toco.sweep.kind"
SWEEP_SPACE_TAG = "toco.sweep.space"
ERRORS_TAG = "toco.sweep.errors"  # trials that failed, on the parent
ROW_TAG = "toco.sweep.row"
TRIAL_ID_TAG = "toco.sweep.trial_id"
OPTUNA_NUMBER_TAG = "toco.sweep.optuna_trial"
SEED_TAG = "toco.sweep.seed"
VARIED_TAG = "toco.sweep.varied"  # the config keys that differ between the sweep's trials, comma-separated
TRIALS_PARAM = "sweep.trials"  # the parent's params: trials the sweep runs, and how many at a time
CONCURRENCY_PARAM = "sweep.max_concurrent"
MAX_TRIALS_PARAM = "sweep.max_trials"  # a cap on the space's trials (--smoke), 0 for none
VARIANT_PARAM = "sweep.variant"  # a trial's row label as a param: a table column and a parallel-coordinates axis
STOPPED_TAG = "toco.sweep.stopped_early"  # "false", or "true (at iteration N)"
REPORTED_TAG = "toco.sweep.reported_from_mlflow"  # a finished trial Tune ran again: reported from its run
OPTUNA_STORAGE_TAG = "optuna.storage"
OPTUNA_STUDY_TAG = "optuna.study_name"
OPTUNA_RUN_ID_ATTR = "mlflow_run_id"  # user attribute of an Optuna trial: its MLflow run


class ReportError(TocoError, LookupError):
    """The sweep cannot be found or read; the message says what was looked for."""


# --- names -------------------------------------------------------------------------------------------------------
def experiment_name(space_name: str) -> str:
    return EXPERIMENT_PREFIX + space_name


def parent_run_name(sweep_name: str) -> str:
    return f"sweep-{sweep_name}"


def trial_run_name(sweep_name: str, trial: str) -> str:
    """A trial's run (and Tune trial) name: ``quick_demo-p02-ptc-s0`` (a grid point), ``toco_hpo-t007`` (Optuna)."""
    return f"{sweep_name}-{trial}"


def optuna_trial_title(number: int) -> str:
    """An Optuna trial's display name and run-name suffix: ``t007``."""
    return f"t{number:03d}"


# --- the parent run ----------------------------------------------------------------------------------------------
def open_parent_run(sweep: Sweep, resources: TrialResources) -> str:
    """Creates the sweep's parent run (or marks the stored one running again); logs the space and settings once."""
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    location = artifact_root(sweep.dir.parent.parent) if is_local_store(sweep.tracking_uri) else None
    experiment_id = get_or_create_experiment(client, sweep.experiment, location)
    if sweep.state is not None:
        client.update_run(sweep.state.parent_run_id, status="RUNNING")
        return sweep.state.parent_run_id
    run_id = client.create_run(experiment_id, run_name=parent_run_name(sweep.name), tags=parent_tags(sweep)).info.run_id
    logger = RunLogger(sweep.tracking_uri, run_id)
    logger.log_params(parent_params(sweep, resources))
    logger.log_text(sweep.space.text, f"{SPACE_ARTIFACT}/{Path(sweep.space.path).name}")
    return run_id


def parent_tags(sweep: Sweep) -> dict[str, str]:
    tags = {ROLE_TAG: PARENT, SWEEP_TAG: sweep.name, SWEEP_DIR_TAG: str(sweep.dir), SWEEP_KIND_TAG: sweep.space.kind,
            SWEEP_SPACE_TAG: sweep.space.name, RUN_NAME_TAG: f"sweep:{sweep.name}", **provenance_tags()}
    if sweep.space.kind == "optuna":
        tags.update({OPTUNA_STORAGE_TAG: sweep.optuna_url, OPTUNA_STUDY_TAG: sweep.name})
    return tags


def parent_params(sweep: Sweep, resources: TrialResources) -> dict[str, Any]:
    """The sweep's definition as MLflow params: base config keys, the swept keys, counts and resources."""
    space = sweep.space
    params: dict[str, Any] = {
        "sweep.kind": space.kind, "sweep.preset": space.preset, "sweep.metric": space.metric,
        "sweep.mode": space.mode, "sweep.seeds": list(space.seeds), TRIALS_PARAM: space.trial_count(),
        MAX_TRIALS_PARAM: sweep.settings.max_trials, CONCURRENCY_PARAM: resources.max_concurrent,
        "sweep.workers_per_trial": resources.workers,
        "sweep.cpus_per_worker": resources.cpus_per_worker, "sweep.gpus_per_worker": resources.gpus_per_worker,
        "sweep.asha": space.asha.model_dump_json() if space.asha else "none",
    }
    params.update({f"base.{k}": v for k, v in {**space.base_set, **sweep.settings.overrides}.items()})
    if isinstance(space, GridSpace):
        params.update({f"grid.{k}": list(v) for k, v in space.grid.items()})
        # MLflow param names allow few characters ("+L_cls^m" is not one): variants are numbered, the name in the value
        params.update({f"variant.{i}": json.dumps({"name": v.name, "set": v.overrides}, sort_keys=True)
                       for i, v in enumerate(space.variants)})
    else:
        params.update({f"search.{k}": p.model_dump_json() for k, p in space.search.items()})
    return params


def close_parent_run(sweep: Sweep, run_id: str, status: str, wall_s: float, sessions: int, errors: int) -> None:
    """Logs the wall time of all ``sessions``, the sweep's result and the failed trials to the parent run and ends it
    with ``status``."""
    logger = RunLogger(sweep.tracking_uri, run_id)
    logger.log_metrics({WALL_METRIC: wall_s, **sweep_summary(sweep, run_id)}, step=sessions)
    if errors:
        logger.set_tags({ERRORS_TAG: errors})
    end_run(sweep.tracking_uri, run_id, status)


def best_metric(report_key: str) -> str:
    """``sweep/best/cam_miou``: the parent's best value of the sweep's metric over its finished trials."""
    return f"sweep/best/{report_key}"


def row_mean_metric(report_key: str, label: str) -> str:
    """``sweep/mean/cam_miou/ptc``: the parent's mean of the metric over a grid row's finished seeds."""
    return f"sweep/mean/{report_key}/{label_slug(label)}"


def sweep_summary(sweep: Sweep, run_id: str) -> dict[str, float]:
    """The sweep's result as parent metrics (the runs table shows them in the parent's row): the best value of its
    metric over finished trials, and for a grid the mean of each row; empty before any trial finished."""
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    space, metric = sweep.space, REPORT_METRICS[sweep.space.metric]
    by_row: dict[str, list[float]] = {}
    for run in children(client, client.get_run(run_id)):
        if run.info.status == "FINISHED" and metric in run.data.metrics:
            by_row.setdefault(run.data.tags.get(ROW_TAG, ""), []).append(run.data.metrics[metric])
    if not by_row:
        return {}
    pick = max if space.mode == "max" else min
    summary = {best_metric(space.metric): pick(v for values in by_row.values() for v in values)}
    if isinstance(space, GridSpace):
        summary |= {row_mean_metric(space.metric, label): sum(v) / len(v) for label, v in by_row.items()}
    return summary


def count_killed_trials(tracking_uri: str, parent_run_id: str) -> int:
    """Trial runs an interruption cut off (ended ``KILLED``)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    return sum(run.info.status == "KILLED" for run in children(client, client.get_run(parent_run_id)))


# --- trial runs ---------------------------------------------------------------------------------------------------
def trial_tags(sweep_name: str, row: str, seed: int, trial_id: str, optuna_number: int | None,
               varied: list[str] | None = None) -> dict[str, str]:
    """A trial run's identity, set when its training starts or resumes."""
    tags = {ROLE_TAG: TRIAL, SWEEP_TAG: sweep_name, ROW_TAG: row, TRIAL_ID_TAG: trial_id, SEED_TAG: str(seed)}
    if varied:
        tags[VARIED_TAG] = ",".join(varied)
    if optuna_number is not None:
        tags[OPTUNA_NUMBER_TAG] = str(optuna_number)
    return tags


def find_trial_run(client: MlflowClient, experiment: str, run_name: str):
    """The MLflow run of a trial (by its run name), or None."""
    found = client.get_experiment_by_name(experiment)
    run_id = find_run(client, found.experiment_id, run_name) if found is not None else None
    return client.get_run(run_id) if run_id else None


def final_report(client: MlflowClient, run_id: str) -> dict[str, float]:
    """A finished run's last evaluation as a Tune result (the keys each evaluation reports)."""
    metrics = client.get_run(run_id).data.metrics
    names = {**REPORT_METRICS, REPORT_LOSS: LOSS_TOTAL}  # report key → MLflow metric
    report = {key: metrics[name] for key, name in names.items() if name in metrics}
    history = client.get_metric_history(run_id, next(iter(REPORT_METRICS.values())))
    report[REPORT_ITERATION] = max((m.step for m in history), default=0)
    return report


def close_trial_run(tracking_uri: str, run, last_iteration: int) -> None:
    """A trial Tune completed: one that trained to the end ended its run itself (tagged not stopped early); one that
    ASHA stopped never returns from training, so its run is ended ``FINISHED`` here, tagged where it stopped."""
    client = MlflowClient(tracking_uri=tracking_uri)
    if run.info.status == "FINISHED" and STOPPED_TAG not in run.data.tags:
        client.set_tag(run.info.run_id, STOPPED_TAG, "false")
    elif run.info.status == "RUNNING":
        client.set_tag(run.info.run_id, STOPPED_TAG, f"true (at iteration {last_iteration})")
        end_run(tracking_uri, run.info.run_id, "FINISHED")


def end_if_running(tracking_uri: str, run, status: str) -> None:
    """Ends a trial's run with ``status`` (``FAILED``, ``KILLED``) unless it has ended already."""
    if run is not None and run.info.status == "RUNNING":
        end_run(tracking_uri, run.info.run_id, status)


# --- reading a sweep back -----------------------------------------------------------------------------------------
def find_parent(client: MlflowClient, target: str):
    """The parent run named by ``target``: a run id, a sweep name, or an experiment (its latest sweep)."""
    try:
        run = client.get_run(target)
        if run.data.tags.get(ROLE_TAG) == PARENT:
            return run
        parent_id = run.data.tags.get(MLFLOW_PARENT_RUN_ID)
        if parent_id:
            return client.get_run(parent_id)
    except MlflowException:
        pass
    experiments = client.search_experiments()
    by_experiment = [e.experiment_id for e in experiments if e.name == target]
    filters = [(by_experiment, f"tags.`{ROLE_TAG}` = '{PARENT}'"),
               ([e.experiment_id for e in experiments], f"tags.`{SWEEP_TAG}` = {quote_filter(target)}")]
    for experiment_ids, filter_string in filters:
        runs = client.search_runs(experiment_ids, filter_string=filter_string, order_by=["attributes.start_time DESC"],
                                  max_results=1) if experiment_ids else []
        if runs:
            tags = runs[0].data.tags
            return runs[0] if tags.get(ROLE_TAG) == PARENT else client.get_run(tags[MLFLOW_PARENT_RUN_ID])
    raise ReportError(
        f"no sweep found for {target!r}: not a parent or trial run id, a sweep name, or an MLflow experiment "
        f"with sweeps (experiments: {sorted(e.name for e in experiments)})"
    )


def load_space_of(client: MlflowClient, parent) -> SearchSpace:
    """The search space the sweep ran, from the parent run's ``space/`` artifact."""
    os.environ.setdefault(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name, "false")  # a bar for one small file is noise
    with tempfile.TemporaryDirectory() as folder:
        local = Path(client.download_artifacts(parent.info.run_id, SPACE_ARTIFACT, folder))
        files = sorted(local.glob("*.yaml"))
        if not files:
            raise ReportError(f"parent run {parent.info.run_id} has no {SPACE_ARTIFACT}/*.yaml artifact")
        text = files[0].read_text()
    return parse_space(yaml_load(text), name=parent.data.tags.get(SWEEP_SPACE_TAG, files[0].stem),
                       path=files[0].name, text=text)


def children(client: MlflowClient, parent) -> list:
    """The parent's trial runs, oldest first."""
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = {quote_filter(parent.info.run_id)}",
                              order_by=["attributes.start_time ASC"], max_results=10000)
    return [r for r in runs if r.data.tags.get(ROLE_TAG, TRIAL) == TRIAL]


@dataclasses.dataclass
class Identity:
    """Who a trial run is, from its tags."""

    label: str
    seed: str
    trial_id: str
    optuna_number: int | None
    stopped_early: bool
    reused: bool


def identity(run) -> Identity:
    tags = run.data.tags
    number = tags.get(OPTUNA_NUMBER_TAG)
    return Identity(label=tags.get(ROW_TAG, ""), seed=tags.get(SEED_TAG, run.data.params.get("train.seed", "")),
                    trial_id=tags.get(TRIAL_ID_TAG, ""), optuna_number=int(number) if number is not None else None,
                    stopped_early=tags.get(STOPPED_TAG, "false").startswith("true"),
                    reused=tags.get(REPORTED_TAG) == "true")


def last_value(client: MlflowClient, run_id: str, metric: str) -> tuple[int, float] | None:
    """The step and value of a metric's last logged point, or None."""
    history = client.get_metric_history(run_id, metric)
    last = max(history, key=lambda m: m.step) if history else None
    return (last.step, last.value) if last is not None else None


def train_seconds(client: MlflowClient, run_id: str, global_batch: int) -> float:
    """Time inside training steps: each logged period's iterations × global batch / its images per second."""
    history = sorted(client.get_metric_history(run_id, THROUGHPUT), key=lambda m: m.step)
    total, previous = 0.0, 0
    for m in history:
        if m.value > 0:
            total += (m.step - previous) * global_batch / m.value
        previous = m.step
    return total


def sweep_wall_s(client: MlflowClient, parent, trial_ends_ms: list[float]) -> float:
    """The sweep's wall time of all sessions; when no session ended cleanly (the driver was killed), from the
    sweep's start to its last trial's end (``trial_ends_ms``: the trials' end times, in ms)."""
    last = last_value(client, parent.info.run_id, WALL_METRIC)
    if last is not None:
        return last[1]
    return max(0, max([parent.info.end_time or 0, *trial_ends_ms]) - parent.info.start_time) / 1000


def optuna_study_of(parent) -> dict[str, str]:
    """``{"storage": ..., "study_name": ...}`` of an Optuna sweep's parent run, else empty."""
    tags = parent.data.tags
    if OPTUNA_STORAGE_TAG not in tags:
        return {}
    return {"storage": tags[OPTUNA_STORAGE_TAG], "study_name": tags.get(OPTUNA_STUDY_TAG, "")}
