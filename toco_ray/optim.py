"""AdamW with a 10× head learning rate, linear warm-up and poly decay (SPEC §6).

The schedule reproduces the reference's ``PolyWarmupAdamW`` multiplier, jump at the end of warm-up included:

    it < warmup:  mult = 1 − (1 − it / warmup) · (1 − warmup_ratio)
    otherwise:    mult = (1 − it / max_iters) ** power

It is expressed as a ``torch.optim.lr_scheduler.LambdaLR`` (stepped once per iteration, after the optimiser), so
its state saves and resumes with the standard ``state_dict`` machinery.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from toco_ray.config import OptimConfig


def lr_multiplier(it: int, cfg: OptimConfig, max_iters: int) -> float:
    """Learning-rate multiplier applied at iteration ``it`` (0-based)."""
    if it < cfg.warmup_iters:
        return 1.0 - (1.0 - it / cfg.warmup_iters) * (1.0 - cfg.warmup_ratio)
    return max(0.0, 1.0 - it / max_iters) ** cfg.power


def build_optimizer(param_groups: dict[str, Iterable[nn.Parameter]], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over ``{"backbone": [...], "head": [...]}``; the head group runs at ``lr × head_lr_mult``."""
    groups = [
        {"name": "backbone", "params": list(param_groups["backbone"]), "lr": cfg.lr},
        {"name": "head", "params": list(param_groups["head"]), "lr": cfg.lr * cfg.head_lr_mult},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_iters: int):
    """Per-iteration LambdaLR implementing :func:`lr_multiplier`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_multiplier(it, cfg, max_iters))
