"""Launches a ToCo training job: validate, track, train, end the run.

Order matters: everything that can be wrong with the job is checked before a worker starts
(:func:`~toco_ray.distributed.job.validate_job`, then the cluster's resources), the MLflow run is created (or
found again when resuming) and given its params, tags and resolved config, and only then does training start.

:func:`launch` fits a ``TorchTrainer`` (Ray Train): it restarts a failed worker group from the latest checkpoint up
to ``max_failures`` times, and resuming a run by name reuses its storage folder, where Ray Train finds that
checkpoint. :func:`train_in_process` runs one CPU worker in the calling process instead (a sweep trial of one
worker, inside its Tune trial function): the same worker loop and checkpoints, without a trainer, controller and
worker process to start and tear down.

Example:
    >>> job = TrainJob(cfg=build_config("synthetic"), output_dir=Path("outputs").resolve(),
    ...                run_name=new_run_name("synthetic"), workers=2, tracking_uri=resolve_tracking_uri("outputs"))
    >>> outcome = launch(job)
    >>> outcome.metrics["cam_miou"]
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from toco_ray.checkpointing import CHECKPOINT_GLOB, check_committed, intact_checkpoints
from toco_ray.config import apply_overrides, flatten, load_yaml, save_yaml
from toco_ray.data import class_names
from toco_ray.data.cache import CACHE_ENV
from toco_ray.distributed.interrupts import fit_interruptibly
from toco_ray.distributed.job import CONFIG_FILE, JobError, TrainJob, auto_workers, validate_job
from toco_ray.distributed.loaders import per_worker_batch
from toco_ray.distributed.loop import WorkerLoop, WorkerSpec
from toco_ray.distributed.mlflow_hook import MLflowHook
from toco_ray.distributed.progress import say
from toco_ray.distributed.ray_worker import train_loop_per_worker
from toco_ray.distributed.session import LocalSession
from toco_ray.ray_cluster import init_ray
from toco_ray.tracking import (
    RunLogger,
    artifact_root,
    end_run,
    is_local_store,
    path_tag,
    provenance_tags,
    run_params,
    start_run,
)

FORWARDED_ENV = (CACHE_ENV, "HF_HOME", "TORCH_HOME")  # driver settings the workers must see too
RAY_LOG_LEVEL = "WARNING"  # Ray's own INFO chatter would drown the progress lines


@dataclass
class TrainOutcome:
    """What a finished run left behind."""

    run_name: str
    mlflow_run_id: str
    checkpoint_path: str | None
    metrics: dict[str, Any]


def launch(job: TrainJob, callbacks: Sequence[Any] = (), end_on_error: bool = True) -> TrainOutcome:
    """Validates the job, starts (or joins) Ray, creates the MLflow run and trains; returns the final report.

    Args:
        job: the job.
        callbacks: Ray Train ``UserCallback``s for the run, e.g. Tune's ``TuneReportCallback`` when the job runs
            inside a Tune trial (it forwards each evaluation's report, keys in ``loop.REPORT_METRICS``).
        end_on_error: mark the MLflow run ``FAILED`` (``KILLED`` on Ctrl-C or SIGTERM) when training raises. A
            sweep's trial passes False: the sweep driver owns its trials' end status, and a trial that Tune stops is
            torn down while its training call unwinds, which could otherwise overwrite the driver's status
            afterwards.

    Raises:
        JobError: the job cannot start (nothing has been started then).
        TrainingInterrupted: Ctrl-C or SIGTERM stopped the training (called from the main thread).
    """
    validate_job(job)
    init_ray(job.ray_address)
    job = resolve_workers(job)
    cpus = check_cluster(job)
    run_id = open_tracking(job)
    say(
        f"run {job.run_name}: {job.workers} worker(s) × {cpus:g} CPU"
        + (f" × {job.gpus_per_worker:g} GPU" if job.gpus_per_worker else "")
        + f", global batch {job.cfg.train.global_batch}, {job.cfg.schedule.max_iters} iterations; "
        f"MLflow {job.tracking_uri} (run {run_id})"
    )
    try:
        result = fit_interruptibly(build_trainer(job, run_id, cpus, callbacks).fit)
    except BaseException as err:
        end_failed(job, run_id, err, end_on_error)
        raise
    checkpoint = result.checkpoint.path if result.checkpoint is not None else None
    return finish(job, run_id, checkpoint, dict(result.metrics or {}))


def train_in_process(job: TrainJob, report: Callable[[dict[str, Any]], None],
                     end_on_error: bool = True) -> TrainOutcome:
    """Validates the job and trains its one CPU worker in this process; checkpoints go straight into the run folder
    and every evaluation's report to ``report`` (a sweep trial passes ``tune.report``).

    ``max_failures`` does not apply: there is no worker group to restart (a sweep's Tune retries the trial, which
    resumes from the run folder). ``end_on_error`` as in :func:`launch`.

    Raises:
        JobError: the job cannot start, or asks for more than one worker or for a GPU.
    """
    validate_job(job)
    if job.workers > 1 or job.gpus_per_worker:
        raise JobError(f"training in process takes one CPU worker; this job asks for {job.workers} worker(s) × "
                       f"{job.gpus_per_worker:g} GPU (use launch)")
    cpus = job.cpus_per_worker or 1.0
    run_id = open_tracking(job)
    say(f"run {job.run_name}: 1 worker × {cpus:g} CPU in this process, global batch {job.cfg.train.global_batch}, "
        f"{job.cfg.schedule.max_iters} iterations; MLflow {job.tracking_uri} (run {run_id})")
    reports: list[dict[str, Any]] = []

    def keep_and_report(metrics: dict[str, Any]) -> None:
        reports.append(metrics)
        report(metrics)

    session = LocalSession(job.run_dir, job.keep_checkpoints, keep_and_report)
    try:
        WorkerLoop(worker_spec(job, run_id, cpus), session).run()
    except BaseException as err:  # a Tune stop ends the trial with SystemExit: its run is the sweep's to end
        end_failed(job, run_id, err, end_on_error)
        raise
    intact = intact_checkpoints(job.run_dir, warn=False)
    return finish(job, run_id, str(intact[0]) if intact else None, reports[-1] if reports else {})


def finish(job: TrainJob, run_id: str, checkpoint: str | None, metrics: dict[str, Any]) -> TrainOutcome:
    """Records the final checkpoint and ends the MLflow run ``FINISHED``."""
    if checkpoint:
        RunLogger(job.tracking_uri, run_id).set_tags({"checkpoint.final": path_tag(checkpoint, job.tracking_uri)})
    end_run(job.tracking_uri, run_id, "FINISHED")
    return TrainOutcome(job.run_name, run_id, checkpoint, metrics)


def end_failed(job: TrainJob, run_id: str, err: BaseException, end_on_error: bool) -> None:
    """After training raised ``err``: frees a cut-short checkpoint copy first, marks the run ``FAILED``
    (``KILLED`` after Ctrl-C or SIGTERM) when ``end_on_error``, and turns a full disk into a :class:`DiskFullError`."""
    disk_full = disk_full_message(job, err)
    if end_on_error:
        end_run(job.tracking_uri, run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
    if disk_full:
        raise DiskFullError(disk_full) from None


class DiskFullError(JobError):
    """Training stopped because the run folder's disk is full; the message says where and how to continue."""


def disk_full_message(job: TrainJob, err: BaseException) -> str:
    """If ``err`` (possibly a Ray error wrapping a worker's) is a full disk: removes the run's incomplete checkpoint
    folders, which hold the space the failed copy took, and returns one line saying what happened; else ``""``."""
    if "No space left on device" not in str(err) and "[Errno 28]" not in str(err):
        return ""
    removed = []
    for folder in sorted(job.run_dir.glob(CHECKPOINT_GLOB)):
        if folder.is_dir() and check_committed(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    intact = intact_checkpoints(job.run_dir, warn=False)
    try:
        free = f"{shutil.disk_usage(job.run_dir).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    return (
        f"the disk of {job.run_dir} is full ({free}"
        + (f", incomplete {', '.join(removed)} removed" if removed else "")
        + "); the MLflow run is FAILED. Free space, then continue with --resume "
        + job.run_name
        + (f" (from {intact[0].name})" if intact else " (no complete checkpoint yet: it starts over)")
    )


def resolve_resume(job: TrainJob, overrides: dict[str, Any]) -> TrainJob:
    """For ``--resume``: the job with the run's saved config (plus any ``overrides`` given again)."""
    path = job.run_dir / CONFIG_FILE
    if not path.is_file():
        raise JobError(f"cannot resume run {job.run_name!r}: {path} does not exist (check --output-dir)")
    return job.with_cfg(apply_overrides(load_yaml(path), overrides))


# --- Ray -------------------------------------------------------------------------------------------------
def resolve_workers(job: TrainJob) -> TrainJob:
    """``workers = 0``: one worker per GPU slot (``--gpus-per-worker``) or CPU slot, reduced to a divisor of the
    global batch. On CPU, several single-threaded workers beat one multi-threaded worker on small models."""
    if job.workers:
        return job
    total = ray.cluster_resources()
    if job.gpus_per_worker:
        slots = int(total.get("GPU", 0) // job.gpus_per_worker)
        if slots < 1:
            raise JobError(f"--gpus-per-worker {job.gpus_per_worker:g} but the Ray cluster has no GPU")
    else:
        slots = int(total.get("CPU", 1) // (job.cpus_per_worker or 1))
    return dataclasses.replace(job, workers=auto_workers(job.cfg.train.global_batch, slots))


def check_cluster(job: TrainJob) -> float:
    """CPUs per worker; raises :class:`JobError` if the cluster cannot host the workers (Ray would wait forever)."""
    total = ray.cluster_resources()
    cpus = job.cpus_per_worker or max(1.0, float(int(total.get("CPU", 1) // job.workers)))
    need_cpu = cpus * job.workers
    if need_cpu > total.get("CPU", 0):
        raise JobError(
            f"{job.workers} workers × {cpus:g} CPUs need {need_cpu:g} CPUs; the Ray cluster has "
            f"{total.get('CPU', 0):g} (lower --workers or --cpus-per-worker)"
        )
    need_gpu = job.gpus_per_worker * job.workers
    if need_gpu > total.get("GPU", 0):
        raise JobError(
            f"{job.workers} workers × {job.gpus_per_worker:g} GPUs need {need_gpu:g} GPUs; the Ray cluster has "
            f"{total.get('GPU', 0):g} (use --gpus-per-worker 0 to train on CPU)"
        )
    return cpus


def build_trainer(job: TrainJob, mlflow_run_id: str, cpus_per_worker: float, callbacks: Sequence[Any] = ()):
    """The ``TorchTrainer``: gloo on CPU, NCCL on GPU (Ray Train's default per device), checkpoints kept in the
    run folder, ``max_failures`` worker-group restarts."""
    resources = {"CPU": cpus_per_worker}
    if job.gpus_per_worker:
        resources["GPU"] = job.gpus_per_worker
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": worker_spec(job, mlflow_run_id, cpus_per_worker)},
        scaling_config=ScalingConfig(
            num_workers=job.workers, use_gpu=job.gpus_per_worker > 0, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=job.run_name,
            storage_path=str(job.storage_path),
            failure_config=FailureConfig(max_failures=job.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=job.keep_checkpoints),
            worker_runtime_env={"env_vars": env} if env else None,
            callbacks=list(callbacks),
            logging_config=LoggingConfig(log_level=RAY_LOG_LEVEL),
        ),
    )


def worker_spec(job: TrainJob, mlflow_run_id: str, cpus_per_worker: float) -> WorkerSpec:
    """What every worker gets: the config, the run, and the hooks (MLflow's first when the run is tracked)."""
    tracking = (MLflowHook(job.tracking_uri, mlflow_run_id, job.print_per_class),) if mlflow_run_id else ()
    return WorkerSpec(
        cfg=job.cfg,
        run_name=job.run_name,
        run_dir=str(job.run_dir),
        mlflow_run_id=mlflow_run_id,
        cpus_per_worker=cpus_per_worker,
        class_names=class_names(job.cfg.data, job.cfg.model.num_classes),
        hooks=(*tracking, *job.hooks),
    )


# --- MLflow ----------------------------------------------------------------------------------------------
def open_tracking(job: TrainJob) -> str:
    """Creates (or, resuming, finds) the MLflow run; logs params, provenance tags and the resolved config."""
    location = artifact_root(job.output_dir) if is_local_store(job.tracking_uri) else None
    extra_tags = {"mlflow.parentRunId": job.parent_run_id} if job.parent_run_id else {}
    run_id = start_run(job.tracking_uri, job.experiment, job.run_name, location, resume=job.resume, tags=extra_tags,
                       title=job.title)
    logger = RunLogger(job.tracking_uri, run_id)
    world = job.workers
    logger.log_params(
        run_params(
            flatten(job.cfg),
            global_batch=job.cfg.train.global_batch,
            world_size=world,
            per_worker_batch=per_worker_batch(job.cfg.train.global_batch, world),
            gpus_per_worker=job.gpus_per_worker,
        ) | job.params,
        allow_changes=job.resume,
    )
    logger.set_tags(
        {
            **provenance_tags(),
            "ray.run_dir": path_tag(job.run_dir, job.tracking_uri),
            "resumed": str(job.resume).lower(),
            **job.tags,
        }
    )
    config_path = save_yaml(job.cfg, job.run_dir / CONFIG_FILE)
    logger.log_file(config_path, "config")
    return run_id


def default_output_dir() -> Path:
    """``outputs/`` in the current directory (absolute, so workers in other folders find it)."""
    return Path("outputs").resolve()
