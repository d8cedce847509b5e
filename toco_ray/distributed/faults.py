"""Test hook: make one worker die mid-run, once, to exercise failure recovery end to end.

Set ``TOCO_RAY_FAULT_AT_ITER=k`` in the launching environment (it is forwarded to the workers): the worker of
rank ``TOCO_RAY_FAULT_RANK`` (default: the last rank) exits abruptly with ``os._exit(1)`` just before iteration
``k``. A marker file in the run folder makes it happen only once per run, so the replacement worker trains on.
Nothing happens when the variable is unset.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FAULT_ITER_ENV = "TOCO_RAY_FAULT_AT_ITER"
FAULT_RANK_ENV = "TOCO_RAY_FAULT_RANK"
MARKER_FILE = "fault-injected"


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


def forwarded_env() -> dict[str, str]:
    """The fault-hook variables set in this process, to pass on to the workers' runtime environment."""
    return {k: os.environ[k] for k in (FAULT_ITER_ENV, FAULT_RANK_ENV) if k in os.environ}
