"""bench_sweep's accounting: a trial's window split into phases from timed spans, the arithmetic done by hand; and the
timers it puts around a module's stages when the module is imported."""

import os
import sys
import types

import pytest

from pipelines import bench_sweep
from pipelines.bench_sweep import Recorder, TimeOnImport, fixed, phases_per_trial

pytestmark = pytest.mark.unit


def span(name, phase, start, end, pid, excl=None, **extra):
    return {"name": name, "phase": phase, "start": start, "end": end, "excl": end - start if excl is None else excl,
            "pid": pid, **extra}


def test_a_trial_window_splits_into_phases_that_add_up():
    driver, trial, worker = 1, 2, 3
    events = [
        span("CallbackList.on_trial_start", "tune_start", 100.0, 100.0, driver, trial="a"),
        span("run_trial", "trial", 101.0, 150.0, trial, trial="a"),
        span("MlflowClient.create_run", "mlflow", 102.0, 103.0, trial),  # before the loop: 1 s
        span("WorkerLoop.run", "loop", 105.0, 145.0, worker, excl=9.0, rank=0),
        span("WorkerLoop.setup", "setup", 105.0, 107.0, worker, rank=0),
        span("train_step", "steps", 108.0, 128.0, worker),
        span("WorkerLoop.evaluate_and_checkpoint", "eval", 130.0, 139.0, worker, excl=5.0, rank=0),
        span("WorkerLoop.report", "ckpt", 136.0, 137.0, worker, rank=0),
        span("MlflowClient.log_figure", "mlflow", 137.0, 140.0, worker),  # inside the loop: 3 s
        span("MlflowClient.set_terminated", "mlflow", 146.0, 146.5, trial),  # after the loop: 0.5 s
        span("CallbackList.on_trial_complete", "tune_end", 151.0, 152.0, driver, trial="a"),
    ]
    (row,) = phases_per_trial(events)
    # startup: 105 − 100 − 1 (MLflow before the loop); teardown: 152 − 145 − 0.5 (MLflow after it)
    assert (row["startup"], row["teardown"]) == (4.0, 6.5)
    assert (row["setup"], row["steps"], row["eval"], row["ckpt"], row["mlflow"]) == (2.0, 20.0, 5.0, 1.0, 4.5)
    # other: the loop's 40 s less its timed stages 2 + 20 + 5 + 1 + 3
    assert row["other"] == 9.0 and row["total"] == 52.0
    assert sum(row[p] for p in bench_sweep.PHASES) == row["total"]
    assert fixed(row) == 52.0 - 20.0 - 5.0  # everything but steps and eval


def test_stages_are_timed_where_they_are_defined_once_their_module_runs(tmp_path, monkeypatch):
    module = types.ModuleType("bench_target")
    exec("def train_step(x):\n    return helper(x) + 1\n\ndef helper(x):\n    return x\n", module.__dict__)
    monkeypatch.setitem(bench_sweep.STAGES, "bench_target", [("train_step", "steps", None)])
    finder = TimeOnImport(Recorder(str(tmp_path)))
    finder.wrap(module)
    assert module.train_step(1) == 2
    (line,) = (tmp_path / f"{os.getpid()}.jsonl").read_text().splitlines()
    assert '"name": "train_step"' in line and '"phase": "steps"' in line
    assert "bench_target" not in sys.modules  # nothing imported: the finder only wraps what runs
