"""Joining a Ray cluster, or starting a local one that behaves when other Ray instances share the machine.

A local cluster puts its node address and dashboard on loopback (other Ray processes, such as the raylet, the
workers' gRPC servers and the agents, still listen on every interface: Ray's token authentication protects them,
see README "Hostile files and failures"), pins its dashboard port and tells every task and actor of the job where the
dashboard's API server is (``RAY_API_SERVER_ADDRESS``). Ray Train's placement-group cleaner — what frees the
workers of a finished or stopped run — finds the state API through it; without it, it gives up whenever a second
Ray instance runs on the same machine ("Found multiple active Ray instances") and later runs wait for CPUs forever.
"""

from __future__ import annotations

import logging
import os
import socket

import ray

from toco_ray.processes import LOOPBACK, stop_orphaned_ray_processes  # LOOPBACK: a local cluster's node and dashboard

API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"
# Ray Train's preemption watcher polls for nodes being drained. One machine is never preempted, and the watcher is
# force-killed at the end of every training, which the killed actor's core worker reports as an error line.
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# Ray warns at every start that token authentication is on, which it should be (see README "Hostile files and
# failures"); the warning says nothing a user must act on.
TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
_dashboard = {"url": ""}  # the dashboard of the cluster this process started or joined


def init_ray(address: str = "", resources: dict[str, float] | None = None) -> bool:
    """Joins ``address`` / ``$RAY_ADDRESS`` (set by ``ray job submit``; ``auto`` joins a cluster started with
    ``ray start`` on this machine), else starts a fresh local cluster with the extra custom ``resources``.

    Returns:
        True if this call started or joined Ray, False if Ray was already initialised (nothing done).
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS", "")
    common = {"logging_level": logging.WARNING, "log_to_driver": True}
    logging.getLogger(TOKEN_AUTH_LOGGER).setLevel(logging.ERROR)
    if address and address != "local":
        _dashboard["url"] = ray.init(address=address, **common).dashboard_url or ""
        return True
    stop_leftovers()
    port = free_port()
    os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")  # a training launched from this process
    context = ray.init(
        address="local",  # a new cluster, never one named by /tmp/ray/ray_current_cluster (an earlier `ray start`)
        _node_ip_address=LOOPBACK,
        include_dashboard=True,  # the placement-group cleaner needs the dashboard's state API
        dashboard_host=LOOPBACK,
        dashboard_port=port,
        resources=resources,
        runtime_env={"env_vars": {API_SERVER_ENV: f"http://{LOOPBACK}:{port}",  # ... and from a trial
                                  PREEMPTION_WATCHER_ENV: os.environ[PREEMPTION_WATCHER_ENV]}},
        **common,
    )
    _dashboard["url"] = context.dashboard_url or ""
    return True


def dashboard_url() -> str:
    """The Ray dashboard of the cluster :func:`init_ray` started or joined (``http://...``), or empty."""
    url = _dashboard["url"]
    return url if not url or "://" in url else f"http://{url}"


def stop_leftovers() -> None:
    """Stops the Ray agents that a killed earlier driver's local cluster left listening (see
    :func:`~toco_ray.processes.orphaned_ray_processes`), and says so."""
    stopped = stop_orphaned_ray_processes()
    for session in sorted(set(stopped.values())):
        pids = sorted(pid for pid, s in stopped.items() if s == session)
        print(f"note: stopped {len(pids)} Ray process(es) left running by a killed earlier run (cluster "
              f"{session}, pids {', '.join(map(str, pids))})", flush=True)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]
