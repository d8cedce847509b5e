"""Data loading for data-parallel training: global batches split across workers, val split sharded across them.

Training: every epoch draws one permutation of the training set (seeded by ``train.seed`` and the epoch, the same
on every worker). Global batch ``k`` is ``perm[k·G : (k+1)·G]`` (G = ``train.global_batch``); worker ``r`` of
``N`` takes the ``r``-th slice of ``G/N`` images. The views of image ``i`` in epoch ``e`` come from
``default_rng([seed, e, i])`` (:class:`~toco_ray.data.ViewDataset`), so one worker with batch G and N workers with
batch G/N see exactly the same images with the same augmentations. A run resumed at iteration ``t`` restarts in
epoch ``t // iters_per_epoch`` at batch ``t % iters_per_epoch``: the same images as an uninterrupted run.

Validation: worker ``r`` evaluates images ``r, r+N, r+2N, ...`` (no image twice, none left out).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from toco_ray.config import ToCoConfig, apply_overrides
from toco_ray.data import TrainViews, ValViews, ViewDataset, build_dataset, collate

# DataLoader processes of a CPU training worker when ``data.num_workers`` is -1: its torch threads hold its CPUs.
CPU_LOADER_WORKERS = 2


def loader_workers(num_workers: int, cpus_per_worker: float, device: torch.device) -> int:
    """DataLoader processes of one training worker: ``data.num_workers`` when ≥ 0, else sized from its CPUs.

    On GPU every CPU the worker holds but one loads data (that one runs the training loop, which only launches
    GPU work); on CPU the training loop's threads already use the worker's CPUs, so ``CPU_LOADER_WORKERS``.
    """
    if num_workers >= 0:
        return num_workers
    if device.type == "cuda":
        return max(1, int(cpus_per_worker) - 1)
    return CPU_LOADER_WORKERS


def with_loader_workers(cfg: ToCoConfig, cpus_per_worker: float, device: torch.device) -> ToCoConfig:
    """``cfg`` with ``data.num_workers`` resolved by :func:`loader_workers` (what the run records is what ran)."""
    workers = loader_workers(cfg.data.num_workers, cpus_per_worker, device)
    return apply_overrides(cfg, {"data.num_workers": workers})


def per_worker_batch(global_batch: int, world_size: int) -> int:
    """``global_batch / world_size``; raises ``ValueError`` unless it divides exactly."""
    if world_size < 1 or global_batch % world_size:
        raise ValueError(
            f"config key 'train.global_batch' = {global_batch} does not split over {world_size} workers; "
            "choose a worker count that divides it (or change the global batch)"
        )
    return global_batch // world_size


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields this worker's slice of each global batch of one epoch, from batch ``start`` on.

    Args:
        num_items: training set size.
        global_batch: G, images per iteration over all workers.
        rank, world_size: this worker and the number of workers (must divide G).
        seed: base seed; the epoch permutation uses ``seed + epoch``.
        epoch: which epoch's permutation.
        start: first global batch to yield (resume inside an epoch).
    """

    def __init__(
        self, num_items: int, global_batch: int, rank: int, world_size: int, seed: int, epoch: int, start: int = 0
    ):
        if num_items < global_batch:
            raise ValueError(f"the training set has {num_items} images, fewer than one global batch ({global_batch})")
        self.num_items, self.global_batch = num_items, global_batch
        self.local = per_worker_batch(global_batch, world_size)
        self.rank, self.seed, self.epoch, self.start = rank, seed, epoch, start

    def __len__(self) -> int:
        return self.num_items // self.global_batch - self.start

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.num_items, generator=generator).tolist()
        for k in range(self.start, self.num_items // self.global_batch):
            first = k * self.global_batch + self.rank * self.local
            yield perm[first : first + self.local]


class TrainStream:
    """Endless iterator of this worker's training batches from a given iteration, one epoch after another.

    Args:
        views: the training set wrapped in :class:`~toco_ray.data.ViewDataset`.
        cfg: the experiment config (global batch, seed, loader workers).
        rank, world_size: this worker and the number of workers.
        start_iteration: the first iteration to produce a batch for (0, or a checkpoint's iteration).
    """

    def __init__(self, views: ViewDataset, cfg: ToCoConfig, rank: int, world_size: int, start_iteration: int = 0):
        self.views, self.cfg = views, cfg
        self.rank, self.world_size = rank, world_size
        self.iters_per_epoch = len(views) // cfg.train.global_batch
        self.epoch, self.start = divmod(start_iteration, max(self.iters_per_epoch, 1))
        self._iterator: Iterator | None = None

    def _open_epoch(self) -> Iterator:
        # The dataset is copied into the loader's worker processes when the iterator is created, so the epoch
        # (which seeds the augmentations) is set first.
        self.views.set_epoch(self.epoch)
        sampler = GlobalBatchSampler(
            len(self.views),
            self.cfg.train.global_batch,
            self.rank,
            self.world_size,
            self.cfg.train.seed,
            self.epoch,
            self.start,
        )
        loader = DataLoader(
            self.views,
            batch_sampler=sampler,
            num_workers=self.cfg.data.num_workers,
            collate_fn=collate,
            pin_memory=torch.cuda.is_available(),  # page-locked batches: to_device's non-blocking copies overlap
        )
        return iter(loader)

    def __iter__(self) -> TrainStream:
        return self

    def __next__(self) -> dict:
        while True:
            if self._iterator is None:
                self._iterator = self._open_epoch()
            try:
                return next(self._iterator)
            except StopIteration:
                self._iterator = None
                self.epoch, self.start = self.epoch + 1, 0


def train_views(cfg: ToCoConfig) -> ViewDataset:
    """The training split with its augmentation views."""
    dataset = build_dataset(cfg.data, cfg.data.train_split, cfg.model.num_classes)
    return ViewDataset(dataset, TrainViews(cfg.data, cfg.compat), seed=cfg.train.seed)


def val_views(cfg: ToCoConfig) -> ViewDataset:
    """The val split (cut to ``data.val_limit``) with the evaluation view (resized to ``data.val_size``)."""
    dataset = build_dataset(cfg.data, cfg.data.val_split, cfg.model.num_classes, limit=cfg.data.val_limit)
    return ViewDataset(dataset, ValViews(cfg.data.val_size), seed=cfg.train.seed)


def val_shard(views: Dataset, rank: int, world_size: int) -> Subset:
    """Images ``rank, rank + N, ...`` of the val set: each image on exactly one worker."""
    return Subset(views, list(range(rank, len(views), world_size)))


def val_loader(views: Dataset, cfg: ToCoConfig, rank: int, world_size: int) -> DataLoader:
    """This worker's val shard in batches of the per-worker training batch size."""
    batch = per_worker_batch(cfg.train.global_batch, world_size)
    return DataLoader(
        val_shard(views, rank, world_size),
        batch_size=batch,
        shuffle=False,
        num_workers=cfg.data.num_workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
    )


def probe_batch(views: Dataset, count: int) -> dict | None:
    """The first ``count`` val images, collated: the fixed probe set whose CAM overlays are logged."""
    count = min(count, len(views))
    return collate([views[i] for i in range(count)]) if count > 0 else None
