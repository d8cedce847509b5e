"""A ``TorchTrainer`` worker: Ray Train's context, DDP wrapping and checkpoints, as a worker loop's session.

:func:`train_loop_per_worker` is what the launcher gives ``TorchTrainer``; it runs
:class:`~toco_ray.distributed.loop.WorkerLoop` with a :class:`RayTrainSession`. Ray Train copies each reported
checkpoint into the run folder and restarts a failed worker group from the latest one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConsistencyMode

from toco_ray.distributed.loop import WorkerLoop, WorkerSpec
from toco_ray.distributed.session import WorkerContext


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point given to ``TorchTrainer``: ``config = {"spec": WorkerSpec}``."""
    spec: WorkerSpec = config["spec"]
    WorkerLoop(spec, RayTrainSession()).run()


class RayTrainSession:
    """A worker loop's session inside a Ray Train worker (see :class:`~toco_ray.distributed.session.Session`)."""

    def worker(self, cpus_per_worker: float) -> WorkerContext:
        """Rank, world size and device from Ray Train's context; CPU workers get ``cpus_per_worker`` threads."""
        ctx = ray.train.get_context()
        device = ray.train.torch.get_device()
        quiet_report_logs()
        if device.type == "cpu":
            torch.set_num_threads(max(1, int(cpus_per_worker)))
        return WorkerContext(ctx.get_world_rank(), ctx.get_world_size(), device)

    def wrap(self, objective: torch.nn.Module) -> torch.nn.Module:
        """The objective on this worker's device, in DDP when there are several workers.

        ``find_unused_parameters``: loss terms switch on over the schedule (seg/reg after ``seg_start_iter``), so
        some parameters receive no gradient in some iterations.
        """
        return ray.train.torch.prepare_model(objective, parallel_strategy_kwargs={"find_unused_parameters": True})

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder:
            yield Path(folder)

    def report(self, report: dict[str, Any], checkpoint: Path | None, name: str) -> None:
        if checkpoint is None:
            ray.train.report(report, checkpoint=None)
        else:
            ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(checkpoint),
                             checkpoint_dir_name=name)
        # Reports are consumed by the controller asynchronously: wait until this checkpoint is committed, or a
        # worker dying soon after would restart the group from the previous one (or from scratch).
        ray.train.get_all_reported_checkpoints(consistency_mode=CheckpointConsistencyMode.COMMITTED)


def quiet_report_logs() -> None:
    """Keeps Ray Train's one-line-per-report INFO log off the console (progress lines say the same, readably).

    That log goes through a logger named by its module's file path, which ``LoggingConfig(log_level=...)`` does
    not reach, so its level is raised here; nothing else is affected.
    """
    try:  # a Ray-internal module: optional, as a Ray version without it has nothing to quiet
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
