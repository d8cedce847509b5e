"""Test hooks: make one worker die mid-run, once, or hold one run mid-run, to exercise recovery end to end.

Set ``TOCO_RAY_FAULT_AT_ITER=k`` in the launching environment (it is forwarded to the workers): the worker of
rank ``TOCO_RAY_FAULT_RANK`` (default: the last rank) exits abruptly with ``os._exit(1)`` just before iteration
``k``. A marker file in the run folder makes it happen only once per run, so the replacement worker trains on.

Set ``TOCO_RAY_HOLD=FRAGMENT@k``: every worker of a run whose folder name contains ``FRAGMENT`` stops just before
iteration ``k`` (after the checkpoints of earlier iterations are committed), writes a ``held`` marker into the run
folder and waits there (at most ``HOLD_TIMEOUT_S``) — a fixed point at which a test kills a sweep mid-trial.

Nothing happens when the variables are unset.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

FAULT_ITER_ENV = "TOCO_RAY_FAULT_AT_ITER"
FAULT_RANK_ENV = "TOCO_RAY_FAULT_RANK"
MARKER_FILE = "fault-injected"
HOLD_ENV = "TOCO_RAY_HOLD"
HOLD_MARKER = "held"
HOLD_TIMEOUT_S = 600.0  # a held worker trains on after this, so a forgotten hook cannot hang a run forever


def maybe_fail(iteration: int, rank: int, world_size: int, run_dir: str | os.PathLike) -> None:
    """Exits this process if the fault hook targets this iteration and rank and has not fired in this run."""
    at = os.environ.get(FAULT_ITER_ENV, "")
    if not at or int(at) != iteration:
        return
    target = int(os.environ.get(FAULT_RANK_ENV, world_size - 1))
    if rank != target:
        return
    marker = Path(run_dir) / MARKER_FILE
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"rank {rank} exited before iteration {iteration}\n".encode())
    os.close(fd)
    sys.stderr.write(f"[fault hook] rank {rank} exits before iteration {iteration} ({FAULT_ITER_ENV})\n")
    sys.stderr.flush()
    os._exit(1)


def maybe_hold(iteration: int, run_dir: str | os.PathLike) -> None:
    """Blocks this worker before ``iteration`` if ``TOCO_RAY_HOLD`` names this run and iteration."""
    fragment, _, at = os.environ.get(HOLD_ENV, "").rpartition("@")
    if not fragment or int(at) != iteration or fragment not in Path(run_dir).name:
        return
    (Path(run_dir) / HOLD_MARKER).write_text(f"held before iteration {iteration}\n")
    sys.stderr.write(f"[hold hook] waiting before iteration {iteration} ({HOLD_ENV})\n")
    sys.stderr.flush()
    threading.Event().wait(HOLD_TIMEOUT_S)


def forwarded_env() -> dict[str, str]:
    """The test-hook variables set in this process, to pass on to the workers' runtime environment."""
    return {k: os.environ[k] for k in (FAULT_ITER_ENV, FAULT_RANK_ENV, HOLD_ENV) if k in os.environ}
