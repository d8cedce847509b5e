r"""Starts the MLflow tracking server that training runs and sweeps log to: 127.0.0.1, SQLite, local artifacts.

Copy-paste:

    python -m pipelines.tracking_server                  # http://127.0.0.1:5000 over outputs/mlflow.db; Ctrl-C stops it
    python -m pipelines.tracking_server --detach         # leave it running in the background
    python -m pipelines.tracking_server --stop           # stop the one started with --detach
    python -m pipelines.tracking_server --smoke --port 0 --output-dir /tmp/mlflow-smoke   # start, answer, stop (CI)
    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python -m pipelines.sweep search_spaces/quick_demo.yaml
    # a cluster's head node (cluster.yaml): database on the head, artifacts on shared storage
    python -m pipelines.tracking_server --detach --host 0.0.0.0 --output-dir ~/toco-db \
        --artifacts-destination /mnt/shared/toco/mlartifacts --workers 2

By default the server serves the store the pipelines write to without one (``<output-dir>/mlflow.db``, artifacts in
``<output-dir>/mlartifacts``), so earlier runs show up in its UI. It prints its URI once ``/health`` answers;
``--port 0`` picks a free port first, and that URI names it. Its log is ``<output-dir>/mlflow-server.log`` and its
session id is recorded in ``<output-dir>/mlflow-server.pid``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from toco_ray.cli import command_parser
from toco_ray.errors import EXIT_STATUS, TocoError
from toco_ray.processes import stop_session
from toco_ray.tracking_names import TRACKING_URI_ENV
from toco_ray.tracking_server import (
    DEFAULT_PORT,
    LOG_FILE,
    LOOPBACK,
    PID_FILE,
    READY_TIMEOUT_S,
    WILDCARD_HOSTS,
    ServerSpec,
    pick_port,
    record,
    recorded,
    start_server,
    stop_recorded,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("pipelines.tracking_server", __doc__.splitlines()[0])
    parser.add_argument("--host", default=LOOPBACK,
                        help=f"interface to bind: {LOOPBACK} is this machine only; 0.0.0.0 on a cluster's head, "
                             "whose nodes log to it over the private network")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="TCP port; 0: a port free on --host now, named in the URI the command prints")
    parser.add_argument("--output-dir", default="outputs",
                        help="folder of the database, the server's log and its pid record; outputs is the "
                             "pipelines' own store")
    parser.add_argument("--backend-store-uri", default="",
                        help="run database (default: sqlite:///<output-dir>/mlflow.db)")
    parser.add_argument("--artifacts-destination", default="",
                        help="where the server stores artifacts: a folder or an object-store URI "
                             "(default: <output-dir>/mlartifacts)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--timeout", type=float, default=READY_TIMEOUT_S,
                        help="seconds to wait for the server to answer before giving up")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true",
                      help="return once the server answers and leave it running (stop it with --stop)")
    mode.add_argument("--stop", action="store_true",
                      help="stop the server started from --output-dir (no-op when none runs)")
    mode.add_argument("--smoke", action="store_true",
                      help="CI: start the server, check that it answers, stop it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(args.output_dir).expanduser()
    if args.stop:
        entry = stop_recorded(folder)
        print(f"stopped the MLflow server at {entry['uri']} (session {entry['pid']})" if entry
              else f"no MLflow server started from {folder} is running")
        return 0
    if not 0 <= args.port <= 65535:
        print(f"error: --port must be a TCP port in 0..65535 (0: any free port), got {args.port}", file=sys.stderr)
        return EXIT_STATUS
    running = recorded(folder)
    if running:
        print(f"error: an MLflow server started from {folder} already runs at {running['uri']} (session "
              f"{running['pid']}); use it, or stop it first: python -m pipelines.tracking_server --stop "
              f"--output-dir {args.output_dir}", file=sys.stderr)
        return EXIT_STATUS
    try:
        port = args.port or pick_port(args.host)  # the port itself, not 0: the URI, the record and /health name it
    except TocoError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_STATUS
    spec = ServerSpec.in_folder(folder, args.host, port, args.backend_store_uri, args.artifacts_destination,
                                args.workers)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM acts as Ctrl-C: the server is stopped again
    try:
        return run(args, spec, folder)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace, spec: ServerSpec, folder: Path) -> int:
    """Starts the server, then stops it (--smoke), leaves it running (--detach) or serves until stopped."""
    try:
        proc = start_server(spec, folder, timeout_s=args.timeout)
    except TocoError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_STATUS
    except KeyboardInterrupt:
        return 130
    if args.smoke:
        stop_session(proc.pid)
        print(f"MLflow tracking server answered at {spec.uri} and stopped (log: {folder.resolve() / LOG_FILE})")
        return 0
    if args.detach:
        announce(spec, record(folder, spec, proc.pid).parent)
        print(f"  stop it: python -m pipelines.tracking_server --stop --output-dir {args.output_dir}")
        return 0
    return serve_until_stopped(spec, proc.pid, folder)


def announce(spec: ServerSpec, folder: Path) -> None:
    bound = f" (listening on every interface, port {spec.port})" if spec.host in WILDCARD_HOSTS else ""
    print(f"MLflow tracking server at {spec.uri}{bound}\n  runs: {spec.backend_store_uri}\n  artifacts: "
          f"{spec.artifacts_destination}\n  log: {folder / LOG_FILE}\n  use it: export {TRACKING_URI_ENV}={spec.uri}",
          flush=True)
    for line in experiment_links(spec.uri):
        print(f"  {line}", flush=True)


def experiment_links(uri: str, most: int = 10) -> list[str]:
    """A runs-table link per experiment the store holds (newest first): MLflow 3 otherwise opens its GenAI pages."""
    # imported here: the server's own command line (and its --help) does not need MLflow's client in this process
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from toco_ray.tracking import runs_view_url

    try:
        client = MlflowClient(tracking_uri=uri)
        experiments = client.search_experiments(max_results=most, order_by=["creation_time DESC"])
    except MlflowException as err:
        return [f"(could not list the experiments: {err})"]
    named = [e for e in experiments if e.name != "Default"]
    if not named:
        return ["no experiments yet: every command that logs runs prints the link to its runs table"]
    return [f"runs of {e.name}: {runs_view_url(uri, e.experiment_id)}" for e in named]


def serve_until_stopped(spec: ServerSpec, pid: int, folder: Path) -> int:
    """Records and announces the server, then waits on it; Ctrl-C or SIGTERM stops its session. Returns 1 if the
    server died by itself."""
    code = 0
    try:
        announce(spec, record(folder, spec, pid).parent)
        _, status = os.waitpid(pid, 0)
        print(f"error: the MLflow server exited by itself (wait status {status}); see {folder.resolve() / LOG_FILE}",
              file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        pass
    finally:
        stop_session(pid)  # the server's own workers, whatever ended the wait
        (folder.resolve() / PID_FILE).unlink(missing_ok=True)
    return code


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
