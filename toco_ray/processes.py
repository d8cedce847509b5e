"""Background services (an MLflow server, a ``ray start --block`` node) started in a session of their own and stopped
by that session's id, never by a process name.

A service started with ``start_new_session=True`` leads a new session whose id is its pid. Every process it forks
stays in that session, even those that open a process group of their own (Ray's workers do), so stopping the
session reaches all of them and nothing else on the machine: not another Ray cluster, not another MLflow server.

Example:
    >>> proc = start_service(["mlflow", "server", "--port", "5000"], Path("outputs/mlflow-server.log"))
    >>> stop_session(proc.pid)          # SIGTERM, then SIGKILL whatever is left after the grace period
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"  # what a local service binds: this machine only (Ray otherwise uses the machine's IP)
RAY_SESSION = re.compile(r"session_\d{4}-\d\d-\d\d_[\d_-]+\d")  # a Ray cluster's session folder name
POLL_S = 0.2  # how often a stopping session is looked at again
KILL_WAIT_S = 5.0  # after SIGKILL, how long to wait for the kernel to take the processes away
STARTTIME_FIELD = 22  # of /proc/<pid>/stat, counted from 1 as proc(5) does


def start_service(command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
                  cwd: str | os.PathLike | None = None) -> subprocess.Popen:
    """Starts ``command`` as the leader of a new session, stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)


def session_members(sid: int) -> list[int]:
    """Pids of the live processes (zombies excluded) in session ``sid``, read from ``/proc``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def stop_session(sid: int, grace_s: float = 10.0, leader_only: bool = False) -> list[int]:
    """Stops every process of session ``sid``: SIGTERM, then SIGKILL for what is still alive after ``grace_s``.

    Args:
        sid: the session id, i.e. the pid of the process started by :func:`start_service`.
        grace_s: seconds the processes get to exit on SIGTERM.
        leader_only: send SIGTERM to the leader alone and let it stop its children (``ray start --block`` drains
            its node in order this way; a SIGTERM to all of them at once kills the GCS under a draining raylet).

    Returns:
        The pids that had to be killed (empty when everything exited on SIGTERM).
    """
    members = session_members(sid)
    if not members:
        return []
    targets = [sid] if leader_only and sid in members else members
    _signal(targets, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap(sid)
        if not session_members(sid):
            return []
        time.sleep(POLL_S)
    stubborn = session_members(sid)
    _signal(stubborn, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while session_members(sid) and time.monotonic() < deadline:
        _reap(sid)
        time.sleep(POLL_S)
    _reap(sid)
    return stubborn


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (not a zombie)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None if no such process.

    A pid and its start time name one process: a later process that is given the same pid has another start time.
    """
    fields = _stat_fields(pid)
    return int(fields[STARTTIME_FIELD - 3]) if fields else None


def orphaned_ray_processes() -> dict[int, str]:
    """Ray processes of this user whose cluster is gone: pid → the cluster's session folder name.

    A driver killed with SIGKILL takes its local cluster's GCS and raylet with it, but Ray's dashboard and runtime-env
    agents survive, re-parented to init, and keep listening. Such a process is recognised by its title, which starts
    with ``ray::`` (Ray overwrites the command line), and by the log files it holds open in its cluster's session
    folder (``/tmp/ray/session_<time>_<pid>/logs``), a folder that no live process names on its command line any more,
    as a live cluster's ``gcs_server`` does (``--log_dir=...``). A live cluster's processes never qualify.
    """
    if not Path("/proc").is_dir():  # no /proc (macOS): nothing can be told apart safely, so nothing is stopped
        return {}
    candidates, live = {}, set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid, fields = int(entry.name), _stat_fields(int(entry.name))
        argv = _cmdline(pid)
        if not fields or fields[0] == "Z" or argv is None:
            continue
        if argv.startswith("ray::") and _owner(pid) == os.getuid():
            session = _ray_session_of(pid)
            if session:
                candidates[pid] = session
        else:
            live.update(RAY_SESSION.findall(argv))
    return {pid: session for pid, session in candidates.items() if session not in live}


def stop_orphaned_ray_processes(grace_s: float = 5.0) -> dict[int, str]:
    """Stops what :func:`orphaned_ray_processes` finds (SIGTERM, then SIGKILL after ``grace_s``); returns it."""
    orphans = orphaned_ray_processes()
    _signal(list(orphans), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(pid_alive(pid) for pid in orphans) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    _signal([pid for pid in orphans if pid_alive(pid)], signal.SIGKILL)
    return orphans


def _ray_session_of(pid: int) -> str:
    # the agents keep their log files open in <session folder>/logs
    try:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:
        return ""
    found = [m for link in links for m in RAY_SESSION.findall(link)]
    return found[0] if found else ""


def _owner(pid: int) -> int | None:
    try:
        return Path(f"/proc/{pid}").stat().st_uid
    except OSError:
        return None


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    # /proc/<pid>/stat: "pid (comm) state ppid pgrp session ..."; comm may hold spaces and parentheses, so the fields
    # are read after the last ")": the first one is field 3, the state
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no such process, or it ended while we looked
        return None
    return stat[stat.rindex(")") + 2 :].split()


def _signal(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    # a leader started by this process stays a zombie until it is waited for
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
