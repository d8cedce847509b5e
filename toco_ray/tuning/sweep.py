"""A sweep: Ray Tune over a search space, each trial one training run, tracked as MLflow parent/children.

Order matters. Everything that can be wrong is checked before Ray starts (:func:`prepare_sweep`: the space, every
config it can produce, the data root, the tracking store), then the cluster is started and split between trials,
the MLflow parent run is created (:mod:`~toco_ray.tuning.runs`), and Tune runs the trials
(:mod:`~toco_ray.tuning.tuner`, each trial :mod:`~toco_ray.tuning.trial`).

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

import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import ray

from toco_ray.distributed import JobError, TrainHook
from toco_ray.distributed.interrupts import sigterm_as_ctrl_c
from toco_ray.distributed.job import check_data
from toco_ray.names import check_name
from toco_ray.ray_cluster import dashboard_url
from toco_ray.tracking import check_tracking_uri, command_line, resolve_experiment, resolve_tracking_uri, run_ui_hint
from toco_ray.tuning import runs
from toco_ray.tuning.checks import load_space
from toco_ray.tuning.cluster import TrialResources, plan_resources, start_ray
from toco_ray.tuning.space import SearchSpace
from toco_ray.tuning.state import (
    OPTUNA_DB,
    STATE_FILE,
    OptunaStudy,
    Sweep,
    SweepError,
    SweepSettings,
    SweepState,
    close_session,
    open_session,
    read_state,
    sweep_lock,
    write_state,
)
from toco_ray.tuning.status import live_view_lines
from toco_ray.tuning.trial import TrialContext
from toco_ray.tuning.tuner import open_tuner, tune_console

SWEEPS_DIR = "sweeps"


@dataclass
class SweepRequest:
    """A sweep as asked for on the command line (``hooks``: extra worker-loop hooks of every trial's training)."""

    space_path: str
    output_dir: Path
    name: str = ""
    settings: SweepSettings = field(default_factory=SweepSettings)
    resume: bool = True
    experiment: str = ""  # default: $MLFLOW_EXPERIMENT_NAME, else toco-sweep-<space>
    ray_address: str = ""
    optuna_storage: str = ""  # Optuna study database URL (default: optuna.db in the sweep folder)
    hooks: tuple[TrainHook, ...] = ()
    verbose: bool = False  # Tune's status tables and result boxes (else one line per trial start and end)


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
    ui: str = ""  # the console line with the MLflow link that opens the experiment's runs table


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
    if state is not None and not request.resume:
        name = f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        folder, state = output_dir / SWEEPS_DIR / name, None
    settings = state.settings if state is not None else request.settings
    if state is not None and settings != request.settings:
        print(f"note: sweep {name!r} continues with the settings it started with ({folder / STATE_FILE}); "
              "--no-resume starts a new sweep with the ones given now", flush=True)
    space = sweep_space(request.space_path, settings)
    if state is not None and state.space_digest != space.digest:
        raise SweepError(f"{request.space_path} changed since sweep {name!r} started ({folder / STATE_FILE}); restore "
                         "the file, or start a new sweep with --no-resume")
    tracking_uri = resolve_tracking_uri(output_dir)
    check_tracking_uri(tracking_uri)
    # a resumed sweep stays in its experiment, whatever the environment says now
    experiment = (state.experiment if state else "") or resolve_experiment(request.experiment,
                                                                           runs.experiment_name(space.name))
    sweep = Sweep(space, name, folder, tracking_uri, experiment, settings, state,
                  optuna_storage=optuna_storage(request, state, space.kind, name))
    check_trial_data(sweep)
    return sweep


def sweep_space(path: str, settings: SweepSettings) -> SearchSpace:
    """The checked space with the settings' sample count and trial cap applied: the trials a sweep runs."""
    space = load_space(path, settings.overrides)
    if settings.num_samples:
        if space.kind == "grid":
            raise SweepError("--num-samples applies to Optuna sweeps; a grid runs every point once per seed")
        space = space.with_samples(settings.num_samples)
    return space.truncated(settings.max_trials) if settings.max_trials else space


def optuna_storage(request: SweepRequest, state: SweepState | None, kind: str, name: str) -> str:
    """The study database of an Optuna sweep: the one a resumed sweep started with, else ``request.optuna_storage``
    (empty: ``optuna.db`` in the sweep folder). A new sweep refuses a shared database that already holds a study of
    its name: it would continue another sweep's study."""
    if state is not None:  # a resumed sweep keeps its study
        stored = state.optuna.storage if state.optuna else ""
        if stored.endswith(f"/{SWEEPS_DIR}/{name}/{OPTUNA_DB}"):
            return ""  # the sweep folder's own study: found from the folder, wherever the folder has moved
        if stored and request.optuna_storage and request.optuna_storage != stored:
            print(f"note: sweep {name!r} continues its Optuna study in {stored}", flush=True)
        return stored
    if kind != "optuna" or not request.optuna_storage:
        return ""
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
    cfg = sweep.space.config(None, sweep.space.seeds[0], sweep.settings.overrides)
    try:
        sizes = check_data(cfg)
    except JobError as err:
        raise SweepError(str(err)) from None
    if sizes["train"] < cfg.train.global_batch:
        raise SweepError(f"split {cfg.data.train_split!r} has {sizes['train']} images, fewer than one global batch")


def initial_state(sweep: Sweep, parent_run_id: str) -> SweepState:
    optuna_study = OptunaStudy(sweep.optuna_url, sweep.name) if sweep.space.kind == "optuna" else None
    return SweepState(
        name=sweep.name, space_path=str(Path(sweep.space.path).resolve()), space_name=sweep.space.name,
        space_digest=sweep.space.digest, space_text=sweep.space.text, settings=sweep.settings,
        experiment=sweep.experiment, tracking_uri=sweep.tracking_uri, parent_run_id=parent_run_id,
        optuna=optuna_study,
    )


def trial_context(sweep: Sweep, resources: TrialResources, parent_run_id: str, hooks: tuple) -> TrialContext:
    return TrialContext(
        space=sweep.space, sweep_name=sweep.name, sweep_dir=str(sweep.dir), tracking_uri=sweep.tracking_uri,
        experiment=sweep.experiment, parent_run_id=parent_run_id, extra=dict(sweep.settings.overrides),
        workers=resources.workers, cpus_per_worker=resources.cpus_per_worker,
        gpus_per_worker=resources.gpus_per_worker, in_process=resources.in_process, hooks=tuple(hooks),
        command=command_line(),
    )


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
    start_ray(request.ray_address)
    s = sweep.settings
    resources = plan_resources(ray.cluster_resources(), s.workers_per_trial, s.gpus_per_worker, s.max_concurrent,
                               s.cpus_per_worker)
    parent_run_id = runs.open_parent_run(sweep, resources)
    state = sweep.state or initial_state(sweep, parent_run_id)
    open_session(state, started)
    write_state(sweep.dir, state)
    context = trial_context(sweep, resources, parent_run_id, request.hooks)
    print(f"{'continuing' if sweep.resumed else 'starting'} sweep {sweep.name}: {sweep.space.trial_count()} trial(s) "
          f"of {sweep.space.path}, {resources.describe()}; MLflow experiment {sweep.experiment!r} (parent run "
          f"{parent_run_id}); folder {sweep.dir}", flush=True)
    ui = run_ui_hint(sweep.tracking_uri, parent_run_id)
    live = live_view_lines(sweep.name, str(request.output_dir), dashboard_url(),
                           sweep.optuna_url if sweep.space.kind == "optuna" else "")
    print("\n".join(f"  {line}" for line in [ui, *live]), flush=True)
    status, errors = "FAILED", 0
    try:
        with sigterm_as_ctrl_c() as terminated, tune_console(request.verbose):
            results = open_tuner(sweep, context, resources, request.verbose).fit()
        errors = sum(1 for r in results if r.error is not None)
        unfinished = max(0, sweep.space.trial_count() - len(results))  # never started
        unfinished += runs.count_killed_trials(sweep.tracking_uri, parent_run_id)  # cut off (Tune says terminated)
        status = "KILLED" if unfinished else "FINISHED"  # Tune returns normally when Ctrl-C stops it
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        wall_s = close_session(state, status)
        write_state(sweep.dir, state)
        runs.close_parent_run(sweep, parent_run_id, status, wall_s, len(state.sessions), errors)
    return SweepOutcome(sweep.name, sweep.dir, parent_run_id, sweep.experiment, len(results), errors, wall_s,
                        unfinished, terminated=bool(terminated), ui=ui)
