"""Where a worker loop runs and where its reports and checkpoints go.

A :class:`Session` gives :class:`~toco_ray.distributed.loop.WorkerLoop` its place in the group (rank, world size,
device), wraps the objective for data parallelism, hands back the checkpoint to resume from, and takes each
evaluation's report with its checkpoint. Two kinds exist:

- Ray Train's (:class:`~toco_ray.distributed.ray_worker.RayTrainSession`), in each worker of a ``TorchTrainer``: the
  checkpoint is reported to Ray Train, which copies it into the run folder and restarts a failed worker group from it.
- :class:`LocalSession`, a run of one worker in the calling process, as a sweep trial of one CPU worker trains inside
  its Tune trial function: no trainer, controller or worker process to start and tear down for each trial. The
  checkpoint goes straight into the run folder (the newest ``keep`` kept), and each report is handed on (to Tune).

This module needs no Ray.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from toco_ray.checkpointing import CHECKPOINT_GLOB, intact_checkpoints


@dataclass
class WorkerContext:
    """This worker's place in the group."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


class Session(Protocol):
    """What a worker loop needs from whatever runs it."""

    def worker(self, cpus_per_worker: float) -> WorkerContext:
        """This worker's rank, world size and device; a CPU worker gets ``cpus_per_worker`` torch threads."""

    def wrap(self, objective: torch.nn.Module) -> torch.nn.Module:
        """The objective ready for data-parallel steps (DDP across several workers)."""

    def latest_checkpoint(self) -> contextlib.AbstractContextManager[Path | None]:
        """The checkpoint folder to resume from (None: start from scratch), readable inside the block."""

    def report(self, report: dict[str, Any], checkpoint: Path | None, name: str) -> None:
        """Takes an evaluation's report and, from rank 0, its checkpoint folder (stored as ``name``); returns once
        the checkpoint is committed."""


class LocalSession:
    """A run of one worker in this process.

    Args:
        run_dir: the run folder; checkpoints are committed into ``run_dir/<name>`` and resumed from there.
        keep: checkpoints kept (the newest).
        report_fn: takes each report (a sweep trial's ``tune.report``: what ASHA and Optuna read).
        device: the training device.
    """

    def __init__(self, run_dir: str | Path, keep: int, report_fn: Callable[[dict[str, Any]], None],
                 device: torch.device | None = None):
        self.run_dir, self.keep, self.report_fn = Path(run_dir), keep, report_fn
        self.device = device or torch.device("cpu")

    def worker(self, cpus_per_worker: float) -> WorkerContext:
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, int(cpus_per_worker)))
        return WorkerContext(rank=0, world_size=1, device=self.device)

    def wrap(self, objective: torch.nn.Module) -> torch.nn.Module:
        return objective  # one worker: nothing to synchronise

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        intact = intact_checkpoints(self.run_dir)
        yield intact[0] if intact else None

    def report(self, report: dict[str, Any], checkpoint: Path | None, name: str) -> None:
        if checkpoint is not None:
            self.commit(checkpoint, name)
        self.report_fn(report)

    def commit(self, checkpoint: Path, name: str) -> None:
        """Copies ``checkpoint`` next to its final place, renames it there, and removes all but the newest
        ``keep`` checkpoints: a reader finds either the whole folder or none."""
        staging, target = self.run_dir / f".{name}.tmp", self.run_dir / name
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(checkpoint, staging)
        shutil.rmtree(target, ignore_errors=True)  # the same iteration trained again after a resume
        staging.rename(target)
        for old in sorted(p for p in self.run_dir.glob(CHECKPOINT_GLOB) if p.is_dir())[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
