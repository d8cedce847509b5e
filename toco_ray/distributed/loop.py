"""The per-worker training loop run by Ray Train's ``TorchTrainer`` (one process per worker, DDP between them).

Stages, each a method of :class:`WorkerLoop`: set up (seeds per rank, device, data, objective wrapped in DDP),
restore (from the run's latest checkpoint when Ray Train restarts a failed worker group or a run is resumed),
then per iteration: one :func:`~toco_ray.engine.train_step`; every ``schedule.log_every`` iterations the loss
terms, averaged over workers, are logged; every ``schedule.eval_every`` iterations (and at the end) the val split
is evaluated on all workers, the confusion matrices are summed across them, figures are logged, and a checkpoint
is reported to Ray Train. Only rank 0 prints and logs to MLflow; every rank calls ``ray.train.report``.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConsistencyMode

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
from toco_ray.data import denormalize
from toco_ray.distributed import comm, progress
from toco_ray.distributed.faults import maybe_fail, maybe_hold
from toco_ray.distributed.loaders import (
    TrainStream,
    per_worker_batch,
    probe_batch,
    train_views,
    val_loader,
    val_views,
    with_loader_workers,
)
from toco_ray.engine import autocast_dtype, build_objective, to_device, train_step, unwrap
from toco_ray.evaluation import KINDS, eval_metrics, eval_mode, evaluate, predict, summarize
from toco_ray.models import PAIR_KINDS, token_similarity_by_pair, weights_tags
from toco_ray.optim import build_optimizer, build_scheduler
from toco_ray.tracking import RunLogger, device_tags
from toco_ray.visualize import (
    cam_overlay_figure,
    class_names_or_default,
    confusion_figure,
    iou_table,
    oversmoothing_figure,
)

# Keys of the metrics every rank passes to ray.train.report at each evaluation (what a Tune search reads).
REPORT_ITERATION = "iteration"
REPORT_METRICS = {"cam_miou": "eval/cam_miou", "aux_cam_miou": "eval/aux_cam_miou", "seg_miou": "eval/seg_miou"}
REPORT_LOSS = "loss"
# Metric prefix (and history key) of each over-smoothing curve: all token pairs, then the cross-class pair types.
OVERSMOOTHING_KEYS = {"all": "oversmoothing", **{kind: f"oversmoothing_{kind}" for kind in PAIR_KINDS}}


@dataclass
class WorkerSpec:
    """What every worker needs to know about the run (sent once through ``train_loop_config``).

    Attributes:
        cfg: the resolved experiment config.
        run_name: the Ray Train run name (also the MLflow run's ``toco.run_name`` tag).
        run_dir: the run's folder in the storage path (checkpoints, fault-hook marker).
        tracking_uri: MLflow tracking URI.
        mlflow_run_id: the MLflow run rank 0 logs into; empty = no MLflow logging.
        cpus_per_worker: torch intra-op threads of each worker on CPU.
        class_names: foreground class names for tables and figures (None = ``class1..classC``).
    """

    cfg: ToCoConfig
    run_name: str
    run_dir: str
    tracking_uri: str = ""
    mlflow_run_id: str = ""
    cpus_per_worker: float = 1.0
    class_names: list[str] | None = None


@dataclass
class WorkerContext:
    """This worker's place in the group."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point given to ``TorchTrainer``: ``config = {"spec": WorkerSpec}``."""
    spec: WorkerSpec = config["spec"]
    WorkerLoop(spec, current_worker(spec)).run()


def current_worker(spec: WorkerSpec) -> WorkerContext:
    """Rank, world size and device from Ray Train's context; CPU workers get ``cpus_per_worker`` threads."""
    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    quiet_report_logs()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(spec.cpus_per_worker)))
    return WorkerContext(ctx.get_world_rank(), ctx.get_world_size(), device)


def quiet_report_logs() -> None:
    """Keeps Ray Train's one-line-per-report INFO log off the console (progress lines say the same, readably).

    That log goes through a logger named by its module's file path, which ``LoggingConfig(log_level=...)`` does
    not reach, so its level is raised here; nothing else is affected.
    """
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # a Ray version without that module: nothing to quiet
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def wrap_objective(objective: torch.nn.Module) -> torch.nn.Module:
    """Moves the objective to this worker's device and wraps it in DDP when there are several workers.

    ``find_unused_parameters``: loss terms switch on over the schedule (seg/reg after ``seg_start_iter``), so
    some parameters receive no gradient in some iterations.
    """
    return ray.train.torch.prepare_model(objective, parallel_strategy_kwargs={"find_unused_parameters": True})


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


class WorkerLoop:
    """One worker's training run; see the module docstring for the stages."""

    def __init__(self, spec: WorkerSpec, worker: WorkerContext):
        self.spec, self.worker, self.cfg = spec, worker, spec.cfg
        self.names = class_names_or_default(spec.class_names, self.cfg.model.num_classes)
        self.logger: RunLogger | None = None
        self.history: dict[str, Any] = {"oversmoothing": {}}
        self.last_loss = math.nan

    # --- set-up ------------------------------------------------------------------------------------------
    def run(self) -> None:
        self.setup()
        start = self.restore()
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
        names = comm.gather_objects(device_name(worker.device))
        if worker.is_chief and self.spec.mlflow_run_id:
            self.logger = RunLogger(self.spec.tracking_uri, self.spec.mlflow_run_id)
            self.logger.set_tags({**device_tags(names), **weights_tags(self.objective.model.backbone)})

    def restore(self) -> int:
        """Loads the latest checkpoint if Ray Train has one for this run; returns the iteration to start at."""
        checkpoint = ray.train.get_checkpoint()
        start = 0
        if checkpoint is not None:
            state = self.load_restorable(checkpoint)
            self.objective.load_state_dict(state.model)
            self.optimizer.load_state_dict(state.optimizer)
            self.scheduler.load_state_dict(state.scheduler)
            self.history = state.history or self.history
            if state.world_size == self.worker.world_size and len(state.rng) == self.worker.world_size:
                restore_rng(state.rng[self.worker.rank], self.objective.generator)
            else:  # a different worker count cannot reuse per-rank streams; derive fresh ones
                seed_everything(self.cfg.train.seed + self.worker.rank + state.iteration)
            start = state.iteration
            if self.worker.is_chief:
                progress.say(f"resumed from checkpoint at iteration {start} ({self.spec.run_name})")
            if self.logger:
                self.logger.set_tags({"restored_from_iteration": start})
        self.ddp = wrap_objective(self.objective)
        return start

    def load_restorable(self, checkpoint) -> TrainingState:
        """The state of Ray Train's latest checkpoint or, if that one is damaged, of the newest intact checkpoint
        in the run folder (with a warning naming the damaged file)."""
        with checkpoint.as_directory() as folder:
            try:
                return load_checkpoint(folder)
            except CheckpointError as err:
                damaged, latest = err, Path(folder).name
        for folder in intact_checkpoints(self.spec.run_dir, warn=self.worker.is_chief):
            if folder.name >= latest:
                continue
            try:
                state = load_checkpoint(folder)
            except CheckpointError as err:
                if self.worker.is_chief:
                    progress.say(f"warning: skipping {folder.name}: {err}")
                continue
            if self.worker.is_chief:
                progress.say(f"warning: {damaged}; resuming from {folder.name} instead")
            return state
        raise damaged

    # --- training ----------------------------------------------------------------------------------------
    def train(self, start: int) -> None:
        cfg, worker = self.cfg, self.worker
        schedule = cfg.schedule
        stream = TrainStream(self.train_set, cfg, worker.rank, worker.world_size, start_iteration=start)
        self.clock = progress.Clock(start, schedule.max_iters, cfg.train.global_batch)
        period = PeriodStats()
        for iteration in range(start, schedule.max_iters):
            maybe_fail(iteration, worker.rank, worker.world_size, self.spec.run_dir)
            maybe_hold(iteration, self.spec.run_dir)
            batch = to_device(next(stream), worker.device)
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
        """Loss terms averaged over the period and over workers; rank 0 logs them and prints a line."""
        losses = comm.mean_of_dicts(comm.gather_objects(period.means()))
        images_per_s, eta = self.clock.close_period()
        self.last_loss = losses.get("total", math.nan)
        if not self.worker.is_chief:
            return
        metrics = {f"loss/{k}": v for k, v in losses.items()}
        metrics["lr"] = period.lr
        if math.isfinite(images_per_s):
            metrics["throughput/images_per_s"] = images_per_s
        if self.logger:
            self.logger.log_metrics(metrics, step=done)
        progress.say(progress.train_line(done, self.cfg.schedule.max_iters, losses, period.lr, images_per_s, eta))

    # --- evaluation and checkpoints ----------------------------------------------------------------------
    def evaluate_and_checkpoint(self, done: int) -> None:
        started = time.perf_counter()
        model = unwrap(self.ddp).model
        loader = val_loader(self.val_set, self.cfg, self.worker.rank, self.worker.world_size)
        cfg = self.cfg
        local = evaluate(
            model, loader, cfg.model.num_classes, cfg.cam.eval_bkg, cfg.cam.scales, self.worker.device, self.autocast
        )
        counts = local.with_stacked(comm.sum_tensor(local.stacked(), self.worker.device))
        results = summarize(counts)
        metrics = eval_metrics(results)
        if self.worker.is_chief:
            self.log_evaluation(done, model, counts, results, metrics)
            progress.say(progress.eval_line(done, metrics, time.perf_counter() - started))
        self.report(done, metrics)

    def log_evaluation(self, done: int, model, counts, results, metrics: dict[str, float]) -> None:
        """Rank 0: eval metrics, CAM overlays of the probe images, over-smoothing curve, confusion matrices."""
        probes = probe_batch(self.val_set, self.cfg.eval.num_probe_images)
        smooth = {} if probes is None else oversmoothing_metrics(self.probe_oversmoothing(model, probes, done))
        metrics = {**metrics, **smooth, "eval/num_images": counts.num_images}
        if self.logger is None:
            return
        self.logger.log_metrics(metrics, step=done)
        if probes is not None:
            self.logger.log_figure(self.probe_figure(model, probes, done), f"cam_overlays/iter_{done:06d}.png")
            cross_class = {kind: self.history.get(OVERSMOOTHING_KEYS[kind], {}) for kind in PAIR_KINDS}
            figure = oversmoothing_figure(self.history["oversmoothing"], cross_class)
            self.logger.log_figure(figure, "figures/oversmoothing.png")
        conf = {name: counts.matrices[name] for name in KINDS}
        self.logger.log_figure(confusion_figure(conf, self.names), f"confusion/iter_{done:06d}.png")
        if done == self.cfg.schedule.max_iters:
            self.log_final_tables(results, counts)

    def probe_oversmoothing(self, model, probes: dict, done: int) -> dict[str, list[float]]:
        """Per-block token similarity of the probe images, all pairs and each cross-class pair type (the latter
        NaN when a probe image has no mask); recorded in the history for the figure."""
        masks = None if any(m is None for m in probes["mask"]) else probes["mask"]
        with eval_mode(model):
            curves = token_similarity_by_pair(model, probes["image"].to(self.worker.device), masks, model.patch_size)
        for kind, curve in curves.items():
            self.history.setdefault(OVERSMOOTHING_KEYS[kind], {})[done] = curve
        return curves

    def probe_figure(self, model, probes: dict, done: int):
        images = probes["image"].to(self.worker.device)
        labels = probes["label"].to(self.worker.device)
        masks = probes["mask"]
        with eval_mode(model):
            sizes = [m.shape[-2:] for m in masks]
            preds = predict(model, images, labels, sizes, self.cfg.cam.eval_bkg, self.cfg.cam.scales, self.autocast)
        return cam_overlay_figure(
            denormalize(images.cpu()),
            preds.cams.cpu(),
            preds.aux_cams.cpu(),
            labels.cpu(),
            masks,
            preds.seg,
            probes["name"],
            title=f"iteration {done}",
        )

    def log_final_tables(self, results, counts) -> None:
        per_class = {name: results[name].per_class for name in KINDS}
        table = iou_table(per_class, self.names)
        self.logger.log_text(table, "final/per_class_iou.md")
        self.logger.log_dict(
            {name: {cls: _finite_or_none(v) for cls, v in zip(self.names, results[name].per_class)} for name in KINDS},
            "final/per_class_iou.json",
        )
        self.logger.log_dict({name: counts.matrices[name].tolist() for name in KINDS}, "final/confusion.json")
        progress.say("per-class IoU (%):\n" + table)

    def report(self, done: int, metrics: dict[str, float]) -> None:
        """Every rank reports; rank 0 attaches the checkpoint, written atomically into a temporary folder."""
        report = {REPORT_ITERATION: done, REPORT_LOSS: self.last_loss}
        report.update({key: metrics[name] for key, name in REPORT_METRICS.items()})
        rng = comm.gather_objects(capture_rng(self.objective.generator))
        if self.worker.is_chief:
            self.report_checkpoint(done, report, rng)
        else:
            ray.train.report(report, checkpoint=None)
        # Reports are consumed by the controller asynchronously: wait until this checkpoint is committed, or a
        # worker dying soon after would restart the group from the previous one (or from scratch).
        ray.train.get_all_reported_checkpoints(consistency_mode=CheckpointConsistencyMode.COMMITTED)

    def report_checkpoint(self, done: int, report: dict[str, float], rng: list[dict[str, Any]]) -> None:
        """Rank 0: writes the training state into a temporary folder and reports it as the run's checkpoint."""
        state = TrainingState(
            iteration=done,
            model=self.objective.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng=rng,
            history=self.history,
            world_size=self.worker.world_size,
        )
        meta = {
            "run_name": self.spec.run_name,
            "mlflow_run_id": self.spec.mlflow_run_id,
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in flatten(self.cfg).items()},
        }
        with tempfile.TemporaryDirectory(prefix="toco-ckpt-") as folder:
            save_checkpoint(folder, state, meta)
            check_room(Path(folder), Path(self.spec.run_dir))
            ray.train.report(
                report,
                checkpoint=ray.train.Checkpoint.from_directory(folder),
                checkpoint_dir_name=f"checkpoint_{done:06d}",
            )


def check_room(checkpoint: Path, run_dir: Path) -> None:
    """Raises ENOSPC before Ray Train copies ``checkpoint`` into ``run_dir`` when it cannot fit, rather than
    leaving a cut-short copy (which readers would skip, but which holds the space the MLflow store needs)."""
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
        f"{OVERSMOOTHING_KEYS[kind]}/block_{block + 1:02d}": value
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


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
