"""Timing pieces shared by the benchmarks and the GPU check: a random training batch, timed training steps and
timed training-view loading.

Torch only (no Ray, no MLflow), so ``pipelines.gpu_check`` runs on a box that has just torch and timm.

Example:
    >>> cfg = build_config("synthetic")
    >>> objective = build_objective(cfg)
    >>> batch = random_batch(cfg, torch.Generator().manual_seed(0))
    >>> timing = time_train_steps(objective, cfg, batch, steps=2, warmup=1)
    >>> timing.seconds_per_step, timing.images_per_s
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from toco_ray.config import ToCoConfig
from toco_ray.data.views import collate
from toco_ray.engine import train_step
from toco_ray.optim import build_optimizer, build_scheduler


def random_batch(cfg: ToCoConfig, generator: torch.Generator) -> dict:
    """A training batch of ``cfg``'s shape: ``image``/``global2``/``local_view`` B×3×S×S noise, full valid boxes,
    B×C labels with class 0 always present (so every loss term has a present class)."""
    b, s, c = cfg.train.global_batch, cfg.data.crop_size, cfg.model.num_classes
    labels = (torch.rand(b, c, generator=generator) < 2.0 / c).float()
    labels[:, 0] = 1.0
    views = {k: torch.randn(b, 3, s, s, generator=generator) for k in ("image", "global2", "local_view")}
    return {**views, "valid_box": torch.tensor([[0, s, 0, s]] * b), "label": labels}


def synchronize(device: torch.device | str) -> None:
    """Waits for the device's queued work (CUDA calls return before it is done); nothing to wait for on CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class StepTiming:
    """Mean time of the timed steps and the device memory they needed.

    Attributes:
        seconds_per_step: mean wall time of one training step.
        images_per_s: global batch / ``seconds_per_step``.
        peak_memory_gib: peak CUDA memory allocated during the steps (None on CPU).
        first_step_s: wall time of the first (warm-up) step: allocator, kernel selection, compilation.
    """

    seconds_per_step: float
    images_per_s: float
    peak_memory_gib: float | None
    first_step_s: float


def time_train_steps(
    objective: nn.Module,
    cfg: ToCoConfig,
    batch: dict,
    steps: int,
    warmup: int = 1,
    autocast_dtype: torch.dtype | None = None,
) -> StepTiming:
    """Times ``steps`` full training steps (after ``warmup`` untimed ones) of ``objective`` on ``batch``.

    The iteration starts at ``schedule.seg_start_iter`` so that every loss term is on. The optimiser and scheduler
    are fresh; the objective's weights change as in training.
    """
    device = batch["image"].device
    optimizer = build_optimizer(objective.model.param_groups(), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.schedule.max_iters)
    iteration = max(cfg.schedule.seg_start_iter, cfg.schedule.contrast_start_iter)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(max(warmup, 1) + steps):
        synchronize(device)
        start = time.perf_counter()
        train_step(objective, optimizer, scheduler, batch, iteration + i, autocast_dtype)
        synchronize(device)
        times.append(time.perf_counter() - start)
    timed = times[max(warmup, 1) :] or times
    seconds = sum(timed) / len(timed)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return StepTiming(seconds, cfg.train.global_batch / seconds, peak, times[0])


@dataclass
class ViewTiming:
    """Training views built in one process with one torch thread, as in one DataLoader worker.

    Attributes:
        images: images turned into views (and collated into batches).
        wall_s: wall time.
        cpu_s: CPU time of this process (what a core spends, whatever else the machine runs).
    """

    images: int
    wall_s: float
    cpu_s: float

    @property
    def images_per_core_s(self) -> float:
        """Images per second of one core's CPU time."""
        return self.images / self.cpu_s


def time_views(views: Dataset, images: int, batch_size: int, warmup: int = 2) -> ViewTiming:
    """Times reading, augmenting and collating ``images`` items of ``views`` (after ``warmup`` untimed ones) in
    this process, single-threaded; items wrap around the dataset."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a DataLoader worker runs one torch thread
    try:
        for i in range(warmup):
            views[i % len(views)]
        wall, cpu = time.perf_counter(), time.process_time()
        for first in range(0, images, batch_size):
            collate([views[i % len(views)] for i in range(first, min(first + batch_size, images))])
        return ViewTiming(images, time.perf_counter() - wall, time.process_time() - cpu)
    finally:
        torch.set_num_threads(threads)


def time_loader(views: Dataset, images: int, batch_size: int, workers: int) -> float:
    """Images/s of a ``DataLoader`` with ``workers`` processes over the first ``images`` items (their start-up
    excluded: the first batch is taken before the clock starts)."""
    subset = Subset(views, [i % len(views) for i in range(images + batch_size)])
    loader = DataLoader(subset, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    count = sum(len(batch["name"]) for batch in iterator)
    return count / (time.perf_counter() - start)
