"""A real two-node Ray cluster on this machine runs a smoke sweep submitted with ``ray job submit``, tracked by a real
MLflow server; the runs are then read back over MLflow's REST API.

The cluster is laid out like cluster.yaml's: a head that trains nothing (CPU 0) but hosts Tune's trial functions
(``trial_slot``) and the job driver, and a worker node whose CPUs the Ray Train workers take. The MLflow server is
started by ``python -m pipelines.tracking_server --detach`` as on the head, and the tracking URI and Ray's token
authentication reach the job through the environment ``ray start`` runs in, as there.

Everything is the test's own: ports, a short temp dir per node (Ray's socket paths must fit in 107 bytes), the token.
Another Ray cluster on the machine (the session's ``ray_cluster`` fixture, another user's) is never touched: no
``ray stop``; every node and the server are stopped by their session ids.
"""

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from toco_ray.data.synthetic import generate_dataset
from toco_ray.processes import session_members, start_service, stop_session
from toco_ray.ray_cluster import LOOPBACK, free_port
from toco_ray.tracking_server import PID_FILE, READY_TIMEOUT_S
from toco_ray.tuning.runs import ROLE_TAG

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # ray, python: the test's own environment
NODES_UP_S = 90  # both nodes registered
JOB_DEADLINE_S = 300  # the smoke sweep: about 2 minutes on two cores
NODE_GRACE_S = 15  # a node drains on SIGTERM before it is killed
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
EXPERIMENT = "toco-sweep-quick_demo"
# The Train workers' CPUs are on the worker node, as the GPUs are on cluster.yaml's workers.
HEAD_RESOURCES = '{"trial_slot": 2}'
WORKER_CPUS = 2
OBJECT_STORE_BYTES = 200 * 1024 * 1024  # per node: the sweep moves little data


@dataclass
class LocalCluster:
    """Handles of the two nodes, the MLflow server and the Jobs API."""

    base: Path
    token_file: Path
    dashboard: str
    gcs: str
    mlflow: str
    sessions: list[int] = field(default_factory=list)  # the nodes' `ray start --block` sessions
    server_session: int = 0

    def client_env(self) -> dict[str, str]:
        """The environment of a `ray` CLI call from outside: token authentication needs RAY_AUTH_MODE=token."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(self.token_file)}

    def get(self, path: str) -> dict:
        request = urllib.request.Request(self.dashboard + path,
                                         headers={"Authorization": f"Bearer {self.token_file.read_text().strip()}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def ray_start(base: Path, name: str, env: dict[str, str], *args: str) -> int:
    """``ray start --block`` for one node in a session of its own, with its own temp dir and ports; its session id."""
    ports = {flag: str(free_port()) for flag in ("--node-manager-port", "--object-manager-port",
                                                 "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                                 "--runtime-env-agent-port", "--metrics-export-port")}
    command = [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", "--temp-dir", str(base / name),
               "--object-store-memory", str(OBJECT_STORE_BYTES), *[x for item in ports.items() for x in item], *args]
    return start_service(command, base / f"{name}.log", env=env, cwd=base).pid


def mlflow_rest(uri: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(uri + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def wait_for(predicate, deadline_s: float, what: str, logs: list[Path]):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"{what} within {deadline_s:.0f} s\n" + "\n".join(f"--- {p}\n{tail(p)}" for p in logs))


@pytest.fixture
def cluster():
    base = Path(tempfile.mkdtemp(prefix="tc", dir="/tmp"))  # short: Ray's socket paths grow from here
    token_file = base / "auth_token"
    token_file.write_text(secrets.token_hex(16))
    token_file.chmod(0o600)
    gcs_port, dashboard_port, mlflow_port = free_port(), free_port(), free_port()
    dashboard = f"http://{LOOPBACK}:{dashboard_port}"
    handle = LocalCluster(base, token_file, dashboard, f"{LOOPBACK}:{gcs_port}", f"http://{LOOPBACK}:{mlflow_port}")
    # the environment of every Ray process on the nodes, the job driver's included (cluster.yaml: ~/.toco_env)
    node_env = {**handle.client_env(), "MLFLOW_TRACKING_URI": handle.mlflow, "RAY_API_SERVER_ADDRESS": dashboard,
                # a node stops at once on SIGTERM: its job has ended, and Ray's drain (30 s by default) would wait
                # for the head's detached actors
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    server_cli = [str(BIN / "python"), "-m", "pipelines.tracking_server", "--output-dir", str(base / "mlflow")]
    # the server comes up while the nodes start, as on cluster.yaml's head
    server = subprocess.Popen([*server_cli, "--detach", "--port", str(mlflow_port)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        handle.sessions.append(ray_start(base, "head", node_env, "--head", "--port", str(gcs_port),
                                         "--dashboard-host", LOOPBACK, "--dashboard-port", str(dashboard_port),
                                         "--ray-client-server-port", str(free_port()), "--num-cpus", "0",
                                         "--num-gpus", "0", "--resources", HEAD_RESOURCES))
        wait_for(lambda: _nodes(handle) is not None, NODES_UP_S, "the head's dashboard did not answer",
                 [base / "head.log"])
        handle.sessions.append(ray_start(base, "worker", node_env, "--address", handle.gcs,
                                         "--num-cpus", str(WORKER_CPUS), "--num-gpus", "0"))
        output, _ = server.communicate(timeout=READY_TIMEOUT_S + 60)
        assert server.returncode == 0, output
        handle.server_session = json.loads((base / "mlflow" / PID_FILE).read_text())["pid"]
        wait_for(lambda: len(_nodes(handle) or []) == 2, NODES_UP_S, "two nodes did not register",
                 [base / "head.log", base / "worker.log"])
        yield handle
    finally:
        server.communicate(timeout=READY_TIMEOUT_S + 60)  # a server still coming up is recorded before --stop runs
        stopper = subprocess.Popen([*server_cli, "--stop"], cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        for sid in reversed(handle.sessions):  # the worker first: it drains while the head's GCS still answers
            stop_session(sid, grace_s=NODE_GRACE_S, leader_only=True)
        stopped, _ = stopper.communicate(timeout=120)
        left = {sid: session_members(sid) for sid in [*handle.sessions, handle.server_session] if sid}
        shutil.rmtree(base, ignore_errors=True)
        assert stopper.returncode == 0, stopped
        assert not any(left.values()), f"processes left in the nodes' and the server's sessions: {left}"


def _nodes(handle: LocalCluster) -> list[dict] | None:
    try:
        nodes = handle.get("/api/v0/nodes?limit=10")["data"]["result"]["result"]
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return None
    return [n for n in nodes if n["state"] == "ALIVE"]


def test_a_smoke_sweep_submitted_to_a_two_node_cluster_is_tracked_in_mlflow(cluster, tmp_path, record_property):
    data_root = generate_dataset(tmp_path / "synthetic", 16, 8, seed=0)
    out = tmp_path / "outputs"
    submission = f"toco-smoke-{secrets.token_hex(4)}"
    started = time.monotonic()
    # no MLFLOW_TRACKING_URI here: the driver takes it from the head's environment, as on cluster.yaml's head
    submit = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard, "--working-dir", ".",
         "--submission-id", submission, "--no-wait", "--",
         "python", "-m", "pipelines.sweep", "search_spaces/quick_demo.yaml", "--smoke",
         # two Train workers per trial, as on cluster.yaml's GPU nodes (a trial of one CPU worker would train
         # inside its trial function instead, on the worker node as well)
         "--workers-per-trial", "2", "--data-root", str(data_root), "--output-dir", str(out)],
        cwd=REPO, env=cluster.client_env(), capture_output=True, text=True, timeout=120)
    assert submit.returncode == 0, submit.stdout + submit.stderr

    job = wait_for(lambda: _terminal_job(cluster, submission), JOB_DEADLINE_S, f"job {submission} did not finish",
                   [cluster.base / "head.log"])
    job_s = time.monotonic() - started  # submit (with the working-dir upload) to the job's end
    run_s = (job["end_time"] - job["start_time"]) / 1000  # the job itself, by the cluster's clock
    logs = cluster.get(f"/api/jobs/{submission}/logs")["logs"]
    record_property("two_node_job_s", round(job_s, 1))
    print(f"\ntwo-node job {submission}: {job['status']} after {job_s:.1f} s from submission ({run_s:.1f} s "
          f"running); last lines of its log:\n" + "\n".join(logs.splitlines()[-4:]))
    assert job["status"] == "SUCCEEDED", logs[-6000:]
    assert "sweep quick_demo: 2 trial(s), 0 failed" in logs

    # the Train workers ran on the worker node, everything else on the head
    nodes = {n["node_id"]: n["is_head_node"] for n in _nodes(cluster)}
    actors = cluster.get("/api/v0/actors?detail=true&limit=1000")["data"]["result"]["result"]
    train_nodes = {a["node_id"] for a in actors if a["class_name"] == "RayTrainWorker"}
    assert train_nodes and not any(nodes[n] for n in train_nodes)
    assert job["driver_node_id"] in nodes and nodes[job["driver_node_id"]]

    # the runs, read back over MLflow's REST API
    experiment = mlflow_rest(cluster.mlflow, "/api/2.0/mlflow/experiments/get-by-name?"
                             + urllib.parse.urlencode({"experiment_name": EXPERIMENT}))["experiment"]
    runs = mlflow_rest(cluster.mlflow, "/api/2.0/mlflow/runs/search",
                       {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]
    tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs]
    parents = [run for run, t in zip(runs, tags) if t.get(ROLE_TAG) == "parent"]
    assert len(parents) == 1
    parent_id = parents[0]["info"]["run_id"]
    children = [run for run, t in zip(runs, tags) if t.get("mlflow.parentRunId") == parent_id]
    assert len(children) == 2 and len(runs) == 3
    counts = []
    for child in children:
        params = {p["key"]: p["value"] for p in child["data"].get("params", [])}
        metrics = {m["key"]: m["value"] for m in child["data"].get("metrics", [])}
        assert child["info"]["status"] == "FINISHED"
        assert params["schedule.max_iters"] == "6" and params["data.root"] == str(data_root)
        assert {"eval/cam_miou", "eval/aux_cam_miou", "eval/seg_miou"} <= set(metrics)
        counts.append((child["info"]["run_name"], len(params), len(metrics)))
        keys = sorted(metrics)
    # artifacts went through the server to its artifact folder
    assert any((cluster.base / "mlflow" / "mlartifacts").rglob("*.yaml"))
    record_property("two_node_runs", json.dumps(counts))
    parent_data = parents[0]["data"]
    print(f"MLflow {cluster.mlflow}: parent {parent_id} ({len(parent_data.get('params', []))} params, "
          f"{len(parent_data.get('metrics', []))} metrics), children (name, params, metrics): {counts}; a child's "
          f"metrics: {', '.join(keys)}")


def _terminal_job(cluster: LocalCluster, submission: str) -> dict | None:
    try:
        job = cluster.get(f"/api/jobs/{submission}")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return job if job["status"] in TERMINAL else None
