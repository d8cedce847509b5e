"""Range checks of a whole config, run before anything starts (training, every sweep point, inference).

:mod:`toco_ray.config` checks each value's type; :func:`check_config` checks what types cannot say: a global batch
of at least one image, loss weights and learning rates that are finite and not negative, thresholds and
probabilities in [0, 1], crops that hold a patch and local crops that fit the view, an aux block inside the
backbone. Each failure is a :class:`~toco_ray.config.ConfigError` naming the key, raised in the driver, so a bad
value never reaches a worker (where Ray Train would retry it ``max_failures`` times).

Example:
    >>> check_config(build_config("synthetic", {"train.global_batch": 0}))
    Traceback (most recent call last):
    ConfigError: config key 'train.global_batch' must be at least 1, got 0
"""

from __future__ import annotations

import math
from typing import Any

import timm
import torch

from toco_ray.config import ConfigError, ToCoConfig, flatten
from toco_ray.models import check_backbone_name, resolve_block_index
from toco_ray.names import check_name

AT_LEAST_ONE = ("train.global_batch", "schedule.max_iters", "schedule.log_every", "schedule.eval_every",
                "data.crop_size", "data.val_size", "ctc.local_crop_size", "ctc.n_local_crops",
                "model.decoder_channels", "model.proj_hidden_dim", "model.proj_bottleneck_dim", "model.proj_out_dim",
                "model.num_classes", "model.decoder_dilation")
NOT_NEGATIVE = ("optim.lr", "optim.head_lr_mult", "optim.weight_decay", "optim.warmup_iters", "optim.power",
                "loss.w_cls", "loss.w_cls_aux", "loss.w_ptc", "loss.w_ctc", "loss.w_seg", "loss.w_reg",
                "loss.reg_weight", "train.grad_clip", "train.seed", "data.val_limit",
                "data.num_train", "data.num_val", "data.seed", "schedule.seg_start_iter",
                "schedule.contrast_start_iter", "schedule.aux_seg_label_until", "par.num_iter", "eval.crf_iters",
                "eval.num_probe_images", "model.depth", "model.embed_dim", "model.num_heads", "model.patch_size")
POSITIVE = ("loss.reg_scale", "loss.reg_sigma_xy", "loss.reg_sigma_rgb", "ctc.temperature", "par.temperature",
            "par.scale", "data.scale_range", "cam.scales", "eval.scales", "par.dilations", "eval.crf_gauss_sxy",
            "eval.crf_bi_sxy", "eval.crf_bi_srgb", "eval.cam_crf_gauss_sxy", "eval.cam_crf_bi_sxy",
            "eval.cam_crf_bi_srgb")
UNIT_INTERVAL = ("cam.high_thre", "cam.low_thre", "cam.bkg_high", "cam.bkg_low", "cam.eval_bkg", "ctc.ema_momentum",
                 "ctc.neg_thre", "data.color_jitter_p", "data.grayscale_p", "data.main_blur_p", "data.local_blur_p",
                 "data.global_crop_scale", "optim.warmup_ratio", "optim.betas", "par.pos_weight")


def check_config(cfg: ToCoConfig) -> ToCoConfig:
    """Returns ``cfg``, or raises :class:`ConfigError` naming the first key whose value is out of range (see the
    module docstring)."""
    flat = flatten(cfg)
    for key, value in flat.items():
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"config key {key!r} must be a finite number, got {item}")
    _check_each(flat, AT_LEAST_ONE, lambda v: v >= 1, "at least 1")
    _check_each(flat, NOT_NEGATIVE, lambda v: v >= 0, "≥ 0")
    _check_each(flat, ("data.num_workers",), lambda v: v >= -1, "≥ 0, or -1 to size the loaders from the CPUs")
    _check_each(flat, POSITIVE, lambda v: v > 0, "above 0")
    _check_each(flat, UNIT_INTERVAL, lambda v: 0 <= v <= 1, "in [0, 1]")
    lo, hi = cfg.data.scale_range
    if lo > hi:
        raise ConfigError(f"config key 'data.scale_range' must be [low, high] with low ≤ high, got {[lo, hi]}")
    lo, hi = cfg.data.synthetic_object_side
    if not 0.05 <= lo <= hi <= 1.5:
        raise ConfigError("config key 'data.synthetic_object_side' must be [low, high] with 0.05 ≤ low ≤ high ≤ 1.5, "
                          f"got {[lo, hi]}")
    if not 0 <= cfg.data.synthetic_clutter <= 4:
        raise ConfigError(f"config key 'data.synthetic_clutter' must be in [0, 4], got {cfg.data.synthetic_clutter}")
    for key in ("data.train_split", "data.val_split"):
        check_name(f"config key {key!r}:", flat[key])
    check_geometry(cfg)
    return cfg


def check_geometry(cfg: ToCoConfig) -> None:
    """Crops hold at least one patch, the local crops fit the view they are cut from, the aux block exists."""
    depth, patch = backbone_geometry(cfg.model.backbone, cfg.model.depth, cfg.model.patch_size)
    for key in ("data.crop_size", "data.val_size", "ctc.local_crop_size"):
        value = flatten(cfg)[key]
        if value < patch:
            raise ConfigError(f"config key {key!r} ({value}) is smaller than one patch of the backbone ({patch} px)")
    view, size, count = cfg.data.crop_size, cfg.ctc.local_crop_size, cfg.ctc.n_local_crops
    inner = view - 2 * (size // 2)
    if size > view or inner * inner < count:
        raise ConfigError(
            f"config key 'ctc.local_crop_size' ({size}): a {view}×{view} view (data.crop_size) cannot hold "
            f"{count} local crops of that size (ctc.n_local_crops); use a smaller crop or a larger view"
        )
    try:
        resolve_block_index(cfg.model.aux_layer, depth)
    except ValueError as err:
        raise ConfigError(f"config key 'model.aux_layer': {err}") from None


_GEOMETRY: dict[str, tuple[int, int]] = {}


def backbone_geometry(name: str, depth: int = 0, patch_size: int = 0) -> tuple[int, int]:
    """(blocks, patch side in pixels): the overrides when set, else timm's defaults (built on the meta device)."""
    if name not in _GEOMETRY:
        check_backbone_name(name)
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, num_classes=0)
        patch = model.patch_embed.patch_size
        _GEOMETRY[name] = (len(model.blocks), int(patch[0] if isinstance(patch, tuple) else patch))
    default_depth, default_patch = _GEOMETRY[name]
    return depth or default_depth, patch_size or default_patch


def _check_each(flat: dict[str, Any], keys: tuple[str, ...], ok, expected: str) -> None:
    for key in keys:
        value = flat[key]
        for item in value if isinstance(value, tuple) else (value,):
            if not ok(item):
                raise ConfigError(f"config key {key!r} must be {expected}, got {_show(value)}")


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)
