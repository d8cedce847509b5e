"""A sweep folder's ``sweep.json``, the wall time of each of its sessions, and the lock that keeps one driver per sweep.

``sweep.json`` is written atomically. A session is one run of the sweep's driver: it is recorded when it starts
(status ``RUNNING``), its end time is advanced on every trial event by :class:`SessionClock`, and it is closed with
its final status. A driver that dies without closing its session (SIGKILL, a lost head node) leaves it ``RUNNING``
with the time of its last trial event; the next session marks it ``KILLED``, so the sweep's wall time still counts
it. The lock (``flock`` on ``sweep.lock``) is held by the driver while it runs and released by the kernel however
the driver ends: a second driver of the same sweep is refused while the first lives.

Example:
    >>> with sweep_lock(folder):
    ...     open_session(state, time.time()); write_state(folder, state)
    ...     ...                                   # Tune runs, SessionClock(folder) among its callbacks
    ...     close_session(state, "FINISHED"); write_state(folder, state)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ray.tune import Callback

from toco_ray.atomic import atomic_write
from toco_ray.errors import TocoError

STATE_FILE = "sweep.json"
LOCK_FILE = "sweep.lock"
RUNNING, KILLED = "RUNNING", "KILLED"


class SweepError(TocoError, RuntimeError):
    """The sweep cannot start or continue; the message says what to do."""


def read_state(folder: Path) -> dict[str, Any]:
    """The sweep's ``sweep.json``, or ``{}`` when the folder holds no sweep."""
    path = folder / STATE_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SweepError(f"{path} is not valid JSON ({err}); remove the folder or start with --no-resume") from None


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """Writes ``sweep.json`` atomically (temporary file + rename)."""
    text = json.dumps(state, indent=2, sort_keys=True)
    atomic_write(folder / STATE_FILE, lambda fh: fh.write(text.encode()))


# --- sessions ----------------------------------------------------------------------------------------------------
def open_session(state: dict[str, Any], started: float) -> None:
    """Marks sessions left ``RUNNING`` by a killed driver ``KILLED`` and appends this one, ``RUNNING``."""
    for session in state["sessions"]:
        if session["status"] == RUNNING:
            session["status"] = KILLED
    state["sessions"].append({"start": started, "end": started, "status": RUNNING, "pid": os.getpid()})


def close_session(state: dict[str, Any], status: str) -> float:
    """Ends this session with ``status``; returns the wall time of all sessions, in seconds."""
    state["sessions"][-1].update(end=time.time(), status=status)
    return wall_time(state)


def wall_time(state: dict[str, Any]) -> float:
    return sum(s["end"] - s["start"] for s in state["sessions"])


class SessionClock(Callback):
    """Driver-side Tune callback: moves the running session's end time in ``sweep.json`` to now on every trial
    start, result and end, so a driver killed without warning leaves its time up to its last trial event.

    It holds only the folder (Tune pickles callbacks with its state, and a restored sweep is a new session)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self.tick()

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self.tick()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.tick()

    def tick(self) -> None:
        state = read_state(self.folder)
        sessions = state.get("sessions") or []
        if sessions and sessions[-1]["status"] == RUNNING:
            sessions[-1]["end"] = time.time()
            write_state(self.folder, state)


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
