"""A sweep while it runs: one table of its trials (state, iteration, latest M / M^m / Seg, time left), read from
MLflow alone, so it works from any machine that reaches the tracking store (``python -m pipelines.sweep_status``).

A trial's iteration is the last step of its logged loss; its numbers are its latest evaluation; its time left is its
remaining iterations at the images per second of its last log period (evaluations not counted). The sweep's time
left adds the unstarted trials at the mean duration of its finished ones, spread over its concurrent slots.

This module loads neither torch nor Ray.

Example:
    >>> status = sweep_status(MlflowClient(tracking_uri="sqlite:///outputs/mlflow.db"), "quick_demo")
    >>> print("\\n".join(status_lines(status)))
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mlflow import MlflowClient

from toco_ray.cli import format_duration
from toco_ray.metric_names import KINDS, LOSS_TOTAL, PAPER_COLUMN, THROUGHPUT, eval_miou, trained_kinds
from toco_ray.tracking import RUN_NAME_TAG, run_ui_hint
from toco_ray.tuning import runs
from toco_ray.tuning.space import GridSpace

MAX_ITERS_PARAM = "schedule.max_iters"  # config keys, as a trial run logs them among its params
GLOBAL_BATCH_PARAM = "train.global_batch"


@dataclass(frozen=True)
class TrialStatus:
    """One row: a trial's run as MLflow holds it now (``state`` "pending" for a grid point not yet started)."""

    title: str
    state: str
    iteration: int = 0
    max_iters: int = 0
    miou: tuple[float | None, ...] = (None, None, None)  # latest M, M^m, Seg (0–1); None: not trained or evaluated
    eta_s: float | None = None  # time left of a running trial
    duration_s: float | None = None  # wall time of an ended trial


@dataclass(frozen=True)
class SweepStatus:
    name: str
    parent_run_id: str
    state: str  # the parent run's status: RUNNING while a driver runs the sweep
    trials: list[TrialStatus]
    unsampled: int  # Optuna trials not created yet
    concurrency: int
    ui: str  # the MLflow link of the parent run

    def count(self, state: str) -> int:
        return sum(1 for t in self.trials if t.state == state)

    @property
    def eta_s(self) -> float | None:
        """Time left of the whole sweep, or None before a trial has finished (nothing to estimate from)."""
        durations = [t.duration_s for t in self.trials if t.state == "finished" and t.duration_s]
        if not durations:
            return None
        running = sum(t.eta_s or 0.0 for t in self.trials if t.state == "running")
        waiting = (self.count("pending") + self.unsampled) * sum(durations) / len(durations)
        return (running + waiting) / max(1, self.concurrency)


def sweep_status(client: MlflowClient, target: str) -> SweepStatus:
    """The status of the sweep ``target`` names (a sweep name, its experiment, or a parent or trial run id).

    Raises:
        ReportError: no such sweep in the store.
    """
    parent = runs.find_parent(client, target)
    children = runs.children(client, parent)
    trials = [trial_status(client, run) for run in children]
    space = runs.load_space_of(client, parent)
    max_trials = int(parent.data.params.get(runs.MAX_TRIALS_PARAM, 0))
    space = space.truncated(max_trials) if max_trials else space  # the trials of a --smoke sweep
    name = parent.data.tags.get(runs.SWEEP_TAG, parent.info.run_name)
    unsampled = 0
    if isinstance(space, GridSpace):
        started = {run.data.tags.get(RUN_NAME_TAG) for run in children}
        trials += [TrialStatus(p.title, "pending") for p in space.grid_points()
                   if runs.trial_run_name(name, p.slug) not in started]
    else:  # the sample count after --num-samples
        unsampled = max(0, int(parent.data.params.get(runs.TRIALS_PARAM, space.trial_count())) - len(trials))
    return SweepStatus(name, parent.info.run_id, parent.info.status, trials, unsampled,
                       int(parent.data.params.get(runs.CONCURRENCY_PARAM, 1)),
                       run_ui_hint(client.tracking_uri, parent.info.run_id))


def trial_status(client: MlflowClient, run) -> TrialStatus:
    """A started trial's row from its run: state, last logged iteration, latest evaluation, time left."""
    params, info = run.data.params, run.info
    last = runs.last_value(client, info.run_id, LOSS_TOTAL)
    iteration, max_iters = last[0] if last else 0, int(params.get(MAX_ITERS_PARAM, 0))
    trained = trained_kinds(params)
    miou = tuple(run.data.metrics.get(eval_miou(kind)) if trained[kind] else None for kind in KINDS)
    eta = duration = None
    if info.status == "RUNNING":
        throughput = run.data.metrics.get(THROUGHPUT, 0.0)
        if throughput > 0:
            eta = (max_iters - iteration) * int(params.get(GLOBAL_BATCH_PARAM, 1)) / throughput
    elif info.end_time:
        duration = (info.end_time - info.start_time) / 1000
    return TrialStatus(info.run_name, trial_state(run), iteration, max_iters, miou, eta, duration)


def trial_state(run) -> str:
    """``running``, ``finished``, ``stopped early``, ``failed`` or ``killed`` (a resumed sweep continues it)."""
    if run.info.status == "FINISHED":
        return "stopped early" if runs.identity(run).stopped_early else "finished"
    return {"RUNNING": "running", "FAILED": "failed", "KILLED": "killed"}.get(run.info.status,
                                                                               run.info.status.lower())


# --- the table -------------------------------------------------------------------------------------------------
def status_lines(status: SweepStatus, now: float | None = None) -> list[str]:
    """The table a user reads: a header line, one row per trial, a summary line."""
    header = (f"sweep {status.name} ({status.state.lower()}, parent run {status.parent_run_id})"
              f"{' at ' + time.strftime('%H:%M:%S', time.localtime(now)) if now else ''}")
    columns = ["trial", "state", "iteration", *(PAPER_COLUMN[k] for k in KINDS), "time left"]
    rows = [[t.title, t.state, f"{t.iteration}/{t.max_iters}" if t.max_iters else "–",
             *(f"{100 * v:.1f}" if v is not None else "–" for v in t.miou), time_left(t.eta_s)]
            for t in status.trials]
    widths = [max(len(str(c)) for c in column) for column in zip(columns, *rows)]
    table = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [columns, *rows]]
    return [header, *table, summary_line(status), status.ui]


def summary_line(status: SweepStatus) -> str:
    states = ["finished", "stopped early", "running", "pending", "failed", "killed"]
    parts = [f"{status.count(s)} {s}" for s in states if status.count(s)]
    if status.unsampled:
        parts.append(f"{status.unsampled} to sample")
    eta = status.eta_s
    left = f"; about {time_left(eta)} left" if eta is not None and status.state == "RUNNING" else ""
    return f"{len(status.trials) + status.unsampled} trial(s): {', '.join(parts) or 'none started'}{left}"


def time_left(seconds: float | None) -> str:
    """``3m10s`` as the progress lines write a duration; ``–`` when there is nothing to estimate."""
    return "–" if seconds is None else format_duration(seconds)


def live_view_lines(sweep_name: str, output_dir: str, dashboard: str, optuna_url: str = "") -> list[str]:
    """What a sweep prints at its start besides its MLflow link: how to follow it while it runs."""
    lines = [f"status: python -m pipelines.sweep_status {sweep_name} --output-dir {output_dir} --watch 30"]
    if dashboard:
        lines.append(f"Ray dashboard: {dashboard}")
    if optuna_url:
        lines.append(f"Optuna: optuna-dashboard {optuna_url}  (pip install optuna-dashboard)")
    return lines
