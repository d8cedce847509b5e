"""The MLflow tracking server, started the same way on a laptop, in the tests and on a cluster's head node.

The server is the only process that opens the run database (SQLite by default: ``<folder>/mlflow.db``) and it stores
artifacts itself (``--artifacts-destination``): clients on other nodes log over HTTP and need neither the database
file nor a shared artifact folder. With the defaults it serves the very store the pipelines write to when no server
is set (``<output-dir>/mlflow.db``, artifacts in ``<output-dir>/mlartifacts``), so earlier runs show up in its UI.
It binds 127.0.0.1 unless told otherwise.

A server started from a folder records its session in ``<folder>/mlflow-server.pid``, with the start time of its
leader; :func:`stop_recorded` stops that session (the server and the workers it forks) and nothing else, not a
later process that was given the same pid.

Example:
    >>> spec = ServerSpec.in_folder("outputs", port=5000)  # outputs/mlflow.db (SQLite), outputs/mlartifacts/
    >>> proc = start_server(spec, Path("outputs"))          # returns once GET /health answers
    >>> spec.uri                                            # 'http://127.0.0.1:5000', what MLFLOW_TRACKING_URI gets
    >>> stop_session(proc.pid)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from toco_ray.errors import TocoError
from toco_ray.processes import LOOPBACK, pid_alive, process_start_time, start_service, stop_session
from toco_ray.tracking_names import ARTIFACT_DIR, DB_FILE

DEFAULT_PORT = 5000  # MLflow's own default
WILDCARD_HOSTS = ("0.0.0.0", "::")
PID_FILE = "mlflow-server.pid"
LOG_FILE = "mlflow-server.log"
HEALTH_PATH = "/health"
# A one-worker server answers in about 5 s on two cores; the first start on a new database also creates its tables.
READY_TIMEOUT_S = 90.0
POLL_S = 0.25
LOG_TAIL_LINES = 15
# The server's background job runner (MLflow 3) is not used here, and starting it costs time and processes.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class TrackingServerError(TocoError, RuntimeError):
    """The server cannot start or be stopped; the message says why and what to do."""


@dataclass(frozen=True)
class ServerSpec:
    """How to run one MLflow server.

    Attributes:
        host: interface to bind; 127.0.0.1 keeps the server to this machine.
        port: TCP port, a concrete one (:func:`pick_port` turns 0 into one).
        backend_store_uri: the run database (``sqlite:///abs/path/mlflow.db`` or a database URI).
        artifacts_destination: where the server stores uploaded artifacts (a folder, or e.g. ``s3://bucket/x``).
        workers: server worker processes.
    """

    host: str
    port: int
    backend_store_uri: str
    artifacts_destination: str
    workers: int = 1

    @classmethod
    def in_folder(cls, folder: str | os.PathLike, host: str = LOOPBACK, port: int = DEFAULT_PORT,
                  backend_store_uri: str = "", artifacts_destination: str = "", workers: int = 1) -> ServerSpec:
        """A server over ``folder``: ``sqlite:///<abs folder>/mlflow.db`` and ``<abs folder>/mlartifacts`` unless
        given."""
        root = Path(folder).expanduser().resolve()
        return cls(host=host, port=port, backend_store_uri=backend_store_uri or f"sqlite:///{root / DB_FILE}",
                   artifacts_destination=artifacts_destination or str(root / ARTIFACT_DIR), workers=workers)

    @property
    def uri(self) -> str:
        """The tracking URI a client on this machine uses (loopback when the server binds every interface)."""
        host = LOOPBACK if self.host in WILDCARD_HOSTS else self.host
        return f"http://{host}:{self.port}"


def server_command(spec: ServerSpec) -> list[str]:
    """The ``mlflow server`` command line for ``spec``, run by this Python."""
    return [
        sys.executable, "-m", "mlflow", "server",
        "--host", spec.host,
        "--port", str(spec.port),
        "--backend-store-uri", spec.backend_store_uri,
        "--artifacts-destination", spec.artifacts_destination,
        "--workers", str(spec.workers),
    ]


def check_spec(spec: ServerSpec) -> None:
    """Checks, before anything starts, that the port is free and the database and artifact folders are writable.

    Raises:
        TrackingServerError: naming the port or folder and what to do.
    """
    # imported here: MLflow's client takes a second or more to load, and the command line's --help, --stop and
    # usage errors need none of it
    from toco_ray.tracking import TrackingError, check_tracking_uri

    _check_port(spec.host, spec.port)
    if urllib.parse.urlparse(spec.backend_store_uri).scheme == "sqlite":
        try:
            check_tracking_uri(spec.backend_store_uri)
        except TrackingError as err:
            raise TrackingServerError(f"{err}; pick another --output-dir or --backend-store-uri") from None
    _check_artifact_folder(spec.artifacts_destination)


def pick_port(host: str) -> int:
    """A TCP port free on ``host`` right now, chosen by the kernel: what ``--port 0`` becomes before the server
    starts, so that its URI, its pid record and the health polling name the port it listens on.

    Raises:
        TrackingServerError: ``host`` is not an address of this machine.
    """
    try:
        return _bind(host, 0)
    except OSError as err:
        raise TrackingServerError(f"cannot listen on {host} ({err.strerror}): the address is not this machine's; "
                                  "pick another --host") from None


def _check_port(host: str, port: int) -> None:
    try:
        _bind(host, port)
    except OSError as err:
        raise TrackingServerError(
            f"cannot listen on {host}:{port} ({err.strerror}): another server uses the port, or the address is "
            "not this machine's; pick another --port (a server started here with --detach stops with --stop)"
        ) from None


def _bind(host: str, port: int) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
        sock.bind((host, port))
        return sock.getsockname()[1]


def _check_artifact_folder(destination: str) -> None:
    scheme = urllib.parse.urlparse(destination).scheme
    if scheme not in ("", "file"):
        return  # object stores are checked by the server when the first artifact arrives
    folder = Path(urllib.parse.urlparse(destination).path if scheme else destination)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrackingServerError(f"artifact folder {folder} cannot be created ({err.strerror}); pick another "
                                  "--artifacts-destination") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TrackingServerError(f"artifact folder {folder} is not writable; pick another --artifacts-destination")


def start_server(spec: ServerSpec, folder: str | os.PathLike, timeout_s: float = READY_TIMEOUT_S,
                 env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Starts the server in a session of its own, logging to ``<folder>/mlflow-server.log``, and returns once it
    answers ``GET /health``. A server that does not come up is stopped again.

    Raises:
        TrackingServerError: a check failed, the server exited, or it did not answer within ``timeout_s``.
    """
    check_spec(spec)
    log_path = Path(folder).expanduser().resolve() / LOG_FILE
    proc = start_service(server_command(spec), log_path, env={**os.environ, **SERVER_ENV, **(env or {})})
    try:
        wait_until_healthy(spec.uri, proc, timeout_s, log_path)
    except BaseException:
        stop_session(proc.pid)
        raise
    return proc


def wait_until_healthy(uri: str, proc: subprocess.Popen, timeout_s: float, log_path: Path) -> None:
    """Polls ``<uri>/health`` until it answers 200, the process exits, or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TrackingServerError(f"the MLflow server exited with code {proc.returncode} before answering; "
                                      f"last lines of {log_path}:\n{_tail(log_path)}")
        if is_healthy(uri):
            return
        time.sleep(POLL_S)
    raise TrackingServerError(f"the MLflow server at {uri} did not answer {HEALTH_PATH} within {timeout_s:.0f} s; "
                              f"last lines of {log_path}:\n{_tail(log_path)}")


def is_healthy(uri: str, timeout_s: float = 2.0) -> bool:
    """True if ``GET <uri>/health`` answers 200 within ``timeout_s``."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + HEALTH_PATH, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
    except OSError:
        return "(no log)"


# --- a server recorded in its folder -----------------------------------------------------------------------------
def record(folder: str | os.PathLike, spec: ServerSpec, pid: int) -> Path:
    """Writes ``<folder>/mlflow-server.pid``: the session id, its start time, URI and settings of the server just
    started."""
    path = Path(folder).expanduser().resolve() / PID_FILE
    entry = {"pid": pid, "start_time": process_start_time(pid), "uri": spec.uri, **asdict(spec)}
    path.write_text(json.dumps(entry, indent=2) + "\n")
    return path


def recorded(folder: str | os.PathLike) -> dict | None:
    """The record of a server started from ``folder`` that is still running, or None.

    The recorded pid counts only while it names the same process: one with the recorded start time (a record
    without one, written by an earlier version, needs a live process whose command line is ``mlflow server``).
    """
    path = Path(folder).expanduser().resolve() / PID_FILE
    try:
        entry = json.loads(path.read_text())
        pid = int(entry.get("pid", 0))
    except (OSError, ValueError, TypeError, AttributeError):  # no record, or not one this module wrote
        return None
    return entry if pid and _is_recorded_process(pid, entry.get("start_time")) else None


def stop_recorded(folder: str | os.PathLike) -> dict | None:
    """Stops the server recorded in ``folder`` (its whole session) and removes the record; returns the record, or
    None when no such server runs."""
    entry = recorded(folder)
    if entry is not None:
        stop_session(int(entry["pid"]))
    (Path(folder).expanduser().resolve() / PID_FILE).unlink(missing_ok=True)
    return entry


def _is_recorded_process(pid: int, start_time: int | None) -> bool:
    # a pid from an old record may since belong to another program, even another MLflow server: never signal that one
    if not pid_alive(pid):
        return False
    if start_time is not None:
        return process_start_time(pid) == start_time
    return _is_mlflow_server(pid)


def _is_mlflow_server(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"mlflow" in argv and b"server" in argv
