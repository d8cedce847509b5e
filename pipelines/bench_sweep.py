r"""Benchmark: where a sweep trial's wall time goes besides training — Ray/Train start-up, set-up, evaluation,
checkpoints, MLflow and teardown, measured per trial from real timestamps.

A grid sweep of ``--trials`` tiny trials (a 4-block ViT on 64 px synthetic crops, ``--iters`` iterations, two
evaluations, one trial at a time) runs through ``pipelines.sweep`` in a child process with a fresh MLflow store.
Every process of the sweep is timed: the driver directly, every Ray worker (Tune trial functions, Train workers)
through Ray's ``worker_process_setup_hook``. The timers wrap stages by name where they are defined (the trial
function, the worker loop's ``run``/``setup``/``restore``/``evaluate_and_checkpoint``/``report``, ``train_step``,
the figures, every ``MlflowClient`` call, Tune's trial start and end), and a span nested in another counts only in
the inner one.

Per trial, from the end of the previous trial (Tune's ``on_trial_complete``; the first: its start) to its own end:

    startup   until the worker loop runs: the trial's actor and function, TorchTrainer's start-up
    setup     the worker loop's set-up and restore: model, optimiser, datasets, DDP
    steps     training steps (forward, backward, update, data loading)
    eval      evaluation on the val split (figures excluded)
    ckpt      writing and reporting checkpoints, waiting until Ray Train has committed them
    mlflow    every MLflow call (driver, trial function, rank 0) and the figures logged at each evaluation
    teardown  from the end of the worker loop until Tune has completed the trial
    other     the rest of the worker loop (log lines, averaging the losses over workers)
    fixed     everything but steps and eval

``--compare DIR`` runs the same benchmark in another checkout (with its own ``.venv``) in alternation with this one,
``--rounds`` times, and prints the ratio of the two for every column, so load on the machine hits both alike.

    python -m pipelines.bench_sweep                                  # 3 trials × 60 iterations
    python -m pipelines.bench_sweep --trials 2 --iters 6             # a quick look
    python -m pipelines.bench_sweep --compare /tmp/toco-before --rounds 2
"""

from __future__ import annotations

import argparse
import functools
import importlib.abc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from toco_ray.cli import command_parser

# Light on purpose: every Ray worker of the benchmark's cluster imports this module (its setup hook), and the timers
# must be in place before the code they time is imported, so Ray, Tune and the sweep are imported inside functions.
EVENTS_ENV = "TOCO_BENCH_EVENTS"  # folder every timed process appends to; set by this benchmark only
PHASES = ("startup", "setup", "steps", "eval", "ckpt", "mlflow", "teardown", "other")
TRAINING = ("steps", "eval")  # what a trial is for; everything else is its fixed cost
# A tiny +PTC trial (the synthetic preset's 4-block ViT on 64 px crops); the schedule follows --iters. Small on
# purpose: the benchmark measures what a trial costs besides its steps and evaluation.
BASE_SET = {
    "data.crop_size": 64, "data.val_size": 64, "data.val_limit": 24, "ctc.local_crop_size": 24,
    "ctc.n_local_crops": 2, "train.global_batch": 4, "schedule.log_every": 10, "optim.warmup_iters": 10,
    "eval.num_probe_images": 2, "loss.w_ctc": 0.0, "loss.w_seg": 0.0, "loss.w_reg": 0.0,
}


def _rank(args: tuple, kwargs: dict) -> dict[str, Any]:
    return {"rank": args[0].worker.rank}


def _tune_trial(args: tuple, kwargs: dict) -> dict[str, Any]:
    return {"trial": kwargs["trial"].trial_id}


def _running_trial(args: tuple, kwargs: dict) -> dict[str, Any]:
    from ray import tune

    return {"trial": tune.get_context().get_trial_id()}


# Stages timed in every process: module → (attribute, phase, what else to record). Each is wrapped where it is
# defined, as soon as its module is executed, so every later `from module import name` binds the timed one.
# Missing names are skipped: the same table times other checkouts. "Class.*": every public method.
STAGES: dict[str, list[tuple[str, str, Callable | None]]] = {
    "toco_ray.tuning.trial": [("run_trial", "trial", _running_trial)],
    "toco_ray.distributed.loop": [
        ("WorkerLoop.run", "loop", _rank), ("WorkerLoop.setup", "setup", _rank), ("WorkerLoop.restore", "setup", _rank),
        ("WorkerLoop.evaluate_and_checkpoint", "eval", _rank), ("WorkerLoop.report", "ckpt", _rank),
    ],
    "toco_ray.engine": [("train_step", "steps", None)],
    "toco_ray.visualize": [(name, "mlflow", None) for name in
                           ("cam_overlay_figure", "confusion_figure", "oversmoothing_figure")],
    "mlflow.tracking.client": [("MlflowClient.*", "mlflow", None)],
    "ray.train.v2.api.data_parallel_trainer": [("DataParallelTrainer.fit", "fit", None)],
    "ray.tune.callback": [("CallbackList.on_trial_start", "tune_start", _tune_trial),
                          ("CallbackList.on_trial_complete", "tune_end", _tune_trial)],
}


# --- timing every process ---------------------------------------------------------------------------------------
class Recorder:
    """Appends one JSON line per timed call to ``<folder>/<pid>.jsonl``: its start and end, and its own time
    (``excl``: without the timed calls nested in it in the same thread)."""

    def __init__(self, folder: str):
        self.path = Path(folder) / f"{os.getpid()}.jsonl"
        self.local = threading.local()
        self.lock = threading.Lock()

    def timed(self, name: str, phase: str, fn: Callable, describe: Callable | None) -> Callable:
        @functools.wraps(fn)
        def call(*args, **kwargs):
            stack = self.local.__dict__.setdefault("stack", [])
            stack.append(0.0)
            start = time.time()
            try:
                return fn(*args, **kwargs)
            finally:
                end = time.time()
                nested = stack.pop()
                if stack:
                    stack[-1] += end - start
                extra = describe(args, kwargs) if describe else {}
                self.write({"name": name, "phase": phase, "start": start, "end": end, "excl": end - start - nested,
                            "pid": os.getpid(), **extra})

        return call

    def write(self, event: dict[str, Any]) -> None:
        with self.lock, self.path.open("a") as fh:
            fh.write(json.dumps(event) + "\n")


class TimeOnImport(importlib.abc.MetaPathFinder):
    """Wraps a module's :data:`STAGES` in timers right after the module is executed."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder

    def find_spec(self, name, path=None, target=None):
        if name not in STAGES:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader.exec_module = self.then_wrap(spec.loader.exec_module)
                return spec
        return None

    def then_wrap(self, execute: Callable) -> Callable:
        def exec_module(module) -> None:
            execute(module)
            self.wrap(module)

        return exec_module

    def wrap(self, module) -> None:
        for attribute, phase, describe in STAGES[module.__name__]:
            owner_name, _, name = attribute.rpartition(".")
            owner = getattr(module, owner_name, None) if owner_name else module
            names = [n for n in dir(owner) if not n.startswith("_")] if name == "*" else [name]
            for fn_name in names:
                fn = getattr(owner, fn_name, None)
                if callable(fn):
                    label = f"{owner_name}.{fn_name}" if owner_name else fn_name
                    setattr(owner, fn_name, self.recorder.timed(label, phase, fn, describe))


def time_process() -> None:
    """Starts the timers in this process when :data:`EVENTS_ENV` names a folder (Ray's worker setup hook)."""
    folder = os.environ.get(EVENTS_ENV, "")
    if folder:
        sys.meta_path.insert(0, TimeOnImport(Recorder(folder)))


def ray_init_with_timers(init: Callable, folder: str) -> Callable:
    """``ray.init`` that starts the timers in every worker of the cluster it starts or joins."""

    @functools.wraps(init)
    def timed_init(*args, **kwargs):
        env = dict(kwargs.get("runtime_env") or {})
        env["env_vars"] = {**env.get("env_vars", {}), EVENTS_ENV: folder}
        env["worker_process_setup_hook"] = "pipelines.bench_sweep.time_process"  # by name: this file runs as __main__
        return init(*args, **{**kwargs, "runtime_env": env})

    return timed_init


# --- one sweep, timed -------------------------------------------------------------------------------------------
def write_space(folder: Path, trials: int, iters: int) -> Path:
    """A grid of ``trials`` seeds of the tiny +PTC trial, ``iters`` iterations, evaluated at half and end."""
    base = {**BASE_SET, "schedule.max_iters": iters, "schedule.eval_every": max(1, iters // 2),
            "schedule.seg_start_iter": iters}
    space = {"base": {"preset": "synthetic", "set": base}, "kind": "grid", "seeds": list(range(trials)),
             "grid": {"loss.w_ptc": [0.2]}}
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def run_timed_sweep(trials: int, iters: int, keep: Path | None) -> dict[str, Any]:
    """Runs the sweep in this process with every process timed; returns the per-trial phases and the wall time."""
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    events = folder / "events"
    events.mkdir(parents=True, exist_ok=True)
    os.environ[EVENTS_ENV] = str(events)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # a fresh embedded store in the folder
    time_process()
    import ray

    ray.init = ray_init_with_timers(ray.init, str(events))
    from pipelines import sweep

    space = write_space(folder, trials, iters)
    started = time.time()
    code = sweep.main([str(space), "--output-dir", str(folder / "outputs"), "--max-concurrent", "1"])
    wall = time.time() - started
    if code != 0:
        raise SystemExit(f"the benchmark sweep failed (exit status {code}); outputs in {folder}")
    return {"trials": phases_per_trial(read_events(events)), "wall_s": wall}


def read_events(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()]


# --- per-trial phases from the timed spans ---------------------------------------------------------------------
def phases_per_trial(events: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Each trial's phases (seconds), trials in the order they ran; see the module docstring."""
    def of(phase: str) -> list[dict[str, Any]]:
        return sorted((e for e in events if e["phase"] == phase), key=lambda e: e["start"])

    starts = {e["trial"]: e["start"] for e in of("tune_start")}
    ends = {e["trial"]: e["end"] for e in of("tune_end")}
    loops = [e for e in of("loop") if e.get("rank") == 0]
    rows, previous_end = [], None
    for trial in of("trial"):
        begin = previous_end if previous_end is not None else starts.get(trial["trial"], trial["start"])
        end = ends.get(trial["trial"], trial["end"])
        loop = next(e for e in loops if trial["start"] <= e["start"] <= trial["end"])
        rows.append(trial_phases(events, (begin, end), trial, loop))
        previous_end = end
    return rows


def trial_phases(events: list[dict[str, Any]], window: tuple[float, float], trial: dict[str, Any],
                 loop: dict[str, Any]) -> dict[str, float]:
    """Splits ``window`` (one trial) at the start and end of rank 0's worker loop: before it start-up, after it
    teardown, inside it rank 0's own stages; MLflow calls of any process on that path count as mlflow."""
    begin, end = window

    def own(phase: str, lo: float, hi: float, pid: int | None = None) -> float:
        return sum(e["excl"] for e in events
                   if e["phase"] == phase and lo <= e["start"] < hi and (pid is None or e["pid"] == pid))

    inside = {p: own(p, loop["start"], loop["end"], loop["pid"]) for p in ("setup", "steps", "eval", "ckpt", "mlflow")}
    mlflow_before, mlflow_after = own("mlflow", begin, loop["start"]), own("mlflow", loop["end"], end)
    fits = [e for e in events if e["phase"] == "fit" and trial["start"] <= e["start"] <= trial["end"]]
    fit = fits[0] if fits else {"start": loop["start"], "end": loop["end"]}
    return {
        "startup": loop["start"] - begin - mlflow_before,
        **{p: inside[p] for p in ("setup", "steps", "eval", "ckpt")},
        "mlflow": mlflow_before + inside["mlflow"] + mlflow_after,
        "teardown": end - loop["end"] - mlflow_after,
        "other": loop["end"] - loop["start"] - sum(inside.values()),
        "total": end - begin,
        # where start-up and teardown go: before the trial function, before fit(), inside fit()
        "actor_start": trial["start"] - begin, "before_fit": fit["start"] - trial["start"],
        "fit_start": loop["start"] - fit["start"], "fit_end": fit["end"] - loop["end"],
        "after_fit": trial["end"] - fit["end"], "tune_end": end - trial["end"],
    }


def fixed(row: dict[str, float]) -> float:
    return row["total"] - sum(row[p] for p in TRAINING)


# --- command line -----------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("pipelines.bench_sweep", __doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="trials per sweep (seeds of one grid point)")
    parser.add_argument("--iters", type=int, default=60, help="training iterations per trial")
    parser.add_argument("--compare", default="", metavar="DIR",
                        help="another checkout (with .venv/bin/python) to run in alternation with this one")
    parser.add_argument("--rounds", type=int, default=1, help="sweeps per checkout")
    parser.add_argument("--detail", action="store_true", help="also split start-up and teardown around fit()")
    parser.add_argument("--keep", default="", help="folder for the sweeps' outputs, events and logs (kept)")
    parser.add_argument("--child", default="", metavar="JSON", help=argparse.SUPPRESS)  # one timed sweep, here
    return parser.parse_args(argv)


def run_in(tree: Path, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """One timed sweep in a child process of checkout ``tree`` (its own venv); its output goes to a log file."""
    venv = tree / ".venv" / "bin" / "python"
    python = str(venv) if venv.exists() else sys.executable
    result = folder / "result.json"
    command = [python, "-m", "pipelines.bench_sweep", "--child", str(result), "--trials", str(args.trials),
               "--iters", str(args.iters), "--keep", str(folder)]
    env = {k: v for k, v in os.environ.items() if k != EVENTS_ENV}
    with (folder / "log.txt").open("w") as log:
        code = subprocess.run(command, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"benchmark sweep in {tree} failed (exit status {code}); see {folder / 'log.txt'}")
    return json.loads(result.read_text())


def columns(detail: bool) -> list[str]:
    extra = ["actor_start", "before_fit", "fit_start", "fit_end", "after_fit", "tune_end"] if detail else []
    return [*PHASES, "total", "fixed", *extra]


def table(title: str, rows: list[dict[str, float]], detail: bool) -> str:
    names = columns(detail)
    lines = [title, "trial " + " ".join(f"{n:>9}" for n in names)]
    for i, row in enumerate(rows, 1):
        lines.append(f"{i:>5} " + " ".join(f"{value(row, n):9.1f}" for n in names))
    mean = {n: statistics.fmean(value(r, n) for r in rows) for n in names}
    lines.append(" mean " + " ".join(f"{mean[n]:9.1f}" for n in names))
    return "\n".join(lines)


def value(row: dict[str, float], name: str) -> float:
    return fixed(row) if name == "fixed" else row[name]


def compare(this: list[dict[str, float]], other: list[dict[str, float]], detail: bool) -> str:
    names = columns(detail)
    lines = ["ratio this / compared (mean over every trial of every round)",
             "      " + " ".join(f"{n:>9}" for n in names)]
    means = [{n: statistics.fmean(value(r, n) for r in rows) for n in names} for rows in (this, other)]
    lines.append("ratio " + " ".join(f"{means[0][n] / means[1][n]:9.2f}" if means[1][n] > 0.05 else f"{'-':>9}"
                                     for n in names))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:  # the timed sweep itself, in this checkout
        Path(args.child).write_text(json.dumps(run_timed_sweep(args.trials, args.iters, Path(args.keep))))
        return 0
    trees = {"this": Path.cwd()}
    if args.compare:
        trees["compared"] = Path(args.compare).resolve()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    rows: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
    for round_ in range(args.rounds):
        order = list(trees) if round_ % 2 == 0 else list(reversed(trees))  # alternate who goes first
        for label in order:
            folder = root / f"{label}-{round_ + 1}"
            folder.mkdir(parents=True, exist_ok=True)
            result = run_in(trees[label], args, folder)
            rows[label] += result["trials"]
            print(table(f"{label} ({trees[label]}), round {round_ + 1}: sweep wall time {result['wall_s']:.1f} s",
                        result["trials"], args.detail) + "\n", flush=True)
    if args.compare:
        print(compare(rows["this"], rows["compared"], args.detail))
    print(f"outputs, events and logs: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
