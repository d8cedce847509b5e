"""A training job: the config plus where and how it runs, checked before anything starts.

:func:`validate_job` runs in the driver before Ray is touched: the data root exists and holds the expected
layout, the global batch splits over the workers, the MLflow store answers, a resumed run exists. Each failure is
a :class:`JobError` naming what was wrong and what to do.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toco_ray.config import ToCoConfig
from toco_ray.config_checks import check_config
from toco_ray.data import DatasetError, build_dataset
from toco_ray.distributed.hooks import TrainHook
from toco_ray.distributed.loaders import per_worker_batch
from toco_ray.errors import TocoError
from toco_ray.models import check_backbone_name
from toco_ray.names import check_name
from toco_ray.tracking import DEFAULT_EXPERIMENT, TrackingError, check_tracking_uri

RUNS_DIR = "runs"  # Ray Train storage path inside the output folder: one sub-folder per run
CONFIG_FILE = "config.yaml"  # the resolved config, saved in the run folder


class JobError(TocoError, ValueError):
    """The job cannot start; the message says what was wrong and what to do."""


@dataclass
class TrainJob:
    """Everything the launcher needs.

    Attributes:
        cfg: the resolved experiment config.
        output_dir: root of run folders, the embedded MLflow store and its artifacts.
        run_name: unique per run (a resumed run keeps its name).
        workers: number of Ray Train workers (DDP processes); 0 = as many as the cluster's CPUs (or GPUs) allow,
            reduced to a divisor of the global batch.
        gpus_per_worker: 0 trains on CPU with gloo; > 0 on GPU with NCCL.
        cpus_per_worker: CPUs reserved per worker (0 = the cluster's CPUs shared equally among the workers).
        tracking_uri: MLflow tracking URI (already resolved: env or embedded default).
        experiment: MLflow experiment name.
        resume: continue the run ``run_name`` from its latest checkpoint and keep logging into its MLflow run.
        max_failures: worker-group failures Ray Train recovers from (restarting from the latest checkpoint).
        keep_checkpoints: checkpoints kept in the run folder (the most recent ones).
        parent_run_id: MLflow parent run (a sweep's), or empty.
        ray_address: Ray cluster to join; empty = ``$RAY_ADDRESS`` or a new local cluster.
        tags: extra MLflow tags of the run (e.g. a sweep trial's identity), set when it starts or resumes.
        title: the MLflow run's display name (default ``run_name``, by which the run is always found again).
        params: extra MLflow params of the run beside its config (e.g. a sweep trial's row label).
        print_per_class: print the final per-class IoU table (a sweep's trials leave it to MLflow and the report).
        hooks: worker-loop hooks of the run, after MLflow's (:mod:`~toco_ray.distributed.hooks`).
    """

    cfg: ToCoConfig
    output_dir: Path
    run_name: str
    workers: int = 0
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 0.0
    tracking_uri: str = ""
    experiment: str = DEFAULT_EXPERIMENT
    resume: bool = False
    max_failures: int = 3
    keep_checkpoints: int = 2
    parent_run_id: str = ""
    ray_address: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    hooks: tuple[TrainHook, ...] = ()
    title: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    print_per_class: bool = True

    @property
    def storage_path(self) -> Path:
        return self.output_dir / RUNS_DIR

    @property
    def run_dir(self) -> Path:
        return self.storage_path / self.run_name

    def with_cfg(self, cfg: ToCoConfig) -> TrainJob:
        return dataclasses.replace(self, cfg=cfg)


def new_run_name(preset: str) -> str:
    """``toco-<preset>-<UTC timestamp>-<4 hex>``: unique, so a new run never silently resumes an old one."""
    return f"toco-{preset}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def auto_workers(global_batch: int, slots: int) -> int:
    """The largest worker count ≤ ``slots`` (at least 1) that divides the global batch."""
    return max(n for n in range(1, max(1, slots) + 1) if global_batch % n == 0)


def validate_job(job: TrainJob) -> dict[str, int]:
    """Checks the job before any worker starts (cheap checks first); returns the split sizes ``{"train", "val"}``.

    Raises:
        JobError: a missing data root or split, an empty or too small split, a global batch that does not split
            over the workers, an unusable MLflow store, a resumed run that does not exist, bad resources.
        ConfigError: ``model.backbone`` is not a timm model or has an unknown pretrained tag, a value is out of
            range (:func:`~toco_ray.config_checks.check_config`), the run name is not a safe folder name.
    """
    cfg = job.cfg
    check_backbone_name(cfg.model.backbone)
    check_config(cfg)
    check_name("run name", job.run_name)
    if job.keep_checkpoints < 1:
        raise JobError(f"--keep-checkpoints must be at least 1, got {job.keep_checkpoints}")
    if job.max_failures < 0:
        raise JobError(f"--max-failures must be 0 or more, got {job.max_failures}")
    if job.workers < 0:
        raise JobError(f"--workers must be at least 1 (or 0 for automatic), got {job.workers}")
    if job.gpus_per_worker < 0 or job.cpus_per_worker < 0:
        raise JobError("--gpus-per-worker and --cpus-per-worker must not be negative")
    if job.workers:
        try:
            per_worker_batch(cfg.train.global_batch, job.workers)
        except ValueError as err:
            raise JobError(str(err)) from None
    try:
        check_tracking_uri(job.tracking_uri)
    except TrackingError as err:
        raise JobError(str(err)) from None
    if job.resume and not (job.run_dir / CONFIG_FILE).is_file():
        raise JobError(
            f"cannot resume run {job.run_name!r}: {job.run_dir / CONFIG_FILE} does not exist "
            f"(runs are under {job.storage_path}; is --output-dir the one the run was started with?)"
        )
    sizes = check_data(cfg)
    if sizes["train"] < cfg.train.global_batch:
        raise JobError(
            f"split {cfg.data.train_split!r} has {sizes['train']} images, fewer than one global batch "
            f"(train.global_batch = {cfg.train.global_batch})"
        )
    if job.workers and sizes["val"] < job.workers:
        raise JobError(f"split {cfg.data.val_split!r} has {sizes['val']} images, fewer than the {job.workers} workers")
    return sizes


def check_data(cfg: ToCoConfig) -> dict[str, int]:
    """Opens the train and val splits (layout checks; the synthetic default is generated once here)."""
    if cfg.data.root and not Path(cfg.data.root).is_dir():
        raise JobError(f"data root {cfg.data.root} does not exist or is not a folder (config key data.root)")
    sizes = {}
    for role, split, limit in (("train", cfg.data.train_split, 0), ("val", cfg.data.val_split, cfg.data.val_limit)):
        try:
            sizes[role] = len(build_dataset(cfg.data, split, cfg.model.num_classes, limit=limit))
        except DatasetError as err:
            raise JobError(f"{role} split: {err}") from None
    return sizes
