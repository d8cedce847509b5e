"""Distributed ToCo training on Ray Train: the launcher (driver side) and the per-worker loop.

``launch(TrainJob(...))`` validates the job, creates the MLflow run and fits a ``TorchTrainer`` whose workers run
:class:`~toco_ray.distributed.loop.WorkerLoop` (through :mod:`~toco_ray.distributed.ray_worker`);
``train_in_process`` runs the same loop for one CPU worker in the calling process. Hooks
(:mod:`~toco_ray.distributed.hooks`) attach MLflow logging and test probes to the loop. See ``pipelines/train.py``
for the command line.
"""

from toco_ray.distributed.hooks import TrainHook
from toco_ray.distributed.job import JobError, TrainJob, new_run_name, validate_job
from toco_ray.distributed.launcher import (
    TrainOutcome,
    build_trainer,
    default_output_dir,
    launch,
    resolve_resume,
    train_in_process,
)
from toco_ray.distributed.loop import WorkerLoop, WorkerSpec
from toco_ray.distributed.ray_worker import train_loop_per_worker

__all__ = [
    "JobError",
    "TrainJob",
    "TrainHook",
    "TrainOutcome",
    "WorkerLoop",
    "WorkerSpec",
    "build_trainer",
    "default_output_dir",
    "launch",
    "new_run_name",
    "resolve_resume",
    "train_in_process",
    "train_loop_per_worker",
    "validate_job",
]
