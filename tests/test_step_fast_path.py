"""The training step's GPU fast path, checked on CPU: no host sync per loss term, fused attention everywhere."""

import pytest
import timm
import torch
import torch.nn.functional as F

from toco_ray.benchmark import random_batch
from toco_ray.config import build_config
from toco_ray.device_check import fused_attention_blocks
from toco_ray.engine import build_objective, train_step
from toco_ray.optim import build_optimizer, build_scheduler

pytestmark = pytest.mark.unit

CONVERSIONS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__, torch.Tensor.__int__,
               torch.Tensor.__bool__}


def tiny_config():
    return build_config("synthetic", {"schedule.seg_start_iter": 0, "ctc.local_crop_size": 16, "ctc.n_local_crops": 2,
                                      "model.depth": 2, "model.aux_layer": -1, "data.crop_size": 48,
                                      "train.global_batch": 2})


class Watched(torch.Tensor):
    """A loss tensor that logs every conversion to a Python number of itself or of anything computed from it."""

    log: list = []
    stepped = False

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in CONVERSIONS:
            cls.log.append((func.__name__, cls.stepped))
        return super().__torch_function__(func, types, args, kwargs or {})


def test_loss_terms_reach_the_host_once_after_the_optimiser_step(monkeypatch):
    cfg = tiny_config()
    torch.manual_seed(0)
    objective = build_objective(cfg, seed=0)
    forward = objective.forward

    def watched_forward(batch, iteration):
        return {name: value.as_subclass(Watched) for name, value in forward(batch, iteration).items()}

    monkeypatch.setattr(objective, "forward", watched_forward)
    optimizer = build_optimizer(objective.model.param_groups(), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.schedule.max_iters)
    monkeypatch.setattr(Watched, "log", [])
    monkeypatch.setattr(Watched, "stepped", False)
    optimizer.register_step_pre_hook(lambda *_: setattr(Watched, "stepped", True))
    stats = train_step(objective, optimizer, scheduler, random_batch(cfg, torch.Generator().manual_seed(0)), 0)
    assert set(stats) == {"cls", "cls_aux", "ptc", "ctc", "seg", "reg", "total", "lr"}
    assert all(type(v) is float for v in stats.values())
    assert Watched.log == [("tolist", True)]  # one copy of all terms, after optimizer.step


def test_every_encoder_pass_of_a_step_uses_fused_attention(monkeypatch):
    # timm decides per layer at construction: Attention.fused_attn = use_fused_attn(), on unless TIMM_FUSED_ATTN=0
    assert timm.layers.use_fused_attn()
    cfg = tiny_config()
    objective = build_objective(cfg, seed=0)
    assert fused_attention_blocks(objective) == (cfg.model.depth, cfg.model.depth)
    calls = {"sdpa": 0, "encode": 0}
    sdpa, encode = F.scaled_dot_product_attention, objective.model.encode

    def counted_sdpa(*args, **kwargs):
        calls["sdpa"] += 1
        return sdpa(*args, **kwargs)

    def counted_encode(*args, **kwargs):
        calls["encode"] += 1
        return encode(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counted_sdpa)
    monkeypatch.setattr(objective.model, "encode", counted_encode)
    objective(random_batch(cfg, torch.Generator().manual_seed(0)), 0)
    # main forward; CAM: flipped scale 1.0, scale 0.5, scale 1.5; CTC: second global view, local crops
    assert calls["encode"] == 6
    assert calls["sdpa"] == cfg.model.depth * calls["encode"]
