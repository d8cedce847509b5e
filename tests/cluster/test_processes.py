"""Services are stopped by their session id: every process they fork, even in a process group of its own, and
nothing else."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from toco_ray.processes import pid_alive, process_start_time, session_members, start_service, stop_session

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
