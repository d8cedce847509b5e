"""Training checkpoints: everything needed to continue a run at the same iteration with the same randomness.

A checkpoint is a folder holding ``state.pt`` (model with its EMA teacher head, optimiser, scheduler, iteration,
per-rank RNG states, evaluation history) and ``meta.json`` (iteration, run name, MLflow run id: readable without
torch). Files are written to a temporary name and renamed, so a reader never sees half a checkpoint.

Example:
    >>> state = TrainingState(iteration=200, model=objective.state_dict(), optimizer=opt.state_dict(),
    ...                       scheduler=sched.state_dict(), rng=[capture_rng(objective.generator)])
    >>> save_checkpoint(folder, state, meta={"run_name": "toco-synthetic-..."})
    >>> load_checkpoint(folder).iteration
    200
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toco_ray.atomic import atomic_write

STATE_FILE = "state.pt"
META_FILE = "meta.json"
FORMAT_VERSION = 1


@dataclass
class TrainingState:
    """What a checkpoint holds.

    Attributes:
        iteration: completed iterations; training continues at this 0-based iteration.
        model: state dict of the objective (network incl. the EMA teacher head).
        optimizer: optimiser state dict.
        scheduler: LR scheduler state dict.
        rng: one :func:`capture_rng` dict per rank (index = rank).
        history: evaluation history carried across restarts (e.g. the over-smoothing curves per evaluation).
        world_size: number of workers that wrote it (RNG states are restored only for the same world size).
    """

    iteration: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: list[dict[str, Any]] = field(default_factory=list)
    history: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1
    version: int = FORMAT_VERSION


def save_checkpoint(folder: str | os.PathLike, state: TrainingState, meta: dict[str, Any] | None = None) -> Path:
    """Writes ``state.pt`` and ``meta.json`` into ``folder`` atomically (temp file + rename) and returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / STATE_FILE, lambda fh: torch.save(dataclasses.asdict(state), fh))
    info = {"iteration": state.iteration, "world_size": state.world_size, "version": state.version, **(meta or {})}
    atomic_write(folder / META_FILE, lambda fh: fh.write(json.dumps(info, indent=2).encode()))
    return folder


def load_checkpoint(folder: str | os.PathLike, map_location: str | torch.device = "cpu") -> TrainingState:
    """Reads a checkpoint folder written by :func:`save_checkpoint`; raises naming the folder if it is not one."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint folder {folder} has no {STATE_FILE}; expected a toco-ray checkpoint")
    # weights_only=False: the state holds numpy RNG tuples and Python RNG states, written by this module only
    raw = torch.load(path, map_location=map_location, weights_only=False)
    if raw.get("version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format version {raw.get('version')}; expected {FORMAT_VERSION}")
    return TrainingState(**raw)


def read_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``meta.json`` of a checkpoint folder."""
    return json.loads((Path(folder) / META_FILE).read_text())


# --- random number generators ---------------------------------------------------------------------------
def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """States of Python's, NumPy's and torch's global RNGs (CUDA too when present) and of ``generator``."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`capture_rng`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
