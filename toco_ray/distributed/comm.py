"""Collectives over the training workers (torch.distributed), each a no-op in a single process."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_tensor(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Element-wise sum over workers (NCCL needs the tensor on this worker's GPU, gloo takes CPU tensors)."""
    if not is_distributed():
        return values
    buffer = values.to(device)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.cpu()


def gather_objects(obj: Any) -> list[Any]:
    """Every worker's ``obj`` (picklable), indexed by rank, on every worker."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_of_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over the dicts that have the key (workers' loss terms are averaged like DDP's gradients)."""
    keys = sorted({k for d in dicts for k in d})
    return {k: sum(d[k] for d in dicts if k in d) / sum(1 for d in dicts if k in d) for k in keys}


def barrier() -> None:
    if is_distributed():
        dist.barrier()
