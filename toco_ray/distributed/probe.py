"""Data-parallel equivalence probe: the first step's loss and gradients, as the training loop computes them.

Runs one forward/backward of iteration 0 on N Ray Train workers and returns the loss terms averaged over workers and
the gradients after DDP's all-reduce. Each worker is set up by the training loop itself
(:meth:`~toco_ray.distributed.loop.WorkerLoop.setup` and ``restore``: seeds, data split, model init, DDP wrapping)
and takes its first batch from the loop's own stream, so the probe certifies the loop that trains. With every active
loss term a per-image mean, 1 worker × batch G and N workers × batch G/N must agree to float precision: the check
that splitting the global batch changes nothing.

Example:
    >>> one = first_step(cfg, workers=1, out_dir=tmp)   # cfg with train.global_batch = 4
    >>> two = first_step(cfg, workers=2, out_dir=tmp)
    >>> abs(one.losses["total"] - two.losses["total"]) < 1e-6
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray.train
import torch
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from toco_ray.config import ToCoConfig
from toco_ray.distributed import comm
from toco_ray.distributed.loop import WorkerLoop, WorkerSpec
from toco_ray.distributed.ray_worker import RayTrainSession
from toco_ray.engine import to_device

RESULT_FILE = "first_step.pt"


@dataclass
class FirstStep:
    """Loss terms (mean over workers) and per-parameter gradients (after DDP's all-reduce) of iteration 0."""

    losses: dict[str, float]
    grads: dict[str, torch.Tensor]
    names: list[str]  # images of the global batch, rank by rank


def first_step_loop(config: dict[str, Any]) -> None:
    """Per-worker function: ``config = {"spec": WorkerSpec, "out": folder}``; rank 0 saves the result there."""
    loop = WorkerLoop(config["spec"], RayTrainSession())
    loop.setup()
    loop.restore()  # no checkpoint in a fresh folder: wraps the objective as training does
    batch = to_device(next(loop.stream(0)), loop.worker.device)
    losses = loop.ddp(batch, 0)
    losses["total"].backward()
    values = comm.mean_of_dicts(comm.gather_objects({k: float(v.detach()) for k, v in losses.items()}))
    names = sum(comm.gather_objects(list(batch["name"])), [])
    if loop.worker.is_chief:
        grads = {n: p.grad.detach().cpu().clone() for n, p in loop.objective.named_parameters() if p.grad is not None}
        torch.save({"losses": values, "grads": grads, "names": names}, Path(config["out"]) / RESULT_FILE)
    ray.train.report({"total": values["total"]})


def first_step(cfg: ToCoConfig, workers: int, out_dir: str | Path, cpus_per_worker: float = 1.0) -> FirstStep:
    """Runs :func:`first_step_loop` on ``workers`` CPU workers of the current Ray cluster and reads the result."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = WorkerSpec(cfg=cfg, run_name=f"first-step-{workers}", run_dir=str(out_dir), cpus_per_worker=cpus_per_worker)
    trainer = TorchTrainer(
        first_step_loop,
        train_loop_config={"spec": spec, "out": str(out_dir)},
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name=spec.run_name, storage_path=str(out_dir / "ray")),
    )
    trainer.fit()
    raw = torch.load(out_dir / RESULT_FILE, weights_only=True)
    return FirstStep(raw["losses"], raw["grads"], raw["names"])
