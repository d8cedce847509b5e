"""Distributed ToCo training on Ray Train: the launcher (driver side) and the per-worker loop.

``launch(TrainJob(...))`` validates the job, creates the MLflow run and fits a ``TorchTrainer`` whose workers run
:func:`~toco_ray.distributed.loop.train_loop_per_worker`. See ``pipelines/train.py`` for the command line.
"""

from toco_ray.distributed.job import JobError, TrainJob, new_run_name, validate_job
from toco_ray.distributed.launcher import TrainOutcome, build_trainer, default_output_dir, launch, resolve_resume
from toco_ray.distributed.loop import WorkerSpec, train_loop_per_worker

__all__ = [
    "JobError",
    "TrainJob",
    "TrainOutcome",
    "WorkerSpec",
    "build_trainer",
    "default_output_dir",
    "launch",
    "new_run_name",
    "resolve_resume",
    "train_loop_per_worker",
    "validate_job",
]
