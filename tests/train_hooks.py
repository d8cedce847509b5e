"""Worker-loop hooks that tests pass into training to exercise recovery end to end; never part of a real run.

:class:`FailOnce` makes one worker exit abruptly (``os._exit(1)``) just before an iteration, once per run (a marker
file in the run folder), so its replacement trains on. :class:`HoldBefore` stops every worker of a run whose name
contains a fragment just before an iteration (after the checkpoints of earlier iterations are committed), writes a
``held`` marker into the run folder and waits there: a fixed point at which a test kills a sweep mid-trial.

The workers cannot import this file (it is not part of the package), so its code travels with the hooks.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from ray import cloudpickle

from toco_ray.distributed import TrainHook

MARKER_FILE = "fault-injected"
HOLD_MARKER = "held"
HOLD_TIMEOUT_S = 600.0  # a held worker trains on after this, so a forgotten hold cannot hang a run forever

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class FailOnce(TrainHook):
    """The worker of rank ``rank`` (default: the last) exits just before ``iteration``, the first time only."""

    iteration: int
    rank: int | None = None

    def before_step(self, loop, iteration: int) -> None:
        target = loop.worker.world_size - 1 if self.rank is None else self.rank
        if iteration != self.iteration or loop.worker.rank != target:
            return
        marker = Path(loop.spec.run_dir) / MARKER_FILE
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, f"rank {loop.worker.rank} exited before iteration {iteration}\n".encode())
        os.close(fd)
        sys.stderr.write(f"[fault hook] rank {loop.worker.rank} exits before iteration {iteration}\n")
        sys.stderr.flush()
        os._exit(1)


@dataclass(frozen=True)
class HoldBefore(TrainHook):
    """Every worker of a run whose folder name contains ``fragment`` waits before ``iteration``."""

    fragment: str
    iteration: int

    def before_step(self, loop, iteration: int) -> None:
        run_dir = Path(loop.spec.run_dir)
        if iteration != self.iteration or self.fragment not in run_dir.name:
            return
        (run_dir / HOLD_MARKER).write_text(f"held before iteration {iteration}\n")
        sys.stderr.write(f"[hold hook] waiting before iteration {iteration}\n")
        sys.stderr.flush()
        threading.Event().wait(HOLD_TIMEOUT_S)
