"""Training checkpoints: everything needed to continue a run at the same iteration with the same randomness.

A checkpoint is a folder holding ``state.pt`` (model with its EMA teacher head, optimiser, scheduler, iteration,
per-rank RNG states, evaluation history) and ``meta.json`` (iteration, run name, MLflow run id: readable without
torch). Files are written to a temporary name and renamed, so a reader never sees half a file.

``meta.json`` is the commit marker: it is written last and records the size of ``state.pt``. Ray Train copies a
reported checkpoint into the run folder file by file and in no set order, so a copy cut short (a full disk, a
killed process) leaves a folder whose ``meta.json`` is missing, unreadable or names another size; such a folder
does not count (:func:`check_committed`), and readers fall back to the previous intact one
(:func:`intact_checkpoints`).

``state.pt`` holds tensors and plain Python values only (RNG states included) and is read with
``torch.load(weights_only=True)``: loading a checkpoint never runs code from the file.

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
import pickle
import random
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toco_ray.atomic import atomic_write
from toco_ray.errors import TocoError

STATE_FILE = "state.pt"
META_FILE = "meta.json"
FORMAT_VERSION = 2  # 2: RNG states as tensors and plain values, meta.json as the commit marker
CHECKPOINT_GLOB = "checkpoint_*"  # Ray Train checkpoint folders in a run folder, named with the zero-padded iteration


class CheckpointError(TocoError, ValueError):
    """A checkpoint is missing, incomplete or damaged; the message names the file and what to do."""


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
    """Writes ``state.pt``, then the commit marker ``meta.json``, into ``folder`` (each atomically); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / STATE_FILE, lambda fh: torch.save(dataclasses.asdict(state), fh))
    info = {
        "iteration": state.iteration,
        "world_size": state.world_size,
        "version": state.version,
        **(meta or {}),
        "files": {STATE_FILE: (folder / STATE_FILE).stat().st_size},
    }
    atomic_write(folder / META_FILE, lambda fh: fh.write(json.dumps(info, indent=2).encode()))
    return folder


def load_checkpoint(folder: str | os.PathLike, map_location: str | torch.device = "cpu") -> TrainingState:
    """Reads a committed checkpoint folder written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the folder is not a complete checkpoint, or ``state.pt`` is damaged or holds anything but
            tensors and plain values; the message names the file.
    """
    folder = Path(folder)
    problem = check_committed(folder)
    if problem:
        raise CheckpointError(problem)
    path = folder / STATE_FILE
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint file {path} holds objects other than tensors and plain values, which are not loaded "
            f"(code could run from them): it was not written by this version of toco-ray "
            f"({_first_line(err)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"checkpoint file {path} is damaged and cannot be read ({_first_line(err)}); use an earlier checkpoint"
        ) from None
    if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
        version = raw.get("version") if isinstance(raw, dict) else None
        raise CheckpointError(f"checkpoint {path} has format version {version}; expected {FORMAT_VERSION}")
    try:
        return TrainingState(**raw)
    except TypeError as err:
        raise CheckpointError(f"checkpoint {path} does not hold a toco-ray training state ({err})") from None


def read_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``meta.json`` of a checkpoint folder; raises :class:`CheckpointError` naming it if unreadable."""
    path = Path(folder) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {folder} has no {META_FILE}: it was not completely written") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint file {path} is damaged ({_first_line(err)})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint file {path} is damaged (expected a JSON object)")
    return meta


def check_committed(folder: str | os.PathLike) -> str:
    """Why ``folder`` is not a complete checkpoint (its commit marker is missing, damaged or names another
    ``state.pt`` size), or ``""`` when it is one."""
    folder = Path(folder)
    state = folder / STATE_FILE
    if not state.is_file():
        return f"checkpoint folder {folder} has no {STATE_FILE}; expected a toco-ray checkpoint"
    try:
        meta = read_meta(folder)
    except CheckpointError as err:
        return str(err)
    expected = meta.get("files", {}).get(STATE_FILE) if isinstance(meta.get("files"), dict) else None
    if expected is None:
        return f"checkpoint file {folder / META_FILE} records no size of {STATE_FILE} (not a committed checkpoint)"
    actual = state.stat().st_size
    if actual != expected:
        return f"checkpoint file {state} is incomplete ({actual} of {expected} bytes): it was not completely written"
    return ""


def intact_checkpoints(run_dir: str | os.PathLike, warn: bool = True) -> list[Path]:
    """The committed ``checkpoint_*`` folders of a run folder, newest first; each incomplete one is skipped with a
    warning on stderr naming its file."""
    found = []
    for folder in sorted(Path(run_dir).glob(CHECKPOINT_GLOB), reverse=True):
        if not folder.is_dir():
            continue
        problem = check_committed(folder)
        if problem:
            if warn:
                print(f"warning: skipping {folder.name}: {problem}", file=sys.stderr, flush=True)
            continue
        found.append(folder)
    return found


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


# --- random number generators ---------------------------------------------------------------------------
def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """States of Python's, NumPy's and torch's global RNGs (CUDA too when present) and of ``generator``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),  # (version, tuple of 625 ints, gauss_next): plain values
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    keys = np.asarray(numpy["keys"], dtype=np.int64).astype(np.uint32)
    np.random.set_state((numpy["name"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
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
