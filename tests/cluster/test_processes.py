"""Services are stopped by their session id: every process they fork, even in a process group of its own, and
nothing else."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toco_ray.processes import (
    orphaned_ray_processes,
    pid_alive,
    process_start_time,
    session_members,
    start_service,
    stop_orphaned_ray_processes,
    stop_session,
)

pytestmark = pytest.mark.unit

# A leader whose child opens a process group of its own (as Ray's workers do) and then ignores SIGTERM.
CHILD = "import os, signal, time; os.setpgrp(); signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); " \
        "time.sleep(60)"
STUBBORN = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {CHILD!r}], stdout=subprocess.PIPE, text=True)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(60)
"""


def test_a_session_is_stopped_with_the_child_that_left_its_process_group(tmp_path):
    leader = start_service([sys.executable, "-c", STUBBORN], tmp_path / "log")
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # same user, other session
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "log").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.1)  # the leader writes the child's pid once the child has its group and its handler
        child = int((tmp_path / "log").read_text().split()[0])
        assert sorted(session_members(leader.pid)) == sorted([leader.pid, child])
        killed = stop_session(leader.pid, grace_s=1.0)
        assert killed == [child]  # the leader ended on SIGTERM; the child needed SIGKILL
        assert not session_members(leader.pid) and not pid_alive(child)
        assert pid_alive(bystander.pid)
    finally:
        bystander.kill()
        bystander.wait()


def test_stopping_an_empty_session_does_nothing():
    assert stop_session(2**22 + 12345) == []


def test_a_start_time_is_read_past_a_command_name_with_spaces_and_parentheses():
    rename = "open('/proc/self/comm', 'w').write(') 1 2 (x'); print(1, flush=True); input()"
    proc = subprocess.Popen([sys.executable, "-c", rename], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        before = process_start_time(proc.pid)
        proc.stdout.readline()  # renamed
        assert Path(f"/proc/{proc.pid}/stat").read_text().count(")") == 2
        assert process_start_time(proc.pid) == before > 0 and pid_alive(proc.pid)
    finally:
        proc.communicate("\n", timeout=30)
    assert process_start_time(2**22 + 12345) is None


# A stand-in for a Ray agent: titled ray::..., holding a log file of its cluster's session folder open.
AGENT = "import sys; log = open(sys.argv[1], 'a'); print('ready', flush=True); sys.stdin.read()"


def fake_ray_process(argv0: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([argv0, "-c", AGENT if argv0.startswith("ray::") else "import sys; print('ready', "
                             "flush=True); sys.stdin.read()", *args], executable=sys.executable,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    return proc


def session_log(root: Path, name: str) -> Path:
    (root / name / "logs").mkdir(parents=True)
    return root / name / "logs" / "dashboard_agent.log"


def test_ray_agents_of_a_gone_cluster_are_found_and_stopped_and_a_live_clusters_are_not(tmp_path):
    gone, alive = "session_2026-01-01_00-00-00_000001_11", "session_2026-01-01_00-00-00_000002_22"
    orphan = fake_ray_process("ray::DashboardAgent", str(session_log(tmp_path, gone)))
    gcs = fake_ray_process(sys.executable, f"--log_dir={tmp_path / alive / 'logs'}")  # names its session, as gcs_server
    agent = fake_ray_process("ray::DashboardAgent", str(session_log(tmp_path, alive)))
    try:
        found = orphaned_ray_processes()
        assert found.get(orphan.pid) == gone and agent.pid not in found and gcs.pid not in found
        assert stop_orphaned_ray_processes().get(orphan.pid) == gone
        assert orphan.wait(timeout=10) == -signal.SIGTERM
        assert pid_alive(agent.pid) and pid_alive(gcs.pid)
    finally:
        for proc in (orphan, gcs, agent):
            proc.kill()
            proc.wait()
