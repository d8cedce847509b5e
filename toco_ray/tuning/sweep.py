"""A sweep: Ray Tune over a search space, each trial one distributed training, tracked as MLflow parent/children.

Order matters. Everything that can be wrong is checked before Ray starts (:func:`prepare_sweep`: the space, every
config it can produce, the data root, the tracking store), then the cluster is started and split between trials,
the MLflow parent run is created, the Optuna study opened, and only then does Tune run the trials.

Resume is the default. A sweep lives in ``<output>/sweeps/<name>/``::

    sweep.json    state, written atomically: the space's text and digest, the settings, the MLflow parent run id,
                  the Optuna study, the wall time of every session (:mod:`~toco_ray.tuning.state`)
    sweep.lock    held by the running driver: a second driver of the same sweep is refused
    tune/         Tune's experiment state (``Tuner.restore`` continues it: finished trials are kept, unfinished
                  ones continue from their training checkpoints)
    optuna.db     the Optuna study (SQLite; the driver is its only writer); TPE seeded by ``train.seed``'s first
                  value, so a sweep samples the same points every time. ``optuna_storage`` puts the study in
                  another database instead (a cluster keeps it on the head node; see cluster.yaml)
    runs/<run>/   each trial's training run: checkpoints and resolved config
    report/       what ``python -m pipelines.report`` writes

Running the same command again continues the sweep with the settings it started with (a changed search-space file
is refused); ``resume=False`` starts a new sweep beside it (``<name>-<UTC time>``).

Example:
    >>> outcome = run_sweep(SweepRequest(space_path="search_spaces/quick_demo.yaml", output_dir=Path("outputs")))
    >>> outcome.parent_run_id, outcome.trials
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from toco_ray.config import flatten
from toco_ray.distributed.interrupts import sigterm_as_ctrl_c
from toco_ray.names import check_name
from toco_ray.tracking import (
    RunLogger,
    artifact_root,
    check_tracking_uri,
    end_run,
    get_or_create_experiment,
    is_local_store,
    provenance_tags,
    resolve_tracking_uri,
)
from toco_ray.tuning.checks import load_space
from toco_ray.tuning.cluster import TrialResources, plan_resources, start_ray
from toco_ray.tuning.sampling import ConstrainedSpace
from toco_ray.tuning.space import SearchSpace
from toco_ray.tuning.state import (
    STATE_FILE,
    SessionClock,
    SweepError,
    close_session,
    open_session,
    read_state,
    sweep_lock,
    write_state,
)
from toco_ray.tuning.trial import (
    POINT_KEY,
    ROLE_TAG,
    STOPPED_TAG,
    SWEEP_TAG,
    TrialContext,
    find_trial_run,
    grid_config,
    plan_trial,
    run_trial,
)

SWEEPS_DIR = "sweeps"
TUNE_DIR = "tune"
OPTUNA_DB = "optuna.db"
EXPERIMENT_PREFIX = "toco-sweep-"  # MLflow experiment of a space: toco-sweep-<space name>
SPACE_ARTIFACT = "space"  # the search-space file, logged under this artifact path of the parent run
# Tune snapshots its experiment state at most this often (seconds); a sweep is cheap to snapshot and a fresh
# state after each trial keeps a killed sweep from redoing work (Tune's default adapts from 10 s upwards).
TUNE_SNAPSHOT_S = "1"
TUNE_MAX_FAILURES = 1  # a failed trial is retried once (its training continues from its checkpoint)


@dataclass
class SweepSettings:
    """How the trials run; fixed when a sweep starts (a resumed sweep keeps them).

    Attributes:
        num_samples: Optuna trials (0 = the space's ``num_samples``).
        max_concurrent: trials at once (0 = automatic: one on two CPUs, see :mod:`~toco_ray.tuning.cluster`).
        workers_per_trial: Ray Train workers per trial.
        gpus_per_worker: 0 = CPU.
        cpus_per_worker: 0 = the cluster's CPUs shared between the workers of concurrent trials.
        overrides: config overrides applied to every trial, on top of the space's ``base.set`` (data root, smoke).
        max_trials: run at most this many trials (0 = all): the first seed and rows, or samples (smoke runs).
    """

    num_samples: int = 0
    max_concurrent: int = 0
    workers_per_trial: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 0.0
    overrides: dict[str, Any] = field(default_factory=dict)
    max_trials: int = 0


@dataclass
class SweepRequest:
    """A sweep as asked for on the command line."""

    space_path: str
    output_dir: Path
    name: str = ""
    settings: SweepSettings = field(default_factory=SweepSettings)
    resume: bool = True
    experiment: str = ""
    ray_address: str = ""
    optuna_storage: str = ""  # Optuna study database URL (default: optuna.db in the sweep folder)


@dataclass
class Sweep:
    """A prepared sweep: checked, with its folder and state; nothing started yet."""

    space: SearchSpace
    name: str
    dir: Path
    tracking_uri: str
    experiment: str
    settings: SweepSettings
    state: dict[str, Any]
    resumed: bool
    optuna_storage: str = ""

    @property
    def tune_dir(self) -> Path:
        return self.dir / TUNE_DIR

    @property
    def optuna_url(self) -> str:
        return self.optuna_storage or f"sqlite:///{self.dir / OPTUNA_DB}"


@dataclass
class SweepOutcome:
    """What a finished (or stopped) sweep left behind."""

    name: str
    dir: Path
    parent_run_id: str
    experiment: str
    trials: int
    errors: int
    wall_s: float
    unfinished: int = 0
    terminated: bool = False  # stopped by SIGTERM (Tune stopped it as on Ctrl-C)


# --- preparing ----------------------------------------------------------------------------------------------
def prepare_sweep(request: SweepRequest) -> Sweep:
    """Checks the space and every trial config, finds or creates the sweep folder; starts nothing.

    Raises:
        SpaceError: the search space is invalid (names the key).
        SweepError: a resumed sweep whose space file changed, or settings that cannot work.
    """
    output_dir = request.output_dir.resolve()
    name = check_name("sweep name (--name, default the space file's name)",
                      request.name or Path(request.space_path).stem)
    folder = output_dir / SWEEPS_DIR / name
    state = read_state(folder)
    if state and not request.resume:
        name = f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        folder, state = output_dir / SWEEPS_DIR / name, {}
    settings = SweepSettings(**state["settings"]) if state else request.settings
    if state and settings != request.settings:
        print(f"note: sweep {name!r} continues with the settings it started with ({folder / STATE_FILE}); "
              "--no-resume starts a new sweep with the ones given now", flush=True)
    space = load_space(request.space_path, settings.overrides)
    if state and state["space_digest"] != space.digest:
        raise SweepError(
            f"{request.space_path} changed since sweep {name!r} started ({folder / STATE_FILE}); restore the "
            "file, or start a new sweep with --no-resume"
        )
    if settings.num_samples:
        if space.kind == "grid":
            raise SweepError("--num-samples applies to Optuna sweeps; a grid runs every point once per seed")
        space = space.with_samples(settings.num_samples)
    if settings.max_trials:
        space = space.truncated(settings.max_trials)
    tracking_uri = resolve_tracking_uri(output_dir)
    check_tracking_uri(tracking_uri)
    experiment = state.get("experiment") or request.experiment or EXPERIMENT_PREFIX + space.name
    sweep = Sweep(space, name, folder, tracking_uri, experiment, settings, state, resumed=bool(state),
                  optuna_storage=optuna_storage(request, state, space, name))
    check_trial_data(sweep)
    return sweep


def optuna_storage(request: SweepRequest, state: dict[str, Any], space: SearchSpace, name: str) -> str:
    """The study database of an Optuna sweep: the one a resumed sweep started with, else ``request.optuna_storage``
    (empty: ``optuna.db`` in the sweep folder). A new sweep refuses a shared database that already holds a study of
    its name: it would continue another sweep's study."""
    if state:  # a resumed sweep keeps its study
        stored = (state.get("optuna") or {}).get("storage", "")
        if stored.endswith(f"/{SWEEPS_DIR}/{name}/{OPTUNA_DB}"):
            return ""  # the sweep folder's own study: found from the folder, wherever the folder has moved
        if stored and request.optuna_storage and request.optuna_storage != stored:
            print(f"note: sweep {name!r} continues its Optuna study in {stored}", flush=True)
        return stored
    if space.kind != "optuna" or not request.optuna_storage:
        return ""
    import optuna

    try:
        existing = optuna.study.get_all_study_names(storage=request.optuna_storage)
    except Exception as err:  # any driver or connection error: the database cannot be used
        raise SweepError(f"Optuna storage {request.optuna_storage} cannot be opened: {err}") from None
    if name in existing:
        raise SweepError(f"Optuna storage {request.optuna_storage} already holds a study named {name!r} that no sweep "
                         f"folder under this --output-dir continues; give the new sweep another --name")
    return request.optuna_storage


def check_trial_data(sweep: Sweep) -> None:
    """Opens the data of the first trial's config (generating the synthetic default once, here, not in trials)."""
    from toco_ray.distributed.job import JobError, check_data

    cfg = sweep.space.config(None, sweep.space.seeds[0], sweep.settings.overrides)
    try:
        sizes = check_data(cfg)
    except JobError as err:
        raise SweepError(str(err)) from None
    if sizes["train"] < cfg.train.global_batch:
        raise SweepError(f"split {cfg.data.train_split!r} has {sizes['train']} images, fewer than one global batch")


# --- state -------------------------------------------------------------------------------------------------
def initial_state(sweep: Sweep, parent_run_id: str) -> dict[str, Any]:
    return {
        "name": sweep.name,
        "space_path": str(Path(sweep.space.path).resolve()),
        "space_name": sweep.space.name,
        "space_digest": sweep.space.digest,
        "space_text": sweep.space.text,
        "settings": dataclasses.asdict(sweep.settings),
        "experiment": sweep.experiment,
        "tracking_uri": sweep.tracking_uri,
        "parent_run_id": parent_run_id,
        "optuna": {"storage": sweep.optuna_url, "study_name": sweep.name} if sweep.space.kind == "optuna" else None,
        "sessions": [],
    }


# --- MLflow parent run ----------------------------------------------------------------------------------------
def open_parent_run(sweep: Sweep, resources: TrialResources) -> str:
    """Creates the sweep's parent run (or marks the stored one running again); logs the space and settings once."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    location = artifact_root(sweep.dir.parent.parent) if is_local_store(sweep.tracking_uri) else None
    experiment_id = get_or_create_experiment(client, sweep.experiment, location)
    run_id = sweep.state.get("parent_run_id", "")
    if run_id:
        client.update_run(run_id, status="RUNNING")
        return run_id
    tags = {ROLE_TAG: "parent", SWEEP_TAG: sweep.name, "toco.sweep.dir": str(sweep.dir),
            "toco.sweep.kind": sweep.space.kind, "toco.sweep.space": sweep.space.name,
            "toco.run_name": f"sweep:{sweep.name}", **provenance_tags()}
    if sweep.space.kind == "optuna":
        tags.update({"optuna.storage": sweep.optuna_url, "optuna.study_name": sweep.name})
    run_id = client.create_run(experiment_id, run_name=f"sweep-{sweep.name}", tags=tags).info.run_id
    logger = RunLogger(sweep.tracking_uri, run_id)
    logger.log_params(parent_params(sweep, resources))
    logger.log_text(sweep.space.text, f"{SPACE_ARTIFACT}/{Path(sweep.space.path).name}")
    return run_id


def parent_params(sweep: Sweep, resources: TrialResources) -> dict[str, Any]:
    """The sweep's definition as MLflow params: base config keys, the swept keys, counts and resources."""
    space = sweep.space
    params: dict[str, Any] = {
        "sweep.kind": space.kind, "sweep.preset": space.preset, "sweep.metric": space.metric,
        "sweep.mode": space.mode, "sweep.seeds": list(space.seeds), "sweep.trials": space.trial_count(),
        "sweep.max_concurrent": resources.max_concurrent, "sweep.workers_per_trial": resources.workers,
        "sweep.cpus_per_worker": resources.cpus_per_worker, "sweep.gpus_per_worker": resources.gpus_per_worker,
        "sweep.asha": space.asha.model_dump_json() if space.asha else "none",
    }
    params.update({f"base.{k}": v for k, v in {**space.base_set, **sweep.settings.overrides}.items()})
    if space.kind == "grid":
        params.update({f"grid.{k}": list(v) for k, v in space.grid.items()})
        # MLflow param names allow few characters ("+L_cls^m" is not one): variants are numbered, the name in the value
        params.update({f"variant.{i}": json.dumps({"name": v.name, "set": v.overrides}, sort_keys=True)
                       for i, v in enumerate(space.variants)})
    else:
        params.update({f"search.{k}": p.model_dump_json() for k, p in space.search.items()})
    return params


# --- Tune ------------------------------------------------------------------------------------------------------
def trial_context(sweep: Sweep, resources: TrialResources, parent_run_id: str) -> TrialContext:
    return TrialContext(
        space=sweep.space, sweep_name=sweep.name, sweep_dir=str(sweep.dir), tracking_uri=sweep.tracking_uri,
        experiment=sweep.experiment, parent_run_id=parent_run_id, extra=dict(sweep.settings.overrides),
        workers=resources.workers, cpus_per_worker=resources.cpus_per_worker,
        gpus_per_worker=resources.gpus_per_worker,
    )


def trainable(context: TrialContext, resources: TrialResources):
    """``run_trial`` with the sweep's context, asking Tune for the trial function's own (tiny) resources."""
    from ray import tune

    return tune.with_resources(tune.with_parameters(run_trial, context=context), resources.trial_fn)


def build_tuner(sweep: Sweep, context: TrialContext, resources: TrialResources):
    """A new ``Tuner`` for the sweep: grid points as a ``grid_search``, or Optuna TPE over the define-by-run space,
    ASHA on the in-training metric when the space asks for it."""
    from ray import tune

    space = sweep.space
    if space.kind == "grid":
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
            trial_name_creator=TrialNamer(context),
            trial_dirname_creator=trial_dirname,
            # no actor reuse: a trial that ASHA stops is still inside TorchTrainer.fit(); only ending its process
            # ends its training (a reused actor waits for it, and Tune fails the next trial)
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(sweep.dir),
            failure_config=tune.FailureConfig(max_failures=TUNE_MAX_FAILURES),
            callbacks=[ChildRunCloser(context), SessionClock(sweep.dir)],
            verbose=1,
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


def asha_scheduler(sweep: Sweep):
    """ASHA on the space's metric, in training iterations, from the end of the grace period (or None).

    Rungs lie strictly before the last iteration: a trial that has trained to the end has nothing left to save,
    and stopping it then would kill its training while it writes its last checkpoint and closes its MLflow run.
    ASHA puts a rung at ``max_t`` itself, so ``max_t`` is one iteration short of the schedule, and
    ``stop_last_trials=False`` lets a trial that passes every rung end by itself.
    """
    if sweep.space.asha is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    from toco_ray.distributed.loop import REPORT_ITERATION

    cfg = sweep.space.config(None, sweep.space.seeds[0], sweep.settings.overrides)
    last_rung = cfg.schedule.max_iters - 1
    grace = sweep.space.asha.grace_period(cfg)
    if grace > last_rung:  # e.g. a --smoke schedule shorter than the grace period: nothing to decide
        return None
    return ASHAScheduler(time_attr=REPORT_ITERATION, max_t=last_rung, grace_period=grace,
                         reduction_factor=sweep.space.asha.reduction_factor, stop_last_trials=False)


def optuna_searcher(sweep: Sweep):
    """``OptunaSearch`` over the constrained define-by-run space, with a persisted study and a seeded TPE.

    The points to evaluate are enqueued in the study directly (once: ``skip_if_exists``): Tune's own
    ``points_to_evaluate`` needs a dict space, and a define-by-run space is what keeps β_l < β_h.
    """
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # Tune prints every trial's parameters already
    space = sweep.space
    cfg = space.config(None, space.seeds[0], sweep.settings.overrides)
    sampler = optuna.samplers.TPESampler(seed=space.seeds[0])
    storage = optuna.storages.RDBStorage(sweep.optuna_url)
    direction = "maximize" if space.mode == "max" else "minimize"
    study = optuna.create_study(storage=storage, study_name=sweep.name, sampler=sampler, direction=direction,
                                load_if_exists=True)
    for point in space.points_to_evaluate:
        study.enqueue_trial(point, skip_if_exists=True)
    return OptunaSearch(space=ConstrainedSpace(space, flatten(cfg)), metric=space.metric, mode=space.mode,
                        sampler=sampler, study_name=sweep.name, storage=storage)


class ChildRunCloser(Callback):
    """Driver-side Tune callback: owns the end status of the trials' MLflow runs.

    A trial that trains to the end marks its own run ``FINISHED`` and gets the tag
    ``toco.sweep.stopped_early = false``. A trial that ASHA stops never returns from training, so its run is
    marked ``FINISHED`` here with ``true (at iteration N)``; a failed trial's run is marked ``FAILED``. Trials
    never end their run on an error themselves (``launch(..., end_on_error=False)``), so nothing overwrites
    these statuses from a trial being torn down. When the sweep ends, a run still ``RUNNING`` belongs to a trial
    that the sweep's interruption stopped: it is marked ``KILLED`` (a resumed sweep reopens it).
    """

    def __init__(self, context: TrialContext):
        self.context = context

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        from toco_ray.distributed.loop import REPORT_ITERATION

        run = self._run(trial)
        if run is None:
            return
        client = self._client()
        if run.info.status == "FINISHED" and STOPPED_TAG not in run.data.tags:
            client.set_tag(run.info.run_id, STOPPED_TAG, "false")
        elif run.info.status == "RUNNING":
            last = (trial.last_result or {}).get(REPORT_ITERATION, 0)
            client.set_tag(run.info.run_id, STOPPED_TAG, f"true (at iteration {last})")
            end_run(self.context.tracking_uri, run.info.run_id, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        run = self._run(trial)
        if run is not None and run.info.status == "RUNNING":
            end_run(self.context.tracking_uri, run.info.run_id, "FAILED")

    def on_experiment_end(self, trials: list, **info) -> None:
        for trial in trials:
            run = self._run(trial)
            if run is not None and run.info.status == "RUNNING":
                end_run(self.context.tracking_uri, run.info.run_id, "KILLED")

    def _client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.context.tracking_uri)

    def _run(self, trial):
        ctx = self.context
        plan = plan_trial(ctx.space, ctx.sweep_name, trial.config)
        return find_trial_run(self._client(), ctx.experiment, plan.run_name)


# --- running -----------------------------------------------------------------------------------------------------
def run_sweep(request: SweepRequest) -> SweepOutcome:
    """Prepares, starts Ray, opens MLflow and Optuna, and runs (or continues) the sweep to the end.

    Raises:
        SpaceError, SweepError, ClusterError: the sweep cannot start (nothing has been started then, except Ray
            for a ClusterError). A SweepError also when another driver runs the same sweep.
    """
    started = time.time()
    sweep = prepare_sweep(request)
    with sweep_lock(sweep.dir):
        return run_locked(sweep, request, started)


def run_locked(sweep: Sweep, request: SweepRequest, started: float) -> SweepOutcome:
    """:func:`run_sweep` once the sweep's lock is held."""
    import ray

    start_ray(request.ray_address)
    s = sweep.settings
    resources = plan_resources(ray.cluster_resources(), s.workers_per_trial, s.gpus_per_worker, s.max_concurrent,
                               s.cpus_per_worker)
    parent_run_id = open_parent_run(sweep, resources)
    state = sweep.state or initial_state(sweep, parent_run_id)
    open_session(state, started)
    write_state(sweep.dir, state)
    context = trial_context(sweep, resources, parent_run_id)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", TUNE_SNAPSHOT_S)
    action = "continuing" if sweep.resumed else "starting"
    print(f"{action} sweep {sweep.name}: {sweep.space.trial_count()} trial(s) of {sweep.space.path}, "
          f"{resources.describe()}; MLflow experiment {sweep.experiment!r} (parent run {parent_run_id}); "
          f"folder {sweep.dir}", flush=True)
    status = "FAILED"
    try:
        with sigterm_as_ctrl_c() as terminated:
            results = open_tuner(sweep, context, resources).fit()
        unfinished = count_unfinished(sweep, len(results), parent_run_id)
        status = "KILLED" if unfinished else "FINISHED"  # Tune returns normally when Ctrl-C stops it
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        wall_s = record_session(sweep, state, parent_run_id, status)
    errors = sum(1 for r in results if r.error is not None)
    if errors:
        RunLogger(sweep.tracking_uri, parent_run_id).set_tags({"toco.sweep.errors": errors})
    return SweepOutcome(sweep.name, sweep.dir, parent_run_id, sweep.experiment, len(results), errors, wall_s,
                        unfinished, terminated=bool(terminated))


def count_unfinished(sweep: Sweep, started: int, parent_run_id: str) -> int:
    """Trials an interrupted sweep left to do: those never started plus those cut off (their runs ``KILLED``).

    Tune reports a trial that Ctrl-C cut off as terminated, so its count cannot tell; the MLflow runs can."""
    from mlflow import MlflowClient

    from toco_ray.tuning.report import children

    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    killed = sum(run.info.status == "KILLED" for run in children(client, client.get_run(parent_run_id)))
    return max(0, sweep.space.trial_count() - started) + killed


def open_tuner(sweep: Sweep, context: TrialContext, resources: TrialResources):
    """Tune's state of a resumed sweep (finished trials kept, unfinished and failed ones continued), else a new
    ``Tuner``."""
    from ray import tune

    if sweep.resumed and tune.Tuner.can_restore(str(sweep.tune_dir)):
        return tune.Tuner.restore(str(sweep.tune_dir), trainable(context, resources), resume_unfinished=True,
                                  resume_errored=True)
    return build_tuner(sweep, context, resources)


def record_session(sweep: Sweep, state: dict[str, Any], parent_run_id: str, status: str) -> float:
    """Closes this session in ``sweep.json``, logs the wall time of all sessions to the parent run and ends it;
    returns that wall time."""
    total = close_session(state, status)
    write_state(sweep.dir, state)
    RunLogger(sweep.tracking_uri, parent_run_id).log_metrics({"sweep/wall_s": total}, step=len(state["sessions"]))
    end_run(sweep.tracking_uri, parent_run_id, status)
    return total
