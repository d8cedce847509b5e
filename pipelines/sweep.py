r"""Runs a sweep or a paper ablation on Ray Tune: each trial one distributed training, tracked in MLflow.

Copy-paste:

    python -m pipelines.sweep search_spaces/quick_demo.yaml --max-concurrent 2   # 6 short trials, 2 at a time
    python -m pipelines.sweep search_spaces/quick_demo.yaml --smoke    # 6 iterations per trial, ≤ 2 trials (CI)
    python -m pipelines.sweep search_spaces/quick_demo.yaml --dry-run  # list the trials; start nothing
    python -m pipelines.sweep search_spaces/table5b_crop_size.yaml --data-root /data/VOC2012 --gpus-per-worker 1
    python -m pipelines.sweep search_spaces/toco_hpo.yaml --data-root /data/VOC2012 --gpus-per-worker 1 \
        --max-concurrent 4 --num-samples 60
    python -m pipelines.sweep search_spaces/quick_demo.yaml --no-resume   # a new sweep beside the old one
    python -m pipelines.report quick_demo                              # its table, plots and time account

Ctrl-C or SIGTERM stops a sweep (exit status 130 / 143): the cut-off trials and the parent run end ``KILLED``.
Resume is the default: the same command continues an interrupted sweep (finished trials are kept, unfinished ones
continue from their checkpoints, the Optuna study and the MLflow parent run are reused). Everything lands in
``--output-dir`` (default ``outputs/``): ``sweeps/<name>/`` (state, Tune, Optuna study, trial runs) and, unless
``MLFLOW_TRACKING_URI`` is set, the MLflow store ``mlflow.db`` (experiment ``--experiment``, else
``$MLFLOW_EXPERIMENT_NAME``, else ``toco-sweep-<space>``). On a cluster
(``cluster.yaml``), ``--output-dir`` is on shared storage and the Optuna study goes to the head node's database
(``--optuna-storage``, set there through ``$TOCO_OPTUNA_STORAGE``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.train import SMOKE_OVERRIDES
from toco_ray.cli import command_parser
from toco_ray.config import parse_override
from toco_ray.errors import EXIT_STATUS, TocoError
from toco_ray.tracking_names import EXPERIMENT_ENV
from toco_ray.tuning.space import GridSpace, format_value

if TYPE_CHECKING:
    from toco_ray.tuning.sweep import SweepRequest

INTERRUPTED = 130  # exit status of a sweep stopped by Ctrl-C (128 + SIGINT), as shells report it
TERMINATED = 143  # ... and by SIGTERM (128 + SIGTERM), which stops it the same way
SMOKE_TRIALS = 2  # --smoke: at most this many trials (Optuna samples, or the first grid points)
RAY_DEDUP_ENV = "RAY_DEDUP_LOGS"
OPTUNA_STORAGE_ENV = "TOCO_OPTUNA_STORAGE"  # default of --optuna-storage; cluster.yaml sets it on the head node


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("pipelines.sweep", __doc__.splitlines()[0])
    parser.add_argument("space", help="search-space YAML (see search_spaces/ and toco_ray/tuning/space.py)")
    parser.add_argument("--data-root", default="", help="dataset root for every trial (sets data.root)")
    parser.add_argument("--num-samples", type=int, default=0, help="Optuna trials (default: the space's)")
    parser.add_argument("--max-concurrent", type=int, default=0,
                        help="trials at once (default: what the cluster allows; one on two CPUs)")
    parser.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers per trial")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="0 = CPU (gloo); > 0 = GPU (NCCL)")
    parser.add_argument("--cpus-per-worker", type=float, default=0.0,
                        help="CPUs per worker (default: the cluster's CPUs shared between concurrent workers)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every trial, repeatable (e.g. --set schedule.max_iters=2000)")
    parser.add_argument("--no-resume", action="store_true", help="start a new sweep even if this one exists")
    parser.add_argument("--smoke", action="store_true",
                        help=f"CI: {SMOKE_TRIALS} trials at most, each {SMOKE_OVERRIDES['schedule.max_iters']} "
                             "iterations")
    parser.add_argument("--verbose", action="store_true",
                        help="Tune's status tables and result boxes (default: one line per trial start and end)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the space and list the trials it expands to; start nothing")
    parser.add_argument("--name", default="", help="sweep name (default: the space file's name)")
    parser.add_argument("--output-dir", default="outputs", help="sweeps folder and the embedded MLflow store")
    parser.add_argument("--experiment", default="",
                        help=f"MLflow experiment (default: ${EXPERIMENT_ENV}, else toco-sweep-<space>)")
    parser.add_argument("--ray-address", default="", help="Ray cluster to join (default: $RAY_ADDRESS or local)")
    parser.add_argument("--optuna-storage", default=os.environ.get(OPTUNA_STORAGE_ENV, ""),
                        help=f"database of a new Optuna sweep's study, e.g. sqlite:////abs/optuna.db (default: "
                             f"${OPTUNA_STORAGE_ENV}, else optuna.db in the sweep folder)")
    return parser.parse_args(argv)


def build_request(args: argparse.Namespace, hooks: tuple = ()) -> SweepRequest:
    """The sweep described by the command line (nothing checked or started yet)."""
    # imported here, as in main and dry_run_lines: Tune, torch and MLflow take seconds to load, --help needs none
    from toco_ray.tuning.sweep import SweepRequest, SweepSettings

    overrides = dict(parse_override(text) for text in args.overrides)
    if args.data_root:
        overrides["data.root"] = str(Path(args.data_root).resolve())
    if args.smoke:
        overrides = {**SMOKE_OVERRIDES, **overrides}
    settings = SweepSettings(
        num_samples=args.num_samples, max_concurrent=args.max_concurrent, workers_per_trial=args.workers_per_trial,
        gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker, overrides=overrides,
        max_trials=SMOKE_TRIALS if args.smoke else 0,
    )
    return SweepRequest(
        space_path=args.space, output_dir=Path(args.output_dir), name=args.name, settings=settings,
        resume=not args.no_resume, experiment=args.experiment, ray_address=args.ray_address,
        optuna_storage=args.optuna_storage, hooks=tuple(hooks), verbose=args.verbose,
    )


def main(argv: list[str] | None = None, hooks: tuple = ()) -> int:
    """The command; ``hooks``: worker-loop hooks for every trial's training (a test holds a trial with one)."""
    args = parse_args(argv)
    # Ray prints log lines that differ only in their numbers once, "[repeated 2x across cluster]": two trials'
    # progress lines would show one trial's numbers for both. Read when Ray is imported, so set before.
    os.environ.setdefault(RAY_DEDUP_ENV, "0")
    from toco_ray.tuning.sweep import run_sweep  # once the command line is read (see build_request)

    if not sys.stdout.isatty():  # worker lines reach a log file or pipe: no colour codes around their prefixes
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    try:
        if args.dry_run:
            print("\n".join(dry_run_lines(build_request(args, hooks))))
            return 0
        outcome = run_sweep(build_request(args, hooks))
    except TocoError as err:  # a bad space, setting or resource: one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return EXIT_STATUS
    print(
        f"sweep {outcome.name}: {outcome.trials} trial(s), {outcome.errors} failed, {outcome.wall_s:.0f} s of wall "
        f"time in all sessions\n  MLflow experiment {outcome.experiment!r}, parent run {outcome.parent_run_id}\n"
        f"  report: python -m pipelines.report {outcome.name} --output-dir {args.output_dir}\n  {outcome.ui}"
    )
    if outcome.unfinished:
        print(f"interrupted: {outcome.unfinished} trial(s) not finished; the same command resumes the sweep")
        return TERMINATED if outcome.terminated else INTERRUPTED
    return 1 if outcome.errors else 0


def dry_run_lines(request: SweepRequest) -> list[str]:
    """The trials the request's space expands to, each with the overrides it adds to ``base.set`` (checked, as a
    sweep would check them, but nothing started)."""
    from toco_ray.tuning.sweep import sweep_space

    space = sweep_space(request.space_path, request.settings)
    lines = [f"{space.name}: {space.trial_count()} trial(s), {space.kind}, metric {space.metric} ({space.mode})"]
    if isinstance(space, GridSpace):
        for point in space.grid_points():
            changes = ", ".join(f"{k}={format_value(v)}" for k, v in point.overrides.items()) or "base only"
            lines.append(f"  {point.title:<28} {changes}, train.seed={point.seed}")
        return lines
    lines += [f"  search {key}: {param}" for key, param in space.search.items()]
    lines += [f"  first: {point}" for point in space.points_to_evaluate]
    return lines


if __name__ == "__main__":
    sys.exit(main())
