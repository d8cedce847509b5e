"""A tiny ToCo model overfits one batch of synthetic images with the full objective (CPU)."""

import numpy as np
import pytest
import torch

from toco_ray.config import build_config
from toco_ray.data import TrainViews, collate, labels_from_mask, render_sample
from toco_ray.engine import build_objective, train_step
from toco_ray.optim import build_optimizer, build_scheduler

pytestmark = pytest.mark.slow


def synthetic_batch(cfg, count: int) -> dict:
    views = TrainViews(cfg.data, cfg.compat)
    items = []
    for i in range(count):
        image, mask = render_sample(np.random.default_rng([7, i]))
        label = labels_from_mask(mask, cfg.model.num_classes).astype(np.float32)
        items.append(views({"image": image, "label": label, "name": f"s{i}"}, np.random.default_rng(i)))
    return collate(items)


def test_classification_loss_halves_within_50_steps():
    cfg = build_config("synthetic", {"data.crop_size": 96, "ctc.local_crop_size": 32, "optim.warmup_iters": 5})
    torch.manual_seed(0)
    objective = build_objective(cfg, seed=0)
    optimizer = build_optimizer(objective.model.param_groups(), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.schedule.max_iters)
    batch = synthetic_batch(cfg, count=4)
    history = [train_step(objective, optimizer, scheduler, batch, it) for it in range(50)]
    first, last = history[0]["cls"], min(h["cls"] for h in history[-5:])
    assert {"cls", "cls_aux", "ptc", "ctc"} <= set(history[0])  # the contrast terms train alongside
    assert last < 0.5 * first, f"cls loss {first:.4f} → {last:.4f}"
