"""The Ray Tune side of a sweep: the ``Tuner`` (grid or Optuna, ASHA), trial names, and the driver's callbacks.

A grid sweep is a ``grid_search`` over its points' slugs; an Optuna sweep samples the constrained define-by-run
space of :mod:`~toco_ray.tuning.sampling` from a persisted, seeded study. Trials that train in their own process
reuse their Tune actor from one trial to the next (the imports and the worker process are paid once per sweep);
trials that launch a ``TorchTrainer`` do not (see :func:`build_tuner`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from mlflow import MlflowClient
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from toco_ray.config import flatten
from toco_ray.metric_names import KINDS, PAPER_COLUMN, REPORT_ITERATION, report_key, trained_kinds
from toco_ray.tuning import runs
from toco_ray.tuning.cluster import TrialResources
from toco_ray.tuning.sampling import ConstrainedSpace
from toco_ray.tuning.space import GridSpace, OptunaSpace
from toco_ray.tuning.state import Sweep, tick
from toco_ray.tuning.trial import POINT_KEY, TrialContext, grid_config, plan_trial, run_trial

# Tune snapshots its experiment state at most this often (seconds); a sweep is cheap to snapshot and a fresh
# state after each trial keeps a killed sweep from redoing work (Tune's default adapts from 10 s upwards).
TUNE_SNAPSHOT_S = "1"
NEW_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"  # "0": Tune's legacy console output
TUNE_MAX_FAILURES = 1  # a failed trial is retried once (its training continues from its checkpoint)


def trainable(context: TrialContext, resources: TrialResources):
    """``run_trial`` with the sweep's context, asking Tune for what the trial function holds itself."""
    return tune.with_resources(tune.with_parameters(run_trial, context=context), resources.trial_request())


@contextmanager
def tune_console(verbose: bool) -> Iterator[None]:
    """Tune's console output inside the block: its status tables and result boxes when ``verbose``, else none.

    Tune's current output engine prints a configuration box at the start and a final status table whatever the
    verbosity; its legacy engine at verbosity 0 prints nothing, so a quiet sweep runs on that one.
    """
    if verbose:
        yield
        return
    previous = os.environ.get(NEW_OUTPUT_ENV)
    os.environ[NEW_OUTPUT_ENV] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(NEW_OUTPUT_ENV, None)
        else:
            os.environ[NEW_OUTPUT_ENV] = previous


def open_tuner(sweep: Sweep, context: TrialContext, resources: TrialResources, verbose: bool = False) -> tune.Tuner:
    """Tune's state of a resumed sweep (finished trials kept, unfinished and failed ones continued), else a new
    ``Tuner`` (``verbose``: Tune's status tables and result boxes, else one line per trial start and end)."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", TUNE_SNAPSHOT_S)
    if sweep.resumed and tune.Tuner.can_restore(str(sweep.tune_dir)):
        return tune.Tuner.restore(str(sweep.tune_dir), trainable(context, resources), resume_unfinished=True,
                                  resume_errored=True)
    return build_tuner(sweep, context, resources, verbose)


def build_tuner(sweep: Sweep, context: TrialContext, resources: TrialResources, verbose: bool = False) -> tune.Tuner:
    """A new ``Tuner`` for the sweep: grid points as a ``grid_search``, or Optuna TPE over the define-by-run space,
    ASHA on the in-training metric when the space asks for it.

    A trial that trains in its own process ends at the report where Tune stops it, so its actor can take the next
    trial. A trial inside ``TorchTrainer.fit()`` cannot be ended but with its process: reusing its actor would wait
    for it, and Tune would fail the next trial.
    """
    space = sweep.space
    if isinstance(space, GridSpace):
        param_space = {POINT_KEY: tune.grid_search([grid_config(p)[POINT_KEY] for p in space.grid_points()])}
        search_alg, num_samples = None, 1
    else:
        param_space, search_alg, num_samples = {}, optuna_searcher(sweep), space.num_samples
    return tune.Tuner(
        trainable(context, resources),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=space.metric, mode=space.mode, search_alg=search_alg, scheduler=asha_scheduler(sweep),
            num_samples=num_samples, max_concurrent_trials=resources.max_concurrent,
            trial_name_creator=TrialNamer(context), trial_dirname_creator=trial_dirname,
            reuse_actors=resources.in_process,
        ),
        run_config=tune.RunConfig(
            name=sweep.tune_dir.name,
            storage_path=str(sweep.dir),
            failure_config=tune.FailureConfig(max_failures=TUNE_MAX_FAILURES),
            callbacks=[ChildRunCloser(context), SessionClock(sweep.dir), TrialLines(context)],
            verbose=1 if verbose else 0,
        ),
    )


class TrialNamer:
    """Tune's name of a trial: its run name (``quick_demo-p02-ptc-s0``, ``toco_hpo-t007``), unique in the sweep."""

    def __init__(self, context: TrialContext):
        self.space, self.sweep_name = context.space, context.sweep_name

    def __call__(self, trial) -> str:
        return plan_trial(self.space, self.sweep_name, trial.config).run_name


def trial_dirname(trial) -> str:
    """Tune's folder of a trial: its id (the default name embeds the whole config)."""
    return f"trial_{trial.trial_id}"


def asha_scheduler(sweep: Sweep) -> ASHAScheduler | None:
    """ASHA on the space's metric, in training iterations, from the end of the grace period (or None).

    Rungs lie strictly before the last iteration: a trial that has trained to the end has nothing left to save,
    and stopping it then would kill its training while it writes its last checkpoint and closes its MLflow run.
    ASHA puts a rung at ``max_t`` itself, so ``max_t`` is one iteration short of the schedule, and
    ``stop_last_trials=False`` lets a trial that passes every rung end by itself.
    """
    if sweep.space.asha is None:
        return None
    cfg = sweep.space.config(None, sweep.space.seeds[0], sweep.settings.overrides)
    last_rung = cfg.schedule.max_iters - 1
    grace = sweep.space.asha.grace_period(cfg)
    if grace > last_rung:  # e.g. a --smoke schedule shorter than the grace period: nothing to decide
        return None
    return ASHAScheduler(time_attr=REPORT_ITERATION, max_t=last_rung, grace_period=grace,
                         reduction_factor=sweep.space.asha.reduction_factor, stop_last_trials=False)


def optuna_searcher(sweep: Sweep) -> OptunaSearch:
    """``OptunaSearch`` over the constrained define-by-run space, with a persisted study and a seeded TPE.

    The points to evaluate are enqueued in the study directly (once: ``skip_if_exists``): Tune's own
    ``points_to_evaluate`` needs a dict space, and a define-by-run space is what keeps β_l < β_h.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # Tune prints every trial's parameters already
    space: OptunaSpace = sweep.space
    cfg = space.config(None, space.seeds[0], sweep.settings.overrides)
    sampler = optuna.samplers.TPESampler(seed=space.seeds[0])
    storage = optuna.storages.RDBStorage(sweep.optuna_url)
    direction = "maximize" if space.mode == "max" else "minimize"
    study = optuna.create_study(storage=storage, study_name=sweep.name, sampler=sampler, direction=direction,
                                load_if_exists=True)
    with warnings.catch_warnings():  # experimental since Optuna 3.2, and stable in use since
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([space.metric])  # optuna-dashboard and the plots name the objective
    for point in space.points_to_evaluate:
        study.enqueue_trial(point, skip_if_exists=True)
    return SweepOptunaSearch(space=ConstrainedSpace(space, flatten(cfg)), metric=space.metric, mode=space.mode,
                             sampler=sampler, study_name=sweep.name, storage=storage, tracking_uri=sweep.tracking_uri,
                             experiment=sweep.experiment, sweep_name=sweep.name)


class SweepOptunaSearch(OptunaSearch):
    """``OptunaSearch`` whose intermediate values are stepped by training iteration (Tune steps them by its count
    of reports: 1, 2, ... whatever the evaluation interval), and whose trials carry their MLflow run id as a user
    attribute, so optuna-dashboard and a study read back lead to the run."""

    def __init__(self, *args, tracking_uri: str, experiment: str, sweep_name: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.tracking_uri, self.experiment, self.sweep_name = tracking_uri, experiment, sweep_name
        self.linked: set[str] = set()  # Tune trial ids whose Optuna trial holds its run id

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or self.metric not in result:
            return super().on_trial_result(trial_id, result)
        ot_trial = self._ot_trials[trial_id]
        ot_trial.report(result[self.metric], int(result[REPORT_ITERATION]))
        if trial_id not in self.linked:
            self.link_run(ot_trial)
            self.linked.add(trial_id)

    def link_run(self, ot_trial) -> None:
        """Stores the MLflow run id of the trial's training (created before its first report) on the Optuna trial."""
        run_name = runs.trial_run_name(self.sweep_name, runs.optuna_trial_title(ot_trial.number))
        run = runs.find_trial_run(MlflowClient(tracking_uri=self.tracking_uri), self.experiment, run_name)
        if run is not None:
            ot_trial.set_user_attr(runs.OPTUNA_RUN_ID_ATTR, run.info.run_id)


class SessionClock(Callback):
    """Driver-side Tune callback: moves the running session's end time in ``sweep.json`` to now on every trial
    start, result and end, so a driver killed without warning leaves its time up to its last trial event.

    It holds only the folder (Tune pickles callbacks with its state, and a restored sweep is a new session)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self.tick()

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self.tick()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.tick()

    def tick(self) -> None:
        tick(self.folder)


class TrialLines(Callback):
    """Driver-side Tune callback: one console line when a trial starts and when it ends, with its numbers in %."""

    def __init__(self, context: TrialContext):
        self.space, self.sweep_name, self.extra = context.space, context.sweep_name, context.extra

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        print(f"trial {self.title(trial)} started", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        plan = plan_trial(self.space, self.sweep_name, trial.config)
        trained = trained_kinds(flatten(self.space.config(plan.overrides, plan.seed, self.extra)))
        print(f"trial {plan.title} ended: {trial_summary(trial.last_result or {}, trained)}", flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        print(f"trial {self.title(trial)} failed (its error: {trial.path}/error.txt)", flush=True)

    def title(self, trial) -> str:
        return plan_trial(self.space, self.sweep_name, trial.config).title


def trial_summary(result: dict, trained: dict[str, bool] | None = None) -> str:
    """``iteration 200, M 36.4, M^m 39.1 (mIoU %)`` from a trial's last Tune result, leaving out the kinds whose
    head the trial does not train (``trained``: ``{kind: bool}``, default all)."""
    numbers = [f"{PAPER_COLUMN[kind]} {100 * result[report_key(kind)]:.1f}" for kind in KINDS
               if report_key(kind) in result and (trained or {}).get(kind, True)]
    return f"iteration {result.get(REPORT_ITERATION, 0)}" + (f", {', '.join(numbers)} (mIoU %)" if numbers else "")


class ChildRunCloser(Callback):
    """Driver-side Tune callback: owns the end status of the trials' MLflow runs.

    A trial that trains to the end marks its own run ``FINISHED``; one that ASHA stops is ended here
    (:func:`~toco_ray.tuning.runs.close_trial_run`); a failed trial's run is marked ``FAILED``. Trials never end
    their run on an error themselves (``end_on_error=False``), so nothing overwrites these statuses from a trial being
    torn down. When the sweep ends, a run still ``RUNNING`` belongs to a trial that the sweep's interruption stopped:
    it is marked ``KILLED`` (a resumed sweep reopens it).
    """

    def __init__(self, context: TrialContext):
        self.context = context

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        run = self._run(trial)
        if run is not None:
            runs.close_trial_run(self.context.tracking_uri, run, (trial.last_result or {}).get(REPORT_ITERATION, 0))

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        runs.end_if_running(self.context.tracking_uri, self._run(trial), "FAILED")

    def on_experiment_end(self, trials: list, **info) -> None:
        for trial in trials:
            runs.end_if_running(self.context.tracking_uri, self._run(trial), "KILLED")

    def _run(self, trial):
        ctx = self.context
        plan = plan_trial(ctx.space, ctx.sweep_name, trial.config)
        return runs.find_trial_run(MlflowClient(tracking_uri=ctx.tracking_uri), ctx.experiment, plan.run_name)
