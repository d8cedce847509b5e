r"""Trains ToCo on Ray Train (DDP workers), evaluating, checkpointing and tracking every metric in MLflow.

Copy-paste:

    python -m pipelines.train                                         # synthetic preset on the embedded default
    python -m pipelines.train --smoke                                 # 6 iterations, 2 evaluations (CI)
    python -m pipelines.train --workers 2 --set train.global_batch=8 --set loss.w_ptc=0.3
    python -m pipelines.train --preset voc --data-root /data/VOC2012 --workers 2 --gpus-per-worker 1
    python -m pipelines.train --resume toco-synthetic-20250101-120000-ab12   # continue a run (same MLflow run)
    # Ctrl-C or SIGTERM: the MLflow run ends KILLED, exit status 130 / 143; --resume continues it
    ray job submit --working-dir . -- python -m pipelines.train --preset voc --data-root /data/VOC2012 \
        --workers 8 --gpus-per-worker 1

Outputs go to ``--output-dir`` (default ``outputs/``): run folders with checkpoints in ``runs/<run name>/``, and,
unless ``MLFLOW_TRACKING_URI`` is set, the MLflow store ``mlflow.db`` with artifacts in ``mlartifacts/``
(browse with ``mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db``). The MLflow experiment is
``--experiment``, else ``$MLFLOW_EXPERIMENT_NAME``, else ``toco-ray``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from toco_ray.cli import command_parser
from toco_ray.config import PRESETS, build_config, parse_override
from toco_ray.errors import EXIT_STATUS, TocoError
from toco_ray.metric_names import REPORT_METRICS
from toco_ray.tracking_names import DEFAULT_EXPERIMENT, EXPERIMENT_ENV, resolve_experiment, resolve_tracking_uri

if TYPE_CHECKING:
    from toco_ray.distributed import TrainJob

INTERRUPTED = 130  # exit status after Ctrl-C (128 + SIGINT), as shells report it; 143 after SIGTERM
# --smoke: a handful of iterations that still cross every stage (warm-up, seg start, two evaluations, checkpoints)
SMOKE_OVERRIDES = {
    "schedule.max_iters": 6,
    "schedule.eval_every": 3,
    "schedule.log_every": 1,
    "schedule.seg_start_iter": 3,
    "optim.warmup_iters": 2,
    "data.val_limit": 8,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("pipelines.train", __doc__.splitlines()[0])
    parser.add_argument("--preset", default="synthetic", choices=sorted(PRESETS), help="base config")
    parser.add_argument("--data-root", default="", help="dataset root (sets data.root)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, repeatable (e.g. --set loss.w_ptc=0.3)",
    )
    parser.add_argument("extra_overrides", nargs="*", metavar="KEY=VALUE", help="more overrides, as with --set")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Ray Train workers (DDP processes); default: one per CPU (or GPU) the cluster has, "
        "reduced to a divisor of the global batch",
    )
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="0 = CPU with gloo; >0 = GPU with NCCL")
    parser.add_argument(
        "--cpus-per-worker",
        type=float,
        default=0.0,
        help="CPUs per worker (default: the cluster's CPUs shared equally)",
    )
    parser.add_argument("--resume", default="", metavar="RUN", help="continue run RUN from its latest checkpoint")
    parser.add_argument("--smoke", action="store_true",
                        help="a few iterations for CI: " + ", ".join(f"{k}={v}" for k, v in SMOKE_OVERRIDES.items()))
    parser.add_argument("--output-dir", default="outputs", help="run folders and the embedded MLflow store")
    parser.add_argument("--run-name", default="", help="name of a new run (default: toco-<preset>-<time>-<hex>)")
    parser.add_argument("--experiment", default="",
                        help=f"MLflow experiment name (default: ${EXPERIMENT_ENV}, else {DEFAULT_EXPERIMENT})")
    parser.add_argument("--max-failures", type=int, default=3, help="worker failures to recover from")
    parser.add_argument("--keep-checkpoints", type=int, default=2, help="most recent checkpoints kept")
    parser.add_argument(
        "--ray-address",
        default="",
        help="Ray cluster to join, e.g. auto (default: $RAY_ADDRESS, else a new local cluster)",
    )
    return parser.parse_args(argv)


def build_job(args: argparse.Namespace) -> TrainJob:
    """The job described by the command line (config resolved, nothing started)."""
    from toco_ray.distributed import TrainJob, new_run_name, resolve_resume  # torch, timm, Ray: not for --help

    overrides = dict(parse_override(text) for text in [*args.overrides, *args.extra_overrides])
    if args.data_root:
        overrides["data.root"] = str(Path(args.data_root).resolve())
    if args.smoke:
        overrides = {**SMOKE_OVERRIDES, **overrides}
    output_dir = Path(args.output_dir).resolve()
    job = TrainJob(
        cfg=build_config(args.preset, overrides),
        output_dir=output_dir,
        run_name=args.resume or args.run_name or new_run_name(args.preset),
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        tracking_uri=resolve_tracking_uri(output_dir),
        experiment=resolve_experiment(args.experiment, DEFAULT_EXPERIMENT),
        resume=bool(args.resume),
        max_failures=args.max_failures,
        keep_checkpoints=args.keep_checkpoints,
        ray_address=args.ray_address,
    )
    return resolve_resume(job, overrides) if job.resume else job


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # imported once the command line is read: torch, timm, Ray and MLflow take seconds to load, --help needs none
    from toco_ray.distributed import launch
    from toco_ray.distributed.interrupts import TrainingInterrupted
    from toco_ray.tracking import run_ui_hint

    started = time.perf_counter()
    if not sys.stdout.isatty():  # worker lines reach a log file or pipe: no colour codes around their prefixes
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    try:
        job = build_job(args)
        outcome = launch(job)
    except TrainingInterrupted as err:
        print(f"stopped by {err.signal_name}: run {job.run_name} is KILLED in MLflow; continue it with "
              f"python -m pipelines.train --resume {job.run_name} --output-dir {args.output_dir}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:  # before training started: nothing to mark
        print("interrupted before training started", file=sys.stderr)
        return INTERRUPTED
    except TocoError as err:  # a bad value, name or resource (or a full disk): one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return EXIT_STATUS
    metrics = outcome.metrics
    summary = ", ".join(f"{k} {100 * metrics[k]:.1f}" for k in REPORT_METRICS if k in metrics)
    print(
        f"done in {time.perf_counter() - started:.0f} s: {summary} (mIoU %)\n"
        f"  run {outcome.run_name}, MLflow run {outcome.mlflow_run_id}\n  checkpoint {outcome.checkpoint_path}"
    )
    if outcome.mlflow_run_id:
        print(f"  {run_ui_hint(job.tracking_uri, outcome.mlflow_run_id)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
