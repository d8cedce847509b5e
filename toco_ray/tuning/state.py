"""A sweep folder's state: ``sweep.json`` as typed records, the wall time of each session, one driver at a time.

``sweep.json`` holds a :class:`SweepState`, read and written whole (written atomically). A session is one run of
the sweep's driver: it is recorded when it starts (status ``RUNNING``), its end time is advanced on every trial event
(:func:`tick`, called by the ``SessionClock`` Tune callback of :mod:`~toco_ray.tuning.tuner`), and it is closed with
its final status. A driver that dies without closing its session (SIGKILL, a lost head node) leaves it ``RUNNING``
with the time of its last trial event; the next session marks it ``KILLED``, so the sweep's wall time still counts
it. The lock (``flock`` on ``sweep.lock``) is held by the driver while it runs and released by the kernel however the
driver ends: a second driver of the same sweep is refused while the first lives. This module needs no Ray.

Example:
    >>> with sweep_lock(folder):
    ...     open_session(state, time.time()); write_state(folder, state)
    ...     ...                                   # Tune runs, SessionClock(folder) among its callbacks
    ...     close_session(state, "FINISHED"); write_state(folder, state)
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toco_ray.atomic import atomic_write
from toco_ray.errors import TocoError
from toco_ray.tuning.space import SearchSpace

STATE_FILE = "sweep.json"
LOCK_FILE = "sweep.lock"
TUNE_DIR = "tune"  # Tune's experiment state (Tuner.restore continues it)
OPTUNA_DB = "optuna.db"  # the Optuna study, unless the sweep names another database
RUNNING, KILLED = "RUNNING", "KILLED"


class SweepError(TocoError, RuntimeError):
    """The sweep cannot start or continue; the message says what to do."""


@dataclass
class SweepSettings:
    """How the trials run; fixed when a sweep starts (a resumed sweep keeps them).

    Attributes:
        num_samples: Optuna trials (0 = the space's ``num_samples``).
        max_concurrent: trials at once (0 = automatic: one on two CPUs, see :mod:`~toco_ray.tuning.cluster`).
        workers_per_trial: Ray Train workers per trial.
        gpus_per_worker: 0 = CPU.
        cpus_per_worker: 0 = the cluster's CPUs shared between the workers of concurrent trials.
        overrides: config overrides applied to every trial, on top of the space's ``base.set`` (data root, smoke).
        max_trials: run at most this many trials (0 = all): the first seed and rows, or samples (smoke runs).
    """

    num_samples: int = 0
    max_concurrent: int = 0
    workers_per_trial: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 0.0
    overrides: dict[str, Any] = field(default_factory=dict)
    max_trials: int = 0


@dataclass
class Session:
    """One run of the sweep's driver: wall-clock start and end (seconds since the epoch), status, pid."""

    start: float
    end: float
    status: str
    pid: int


@dataclass
class OptunaStudy:
    """Where an Optuna sweep's study lives."""

    storage: str
    study_name: str


@dataclass
class SweepState:
    """What ``sweep.json`` holds: the space as it was when the sweep started, its settings, its MLflow parent run,
    its Optuna study and every session of its driver."""

    name: str = ""
    space_path: str = ""
    space_name: str = ""
    space_digest: str = ""
    space_text: str = ""
    settings: SweepSettings = field(default_factory=SweepSettings)
    experiment: str = ""
    tracking_uri: str = ""
    parent_run_id: str = ""
    optuna: OptunaStudy | None = None
    sessions: list[Session] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepState:
        """The state from parsed JSON; ``TypeError`` when a key is unknown or missing."""
        optuna = data.get("optuna")
        return cls(**{**data, "settings": SweepSettings(**data.get("settings", {})),
                      "optuna": OptunaStudy(**optuna) if optuna else None,
                      "sessions": [Session(**s) for s in data.get("sessions", [])]})


@dataclass
class Sweep:
    """A prepared sweep: its checked space, folder, settings and state (empty for a new sweep); nothing started."""

    space: SearchSpace
    name: str
    dir: Path
    tracking_uri: str
    experiment: str
    settings: SweepSettings
    state: SweepState | None
    optuna_storage: str = ""  # the study's database ("": optuna.db in the folder)

    @property
    def resumed(self) -> bool:
        return self.state is not None

    @property
    def tune_dir(self) -> Path:
        return self.dir / TUNE_DIR

    @property
    def optuna_url(self) -> str:
        return self.optuna_storage or f"sqlite:///{self.dir / OPTUNA_DB}"


# --- sweep.json ------------------------------------------------------------------------------------------------
def read_state(folder: Path) -> SweepState | None:
    """The sweep's ``sweep.json``, or None when the folder holds no sweep.

    Raises:
        SweepError: the file is not a sweep state this version reads (names it and what to do).
    """
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    try:
        return SweepState.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, AttributeError) as err:
        raise SweepError(f"{path} is not a sweep state this version reads ({err}); remove the folder or start "
                         "with --no-resume") from None


def write_state(folder: Path, state: SweepState) -> None:
    """Writes ``sweep.json`` atomically (temporary file + rename)."""
    text = json.dumps(dataclasses.asdict(state), indent=2, sort_keys=True)
    atomic_write(folder / STATE_FILE, lambda fh: fh.write(text.encode()))


# --- sessions ----------------------------------------------------------------------------------------------------
def open_session(state: SweepState, started: float) -> None:
    """Marks sessions left ``RUNNING`` by a killed driver ``KILLED`` and appends this one, ``RUNNING``."""
    for session in state.sessions:
        if session.status == RUNNING:
            session.status = KILLED
    state.sessions.append(Session(start=started, end=started, status=RUNNING, pid=os.getpid()))


def close_session(state: SweepState, status: str) -> float:
    """Ends this session with ``status``; returns the wall time of all sessions, in seconds."""
    state.sessions[-1].end, state.sessions[-1].status = time.time(), status
    return wall_time(state)


def wall_time(state: SweepState) -> float:
    return sum(s.end - s.start for s in state.sessions)


def tick(folder: Path) -> None:
    """Moves the running session's end time in ``sweep.json`` to now; a closed session is left as it is."""
    state = read_state(folder)
    if state is not None and state.sessions and state.sessions[-1].status == RUNNING:
        state.sessions[-1].end = time.time()
        write_state(folder, state)


# --- one driver per sweep ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def sweep_lock(folder: Path) -> Iterator[None]:
    """Holds ``<folder>/sweep.lock`` for the block.

    Raises:
        SweepError: another live driver holds it (its pid, as it wrote it, is named).
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise SweepError(f"sweep {folder.name!r} is running already (driver pid {holder}, lock "
                             f"{folder / LOCK_FILE}); wait for it to end, or start another sweep with --name or "
                             "--no-resume") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
