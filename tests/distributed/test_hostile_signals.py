"""Ctrl-C and SIGTERM on `pipelines.train` (cases 42, 43): the run ends KILLED with one line and exit 130 / 143.

The end-to-end tests run the command as a user does, in a session of its own with its own Ray cluster, and stop
it once a worker has printed its second iteration: Ctrl-C as a terminal sends it (SIGINT to the whole process group,
Ray's own processes included), SIGTERM as `kill` sends it (to the driver alone).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient

from toco_ray.distributed.interrupts import TrainingInterrupted, fit_interruptibly
from toco_ray.processes import session_members, stop_session

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.unit
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_fit_raises_in_the_main_thread_and_the_handlers_come_back(sig, code):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    release = threading.Event()

    def fit():  # runs in the helper thread; the main thread must take the signal
        os.kill(os.getpid(), sig)
        release.wait()

    with pytest.raises(TrainingInterrupted) as caught:
        fit_interruptibly(fit)
    release.set()
    assert caught.value.signum == sig and caught.value.exit_code == code
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.unit
def test_without_a_signal_fit_returns_or_raises_as_called_directly():
    assert fit_interruptibly(lambda: 42) == 42
    with pytest.raises(ZeroDivisionError):
        fit_interruptibly(lambda: 1 / 0)


def start_training(tiny_root: Path, tiny_overrides: dict, out: Path, run_name: str) -> subprocess.Popen:
    overrides = [f"{k}={v}" for k, v in {**tiny_overrides, "schedule.max_iters": 200}.items()]
    command = [sys.executable, "-m", "pipelines.train", "--data-root", str(tiny_root), "--output-dir", str(out),
               "--run-name", run_name, "--workers", "1", *overrides]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RAY_COLOR_PREFIX": "0"}, start_new_session=True)


def read_until(proc: subprocess.Popen, marker: str) -> list[str]:
    """The output lines up to and including the first holding ``marker`` (fails if the process ends first)."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"training ended before printing {marker!r}:\n{''.join(lines[-30:])}")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("sig", "group", "code"), [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_case42_43_train_stopped_by_a_signal_ends_killed_with_one_line(tiny_root, tiny_overrides, tmp_path, sig,
                                                                       group, code):
    out, name = tmp_path / "outputs", f"stopped-{sig.name.lower()}"
    proc = start_training(tiny_root, tiny_overrides, out, name)
    try:
        read_until(proc, "it 2/")
        os.killpg(proc.pid, sig) if group else os.kill(proc.pid, sig)
        rest = proc.stdout.read()
        assert proc.wait(timeout=120) == code, rest
    finally:
        leftover = stop_session(proc.pid, grace_s=1.0)
    expected = (f"stopped by {sig.name}: run {name} is KILLED in MLflow; continue it with python -m pipelines.train "
                f"--resume {name} --output-dir {out}")
    assert [line for line in rest.splitlines() if not line.startswith("(")] == [expected]  # "(": worker lines
    assert "Traceback" not in rest and "*** SIGTERM received" not in rest
    assert leftover == [] and session_members(proc.pid) == []  # no Ray process outlives the driver
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("toco-ray").experiment_id])
    assert [(r.info.run_name, r.info.status) for r in runs] == [(name, "KILLED")]
