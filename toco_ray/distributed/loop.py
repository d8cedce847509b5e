"""The per-worker training loop: one process per worker, DDP between them, run by a :class:`~.session.Session`.

Stages, each a method of :class:`WorkerLoop`: set up (seeds per rank, device, data, objective wrapped for data
parallelism), restore (from the run's latest checkpoint when a failed worker group restarts or a run is resumed),
then per iteration: one :func:`~toco_ray.engine.train_step`; every ``schedule.log_every`` iterations the loss
terms, averaged over workers, make a log line; every ``schedule.eval_every`` iterations (and at the end) the val
split is evaluated on all workers, the confusion matrices are summed across them, and a checkpoint is reported.
Only rank 0 prints and writes.

What attaches to training does so through hooks (:mod:`~toco_ray.distributed.hooks`): MLflow logging, and in tests
a worker that dies or holds. This module imports neither Ray nor MLflow: a Ray Train worker runs it through
:mod:`~toco_ray.distributed.ray_worker`, a one-worker sweep trial in its own process through
:class:`~toco_ray.distributed.session.LocalSession`.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from toco_ray.checkpointing import (
    CheckpointError,
    TrainingState,
    capture_rng,
    intact_checkpoints,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    seed_everything,
)
from toco_ray.config import ToCoConfig, flatten
from toco_ray.distributed import comm, progress
from toco_ray.distributed.hooks import TrainHook
from toco_ray.distributed.loaders import (
    TrainStream,
    per_worker_batch,
    probe_batch,
    train_views,
    val_loader,
    val_views,
    with_loader_workers,
)
from toco_ray.distributed.session import Session
from toco_ray.engine import autocast_dtype, build_objective, to_device, train_step, unwrap
from toco_ray.evaluation import EvalCounts, eval_metrics, eval_mode, evaluate, summarize
from toco_ray.metric_names import (
    EVAL_NUM_IMAGES,
    LEARNING_RATE,
    REPORT_ITERATION,
    REPORT_LOSS,
    REPORT_METRICS,
    THROUGHPUT,
    loss_metric,
    oversmoothing_key,
    oversmoothing_metric,
)
from toco_ray.metrics import IoUResult
from toco_ray.models import token_similarity_by_pair
from toco_ray.optim import build_optimizer, build_scheduler
from toco_ray.visualize import class_names_or_default


@dataclass
class WorkerSpec:
    """What every worker needs to know about the run (sent once, pickled, to each worker).

    Attributes:
        cfg: the resolved experiment config.
        run_name: the run's name (also the MLflow run's ``toco.run_name`` tag).
        run_dir: the run's folder (checkpoints).
        mlflow_run_id: the MLflow run, recorded in each checkpoint's ``meta.json`` (empty: untracked).
        cpus_per_worker: torch intra-op threads of each worker on CPU.
        class_names: foreground class names for tables and figures (None = ``class1..classC``).
        hooks: called at each stage of the loop, in order (:mod:`~toco_ray.distributed.hooks`).
    """

    cfg: ToCoConfig
    run_name: str
    run_dir: str
    mlflow_run_id: str = ""
    cpus_per_worker: float = 1.0
    class_names: list[str] | None = None
    hooks: tuple[TrainHook, ...] = ()


@dataclass
class PeriodStats:
    """Loss terms of the iterations since the last log line (this worker only)."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    lr: float = math.nan

    def add(self, stats: dict[str, float]) -> None:
        self.lr = stats["lr"]
        for key, value in stats.items():
            if key != "lr":
                self.sums[key] = self.sums.get(key, 0.0) + value
                self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}


@dataclass
class Evaluation:
    """One evaluation, as the ``after_eval`` hooks see it.

    Attributes:
        done: iterations trained.
        model: the network (unwrapped), in train mode.
        counts: confusion matrices summed over workers.
        results: IoU per prediction kind and baseline.
        metrics: ``eval/*`` and ``baseline/*``; on rank 0 also the over-smoothing curves and ``eval/num_images``.
        probes: rank 0: the fixed probe images (collated), or None.
    """

    done: int
    model: torch.nn.Module
    counts: EvalCounts
    results: dict[str, IoUResult]
    metrics: dict[str, float]
    probes: dict | None = None


class WorkerLoop:
    """One worker's training run; see the module docstring for the stages.

    Args:
        spec: the run.
        session: what runs this worker (Ray Train's, or :class:`~.session.LocalSession`).
    """

    def __init__(self, spec: WorkerSpec, session: Session):
        self.spec, self.session, self.cfg = spec, session, spec.cfg
        self.worker = session.worker(spec.cpus_per_worker)
        self.names = class_names_or_default(spec.class_names, self.cfg.model.num_classes)
        self.history: dict[str, Any] = {oversmoothing_key("all"): {}}
        self.last_loss = math.nan
        self.restored_from: int | None = None  # the iteration of the checkpoint this run continued from
        self.device_names: list[str] = []  # every rank's device, by rank

    def call_hooks(self, stage: str, *args: Any) -> None:
        for hook in self.spec.hooks:
            getattr(hook, stage)(self, *args)

    # --- set-up ------------------------------------------------------------------------------------------
    def run(self) -> None:
        self.setup()
        start = self.restore()
        self.call_hooks("before_train", start)
        self.train(start)

    def setup(self) -> None:
        self.cfg = with_loader_workers(self.cfg, self.spec.cpus_per_worker, self.worker.device)
        cfg, worker = self.cfg, self.worker
        per_worker_batch(cfg.train.global_batch, worker.world_size)  # fails fast if the batch does not split
        seed_everything(cfg.train.seed + worker.rank)
        # on the device before the optimiser exists, so optimiser state restored later lands there too
        self.objective = build_objective(cfg, seed=cfg.train.seed + worker.rank).to(worker.device)
        self.optimizer = build_optimizer(self.objective.model.param_groups(), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.schedule.max_iters)
        self.train_set = train_views(cfg)
        self.val_set = val_views(cfg)
        self.autocast = autocast_dtype(cfg.train.autocast, worker.device)
        self.device_names = comm.gather_objects(device_name(worker.device))

    def restore(self) -> int:
        """Loads the checkpoint the session resumes from, if any; returns the iteration to start at."""
        with self.session.latest_checkpoint() as folder:
            state = self.load_restorable(folder) if folder is not None else None
        start = 0
        if state is not None:
            self.objective.load_state_dict(state.model)
            self.optimizer.load_state_dict(state.optimizer)
            self.scheduler.load_state_dict(state.scheduler)
            self.history = state.history or self.history
            if state.world_size == self.worker.world_size and len(state.rng) == self.worker.world_size:
                restore_rng(state.rng[self.worker.rank], self.objective.generator)
            else:  # a different worker count cannot reuse per-rank streams; derive fresh ones
                seed_everything(self.cfg.train.seed + self.worker.rank + state.iteration)
            start = self.restored_from = state.iteration
            if self.worker.is_chief:
                progress.say(f"resumed from checkpoint at iteration {start} ({self.spec.run_name})")
        self.ddp = self.session.wrap(self.objective)
        return start

    def load_restorable(self, folder: Path) -> TrainingState:
        """The state of the checkpoint in ``folder`` or, if that one is damaged, of the newest intact checkpoint
        before it in the run folder (with a warning naming the damaged file)."""
        try:
            return load_checkpoint(folder)
        except CheckpointError as err:
            damaged, latest = err, Path(folder).name
        for older in intact_checkpoints(self.spec.run_dir, warn=self.worker.is_chief):
            if older.name >= latest:
                continue
            try:
                state = load_checkpoint(older)
            except CheckpointError as err:
                if self.worker.is_chief:
                    progress.say(f"warning: skipping {older.name}: {err}")
                continue
            if self.worker.is_chief:
                progress.say(f"warning: {damaged}; resuming from {older.name} instead")
            return state
        raise damaged

    # --- training ----------------------------------------------------------------------------------------
    def stream(self, start: int) -> TrainStream:
        """This worker's training batches from iteration ``start`` on."""
        return TrainStream(self.train_set, self.cfg, self.worker.rank, self.worker.world_size, start_iteration=start)

    def train(self, start: int) -> None:
        schedule = self.cfg.schedule
        stream = self.stream(start)
        self.clock = progress.Clock(start, schedule.max_iters, self.cfg.train.global_batch)
        period = PeriodStats()
        for iteration in range(start, schedule.max_iters):
            self.call_hooks("before_step", iteration)
            batch = to_device(next(stream), self.worker.device)
            period.add(train_step(self.ddp, self.optimizer, self.scheduler, batch, iteration, self.autocast))
            self.clock.tick()
            done = iteration + 1
            if done % schedule.log_every == 0 or done == schedule.max_iters:
                self.log_period(done, period)
                period = PeriodStats()
            if done % schedule.eval_every == 0 or done == schedule.max_iters:
                paused = self.clock.pause()
                self.evaluate_and_checkpoint(done)
                self.clock.resume(paused)

    def log_period(self, done: int, period: PeriodStats) -> None:
        """Loss terms averaged over the period and over workers, to the hooks; rank 0 prints a line."""
        losses = comm.mean_of_dicts(comm.gather_objects(period.means()))
        images_per_s, eta = self.clock.close_period()
        self.last_loss = losses.get("total", math.nan)
        metrics = {loss_metric(k): v for k, v in losses.items()}
        metrics[LEARNING_RATE] = period.lr
        if math.isfinite(images_per_s):
            metrics[THROUGHPUT] = images_per_s
        self.call_hooks("after_log", done, metrics)
        if self.worker.is_chief:
            progress.say(progress.train_line(done, self.cfg.schedule.max_iters, losses, period.lr, images_per_s, eta))

    # --- evaluation and checkpoints ----------------------------------------------------------------------
    def evaluate_and_checkpoint(self, done: int) -> None:
        started = time.perf_counter()
        evaluation = self.evaluate(done)
        self.call_hooks("after_eval", evaluation)
        if self.worker.is_chief:
            progress.say(progress.eval_line(done, evaluation.metrics, time.perf_counter() - started))
        report = self.report(done, evaluation.metrics)
        self.call_hooks("after_checkpoint", done, report)

    def evaluate(self, done: int) -> Evaluation:
        """The val split on every worker, counts summed over workers; rank 0 adds the probe images' curves."""
        cfg, model = self.cfg, unwrap(self.ddp).model
        loader = val_loader(self.val_set, cfg, self.worker.rank, self.worker.world_size)
        local = evaluate(model, loader, cfg.model.num_classes, cfg.cam.eval_bkg, cfg.cam.scales, self.worker.device,
                         self.autocast)
        counts = local.with_stacked(comm.sum_tensor(local.stacked(), self.worker.device))
        results = summarize(counts)
        evaluation = Evaluation(done, model, counts, results, eval_metrics(results))
        if self.worker.is_chief:
            probes = evaluation.probes = probe_batch(self.val_set, cfg.eval.num_probe_images)
            if probes is not None:
                evaluation.metrics.update(oversmoothing_metrics(self.probe_oversmoothing(model, probes, done)))
            evaluation.metrics[EVAL_NUM_IMAGES] = counts.num_images
        return evaluation

    def probe_oversmoothing(self, model, probes: dict, done: int) -> dict[str, list[float]]:
        """Per-block token similarity of the probe images, all pairs and each cross-class pair type (the latter
        NaN when a probe image has no mask); recorded in the history, which checkpoints carry."""
        masks = None if any(m is None for m in probes["mask"]) else probes["mask"]
        with eval_mode(model):
            curves = token_similarity_by_pair(model, probes["image"].to(self.worker.device), masks, model.patch_size)
        for kind, curve in curves.items():
            self.history.setdefault(oversmoothing_key(kind), {})[done] = curve
        return curves

    def report(self, done: int, metrics: dict[str, float]) -> dict[str, float]:
        """Every rank reports; rank 0 attaches the checkpoint, written atomically into a temporary folder. Returns
        once the checkpoint is committed (a worker dying soon after restarts from it, not from the previous one)."""
        report = {REPORT_ITERATION: done, REPORT_LOSS: self.last_loss}
        report.update({key: metrics[name] for key, name in REPORT_METRICS.items()})
        rng = comm.gather_objects(capture_rng(self.objective.generator))
        if not self.worker.is_chief:
            self.session.report(report, None, "")
            return report
        with tempfile.TemporaryDirectory(prefix="toco-ckpt-") as folder:
            save_checkpoint(folder, self.training_state(done, rng), self.checkpoint_meta())
            check_room(Path(folder), Path(self.spec.run_dir))
            self.session.report(report, Path(folder), f"checkpoint_{done:06d}")
        return report

    def training_state(self, done: int, rng: list[dict[str, Any]]) -> TrainingState:
        return TrainingState(
            iteration=done,
            model=self.objective.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng=rng,
            history=self.history,
            world_size=self.worker.world_size,
        )

    def checkpoint_meta(self) -> dict[str, Any]:
        return {
            "run_name": self.spec.run_name,
            "mlflow_run_id": self.spec.mlflow_run_id,
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in flatten(self.cfg).items()},
        }


def check_room(checkpoint: Path, run_dir: Path) -> None:
    """Raises ENOSPC before ``checkpoint`` is copied into ``run_dir`` when it cannot fit, rather than leaving a
    cut-short copy (which readers would skip, but which holds the space the MLflow store needs)."""
    need = sum(f.stat().st_size for f in checkpoint.iterdir() if f.is_file())
    run_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(run_dir).free
    if need > free:
        raise OSError(errno.ENOSPC, f"No space left on device: checkpoint of {need} bytes, {free} free in {run_dir}")


def oversmoothing_metrics(curves: dict[str, list[float]]) -> dict[str, float]:
    """``{"oversmoothing/block_01": …, "oversmoothing_fg_bg/block_01": …}`` from per-block curves keyed by pair kind.

    A NaN block (the probe images hold no pair of that type) is left out: a missing point, not a fake value.
    """
    return {
        oversmoothing_metric(kind, block): value
        for kind, curve in curves.items()
        for block, value in enumerate(curve)
        if not math.isnan(value)
    }


def device_name(device: torch.device) -> str:
    """Human-readable name of a training device (GPU model, or the CPU model and thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({_cpu_model()}, {torch.get_num_threads()} threads)"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine
