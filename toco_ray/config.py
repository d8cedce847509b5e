"""Typed configuration: the single source of every ToCo hyper-parameter.

Every field carries a one-line comment with its meaning and source ("paper" = the CVPR 2023 text,
"ref" = the authors' reference implementation, "SPEC" = ``shared/SPEC.md`` where we deliberately differ).

The config flattens to dotted keys (``loss.w_ptc``), which is what Ray Tune's ``param_space`` and MLflow's
params take, and is rebuilt from them with strict checking: an unknown key or a wrongly typed value raises
:class:`ConfigError` naming the key.

Example:
    >>> cfg = build_config("synthetic", {"loss.w_ptc": 0.3})
    >>> cfg.loss.w_ptc
    0.3
    >>> flatten(cfg)["cam.high_thre"]
    0.7
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toco_ray.atomic import atomic_write
from toco_ray.errors import TocoError


class ConfigError(TocoError, ValueError):
    """A configuration key or value is invalid; the message names the key."""


@dataclass
class ModelConfig:
    # any timm ViT name, optionally with a pretrained tag (name.tag); paper ViT-B: deit_base_patch16_224 (tag
    # fb_in1k, the reference's file); ViT-B† is preset voc_vitb21k (the bare vit_base name loads other weights)
    backbone: str = "deit_base_patch16_224"
    pretrained: bool = True  # load timm hub weights (ignored when pretrained_path is set)
    pretrained_path: str = ""  # local weight file (.pth/.safetensors/.npz) instead of the hub
    depth: int = 0  # override the backbone's number of blocks (0 = timm default); tiny test models only
    embed_dim: int = 0  # override the embedding width D (0 = timm default)
    num_heads: int = 0  # override the attention heads (0 = timm default)
    patch_size: int = 0  # override the patch size (0 = timm default, 16 for the paper backbones)
    aux_layer: int = -3  # block whose raw output feeds the aux classifier; paper/ref: 10th of 12 (Table 5a)
    freeze_pos_embed: bool = True  # ref: pos_embed is not trained
    num_classes: int = 20  # foreground classes C (background is not a classifier output); VOC 20, COCO 80
    decoder_channels: int = 512  # LargeFOV decoder width (ref)
    decoder_dilation: int = 5  # LargeFOV 3x3 conv dilation (paper §4.4)
    proj_hidden_dim: int = 2048  # CTC projection head hidden width (ref, DINO-style head)
    proj_bottleneck_dim: int = 256  # CTC head bottleneck before L2 normalisation (ref)
    proj_out_dim: int = 1024  # CTC head output dim after the weight-normalised layer (ref)


# The synthetic generator's defaults (toco_ray/data/synthetic.py), here so that a command line shows them without
# loading the data package (torch)
SYNTHETIC_NUM_TRAIN = 400  # 10 epochs in the synthetic preset (500 iterations × batch 8)
SYNTHETIC_NUM_VAL = 100
SYNTHETIC_OBJECT_SIDE = (0.35, 0.75)  # diameter of the circle around an object, fraction of the shorter side


@dataclass
class DataConfig:
    dataset: str = "voc"  # voc | coco | synthetic
    root: str = ""  # dataset root; empty = embedded synthetic default (generated once into the cache)
    train_split: str = "train_aug"  # split list used for training (VOC train_aug = 10582 images)
    val_split: str = "val"  # split list for in-training evaluation (COCO: val_part = first 5000 of val)
    crop_size: int = 448  # global crop side in pixels (paper)
    scale_range: tuple[float, float] = (0.5, 2.0)  # random rescale range (ref)
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # brightness/contrast/sat/hue (ref)
    color_jitter_p: float = 0.8  # probability of colour jitter (ref, DINO)
    grayscale_p: float = 0.2  # probability of greyscale (ref, DINO)
    main_blur_p: float = 1.0  # Gaussian blur probability of the main view (ref global_view1, DINO global view 1)
    local_blur_p: float = 0.5  # Gaussian blur probability of the local view the crops come from (ref local_view)
    global_crop_scale: tuple[float, float] = (0.4, 1.0)  # RandomResizedCrop scale of the 2nd global view (ref)
    val_size: int = 448  # in-training eval: images resized to this side (SPEC §8)
    val_limit: int = 0  # evaluate only the first N val images (0 = all; COCO val_part uses 5000)
    num_workers: int = -1  # DataLoader processes per training worker; -1 = from its CPUs (GPU: all but one)
    num_train: int = 0  # synthetic only: training images to generate (0 = generator default)
    num_val: int = 0  # synthetic only: validation images to generate (0 = generator default)
    seed: int = 0  # synthetic only: generator seed
    # synthetic only: object diameter range, fraction of the image's shorter side (generator default); larger objects
    # give more foreground and cross-class token pairs
    synthetic_object_side: tuple[float, float] = SYNTHETIC_OBJECT_SIDE
    synthetic_clutter: float = 1.0  # synthetic only: background clutter strength (blobs, stripes; 0 = smooth)


@dataclass
class CAMConfig:
    scales: tuple[float, ...] = (1.0, 0.5, 1.5)  # multi-scale CAM for training labels (ref)
    high_thre: float = 0.7  # β_h: tokens above are confident foreground (paper; COCO 0.65)
    low_thre: float = 0.25  # β_l: tokens at or below are confident background (paper)
    bkg_high: float = 0.7  # constant background score of the "high" seg pseudo-label pass (ref)
    bkg_low: float = 0.25  # constant background score of the "low" seg pseudo-label pass (ref)
    eval_bkg: float = 0.5  # background score for CAM mIoU in evaluation (ref bkg_thre; COCO 0.45)


@dataclass
class PARConfig:
    dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24)  # 8-neighbourhood dilations, 48 neighbours (ref)
    num_iter: int = 10  # propagation iterations (ref)
    temperature: float = 0.3  # affinity temperature for colour and position (ref w1 = 0.3)
    pos_weight: float = 0.01  # weight of the positional affinity (ref w2 = 0.01)
    scale: float = 0.5  # PAR runs on the image at this scale (ref: half resolution)


@dataclass
class CTCConfig:
    local_crop_size: int = 96  # local crop side (paper; Table 5b sweeps 64/80/96/112)
    n_local_crops: int = 8  # local crops per image (ref)
    temperature: float = 0.5  # τ in Eq. 4 (paper; COCO 1.0)
    ema_momentum: float = 0.9  # ρ of the teacher head EMA (paper; Table 5c sweeps 0/0.1/0.9/0.99)
    neg_thre: float = 0.2  # a crop whose mean ROI is at most this is a negative (ref)
    form: str = "reference"  # reference (with the log(1+n) term) | paper (Eq. 4 alone); SPEC §4


@dataclass
class LossConfig:
    w_cls: float = 1.0  # final classification loss weight (paper Eq. 5); 0 switches it off
    w_cls_aux: float = 1.0  # auxiliary classification loss weight (paper Eq. 5); 0 = off (Table 4)
    w_ptc: float = 0.2  # λ1, PTC (paper); 0 = off
    w_ctc: float = 0.5  # λ2, CTC (paper); 0 = off
    w_seg: float = 0.1  # λ3, segmentation (paper); 0 = off
    w_reg: float = 0.05  # dense-energy regulariser (ref); 0 = off
    reg_scale: float = 0.5  # the energy loss runs at this image scale (ref)
    reg_sigma_xy: float = 100.0  # Gaussian kernel spatial sigma, multiplied by reg_scale (ref: 100·0.5)
    reg_sigma_rgb: float = 15.0  # Gaussian kernel colour sigma (ref)
    reg_weight: float = 1e-7  # internal weight of the energy (ref)


@dataclass
class ScheduleConfig:
    max_iters: int = 20000  # total iterations (paper VOC 20k, COCO 80k)
    seg_start_iter: int = 2000  # seg + reg losses switch on here (ref VOC 2000, COCO 8000)
    contrast_start_iter: int = 0  # PTC + CTC switch on here (ref VOC 0, COCO 12000)
    aux_seg_label_until: int = 0  # seg pseudo labels come from the aux CAM before this (ref COCO 12000)
    eval_every: int = 2000  # evaluate and checkpoint every N iterations (ref)
    log_every: int = 100  # console/metrics logging period


@dataclass
class OptimConfig:
    lr: float = 6e-5  # backbone base learning rate (paper)
    head_lr_mult: float = 10.0  # classifiers, projection head and decoder use lr × this (ref)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas (ref)
    weight_decay: float = 0.01  # AdamW weight decay on all parameters (ref)
    warmup_iters: int = 1500  # linear warm-up length (paper)
    warmup_ratio: float = 1e-6  # warm-up starts at lr × this (paper)
    power: float = 0.9  # poly decay power (paper)


@dataclass
class TrainConfig:
    global_batch: int = 4  # images per iteration over all workers (paper VOC 4, COCO 8)
    seed: int = 0  # base seed; rank r uses seed + r
    autocast: str = "bf16"  # bf16 | off: bf16 autocast of training and evaluation on CUDA; CPU always runs fp32
    grad_clip: float = 0.0  # clip the global grad norm (0 = off; ref: off)


@dataclass
class EvalConfig:
    scales: tuple[float, ...] = (1.0, 1.25, 1.5)  # final multi-scale inference (ref VOC)
    crf_iters: int = 10  # dense CRF mean-field iterations (ref)
    crf_gauss_sxy: float = 1.0  # Gaussian pairwise spatial sigma (ref)
    crf_gauss_compat: float = 1.0  # Gaussian pairwise compatibility (ref)
    crf_bi_sxy: float = 121.0  # bilateral spatial sigma (ref)
    crf_bi_srgb: float = 5.0  # bilateral colour sigma (ref)
    crf_bi_compat: float = 4.0  # bilateral compatibility (ref)
    # dense CRF of CAM pseudo labels (ref tools/infer_cam_crf_label.py), distinct from the final-seg CRF above
    cam_crf_gauss_sxy: float = 3.0  # Gaussian pairwise spatial sigma (ref pos_xy_std)
    cam_crf_gauss_compat: float = 3.0  # Gaussian pairwise compatibility (ref pos_w)
    cam_crf_bi_sxy: float = 36.0  # bilateral spatial sigma (ref bi_xy_std)
    cam_crf_bi_srgb: float = 3.0  # bilateral colour sigma (ref bi_rgb_std)
    cam_crf_bi_compat: float = 4.0  # bilateral compatibility (ref bi_w)
    # final multi-scale protocol: voc = native size, flip-sum within a scale, max across scales (ref
    # infer_seg_voc); coco = resized to data.val_size, flip-max within a scale, sum across scales (ref
    # infer_seg_coco_ddp)
    protocol: str = "voc"
    num_probe_images: int = 4  # val images whose CAM overlays are logged at each evaluation


# The reference's permutohedral lattice returns about 0.57x the exact Gaussian energy on photographs (0.569 at
# 112², 0.583 at 224², measured against its compiled extension); compat.reg_energy_scale multiplies
# loss.reg_weight by this so L_reg's gradient matches the reference's.
REFERENCE_ENERGY_RATIO = 0.57


@dataclass
class CompatConfig:
    """Switches back to the reference implementation's behaviour where toco-ray fixes a bug of it (SPEC §10).

    All off (the default) is toco-ray's fixed behaviour; ``reference`` turns every switch on. The reference's
    NaN seg loss on an empty term has no switch: a NaN loss makes AdamW write NaN into every parameter, so a run
    that reproduces it is over, not different (the reference's users restart such runs).
    """

    reference: bool = False  # every switch below on: the reference's behaviour, bugs included
    ptc_box_unscaled: bool = False  # PTC applies the valid box in pixels to the token grid (ref bug)
    box_before_flip: bool = False  # main view flipped again after the crop, valid box not flipped (ref bug)
    local_view_flip: bool = False  # local view takes its own random flip after the crop: misaligned (ref bug)
    zero_scheduled_terms: bool = False  # terms not yet switched on are computed x0: AdamW state advances (ref)
    reg_energy_scale: bool = False  # loss.reg_weight x REFERENCE_ENERGY_RATIO: the ref lattice's energy scale

    def on(self, name: str) -> bool:
        """Whether switch ``name`` is in effect (set itself or through ``reference``)."""
        return self.reference or bool(getattr(self, name))


@dataclass
class ToCoConfig:
    """The whole experiment. Sections mirror the method: model, CAM, PAR, CTC, losses, schedule."""

    preset: str = "voc"  # which preset this config was built from
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    cam: CAMConfig = field(default_factory=CAMConfig)
    par: PARConfig = field(default_factory=PARConfig)
    ctc: CTCConfig = field(default_factory=CTCConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    compat: CompatConfig = field(default_factory=CompatConfig)


# Each preset is a diff from the defaults (which are the VOC/paper values).
PRESETS: dict[str, dict[str, Any]] = {
    "voc": {},
    "coco": {
        "model.num_classes": 80,  # COCO 2014 foreground classes
        "data.dataset": "coco",
        "data.train_split": "train",
        "data.val_split": "val_part",
        "data.val_limit": 5000,  # ref: in-training validation on the first 5000 val images
        "cam.high_thre": 0.65,  # paper/ref COCO β_h
        "cam.bkg_high": 0.65,  # ref COCO: the high background score of the seg pseudo labels is also 0.65
        "cam.eval_bkg": 0.45,  # ref COCO bkg_thre of the CAM mIoU
        # τ: the released COCO script passes 1.0 to its CTC loss, while the paper ("other settings remain the
        # same") and the released COCO log use 0.5; we follow the script, the code that produced the weights.
        "ctc.temperature": 1.0,
        "schedule.max_iters": 80000,  # ref COCO
        "schedule.seg_start_iter": 8000,  # ref COCO
        "schedule.contrast_start_iter": 12000,  # ref COCO: PTC/CTC from 12k
        "schedule.aux_seg_label_until": 12000,  # ref COCO: seg labels from the aux CAM until 12k
        "schedule.eval_every": 8000,
        "train.global_batch": 8,  # ref COCO
        "eval.protocol": "coco",  # ref infer_seg_coco_ddp: 448 input, flip-max, sum over scales
    },
    # ViT-B†: the original JAX ImageNet-21k→1k weights the reference loaded (jx_vit_base_p16_224-80ecf9dd.pth)
    "voc_vitb21k": {"model.backbone": "vit_base_patch16_224.orig_in21k_ft_in1k"},
    # Small and fast on two CPU cores: a 4-block, 96-wide ViT with 8-pixel patches on 128-pixel crops.
    "synthetic": {
        "model.backbone": "vit_tiny_patch16_224",
        "model.pretrained": False,
        "model.depth": 4,
        "model.embed_dim": 96,
        "model.num_heads": 3,
        "model.patch_size": 8,
        "model.aux_layer": -2,
        "model.decoder_channels": 64,
        "model.proj_hidden_dim": 256,
        "model.proj_bottleneck_dim": 64,
        "model.proj_out_dim": 128,
        "data.dataset": "synthetic",
        "data.train_split": "train",
        "data.crop_size": 128,
        "data.val_size": 128,
        "data.num_workers": 1,
        "data.scale_range": (0.6, 1.2),  # images are only 120–190 px: keep most of each object in the crop
        "data.color_jitter": (0.4, 0.4, 0.2, 0.0),  # no hue jitter: a class's pair of hues is its main cue
        "data.grayscale_p": 0.0,  # likewise no greyscale
        "ctc.local_crop_size": 32,
        "ctc.n_local_crops": 4,
        "schedule.max_iters": 500,  # about 5.5 minutes with two CPU workers
        "schedule.seg_start_iter": 150,
        "schedule.eval_every": 250,
        "schedule.log_every": 20,
        "optim.lr": 5e-4,
        "optim.warmup_iters": 50,
        "train.global_batch": 8,
        "eval.scales": (1.0,),
        "eval.num_probe_images": 4,
    },
}


def build_config(preset: str = "voc", overrides: dict[str, Any] | None = None) -> ToCoConfig:
    """Builds a config from a preset name and dotted-key overrides (``{"loss.w_ptc": 0.3}``)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    values = {**PRESETS[preset], "preset": preset, **(overrides or {})}
    return apply_overrides(ToCoConfig(), values)


# Keys that take one of a few words. YAML reads a bare `off` as false, so false stands for "off" where "off" is one.
CHOICES: dict[str, tuple[str, ...]] = {
    "ctc.form": ("reference", "paper"),
    "eval.protocol": ("voc", "coco"),
    "train.autocast": ("bf16", "off"),
}

# Keys of earlier versions (old checkpoints and config files): old key → (new key, old value → new value).
RETIRED_KEYS: dict[str, tuple[str, dict[Any, Any]]] = {
    "train.amp_bf16": ("train.autocast", {True: "bf16", False: "off"}),
}


def apply_overrides(cfg: ToCoConfig, overrides: dict[str, Any]) -> ToCoConfig:
    """Returns a copy of ``cfg`` with dotted-key values replaced, each checked against its field type."""
    cfg = copy.deepcopy(cfg)
    known = _field_types()
    for key, value in overrides.items():
        if key in RETIRED_KEYS and isinstance(value, bool):
            key, value = RETIRED_KEYS[key][0], RETIRED_KEYS[key][1][value]
        if key not in known:
            raise ConfigError(f"unknown config key {key!r}{_suggest(key, known)}")
        if key in CHOICES and value is False and "off" in CHOICES[key]:  # YAML's bare `off`
            value = "off"
        value = _check_choice(key, value) if key in CHOICES else _coerce(key, value, known[key])
        section, _, name = key.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, name, value)
    return cfg


def flatten(cfg: ToCoConfig) -> dict[str, Any]:
    """Returns ``{dotted_key: value}`` for every field, sections first-level only."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            for g in dataclasses.fields(value):
                out[f"{f.name}.{g.name}"] = getattr(value, g.name)
        else:
            out[f.name] = value
    return out


def unflatten(values: dict[str, Any]) -> ToCoConfig:
    """Inverse of :func:`flatten`: starts from the preset named by ``values['preset']`` (default voc)."""
    values = dict(values)
    return build_config(values.pop("preset", "voc"), values)


def to_yaml(cfg: ToCoConfig) -> str:
    """Serialises as nested YAML (tuples become lists)."""
    nested: dict[str, Any] = {}
    for key, value in flatten(cfg).items():
        section, _, name = key.rpartition(".")
        target = nested.setdefault(section, {}) if section else nested
        target[name] = list(value) if isinstance(value, tuple) else value
    return yaml.safe_dump(nested, sort_keys=False)


def save_yaml(cfg: ToCoConfig, path: str | os.PathLike) -> Path:
    """Writes the config atomically (temp file + rename) and returns the path."""
    text = to_yaml(cfg)
    return atomic_write(path, lambda fh: fh.write(text.encode()))


class StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load`` with two changes: a number in exponent notation without a dot (``6e-5``, YAML 1.2) is a
    float, not the string YAML 1.1 makes of it, and a key given twice in one mapping is an error, not last-wins."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeLoader reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def yaml_load(text: str) -> Any:
    """Parses YAML text with :class:`StrictLoader` (safe: no Python objects are built)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader


def describe_yaml_error(err: yaml.YAMLError) -> str:
    """A YAML error on one line: the problem and where (``found duplicate key 'grid' at line 7, column 1``)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of a file the user named; :class:`ConfigError` naming it when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder; expected a YAML file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise ConfigError(f"{what} {path} cannot be read ({err.strerror or err})") from None


def load_yaml(path: str | os.PathLike) -> ToCoConfig:
    """Loads a nested YAML config written by :func:`save_yaml` (or by hand), checking every key."""
    path = Path(path)
    text = read_text(path, "config file")
    try:
        data = yaml_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {describe_yaml_error(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return unflatten(flatten_mapping(data))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def flatten_mapping(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"loss": {"w_ptc": 0.2}}`` → ``{"loss.w_ptc": 0.2}`` (one level of sections, as in the config)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and not prefix:
            out.update(flatten_mapping(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """Parses a command-line ``key=value``; the value is read as YAML (``0.3``, ``true``, ``[1, 0.5]``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. loss.w_ptc=0.3)")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _field_types() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(ToCoConfig):
        hint = typing.get_type_hints(ToCoConfig)[f.name]
        if dataclasses.is_dataclass(hint):
            for name, sub in typing.get_type_hints(hint).items():
                out[f"{f.name}.{name}"] = sub
        else:
            out[f.name] = hint
    return out


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return _coerce_tuple(key, value, typing.get_args(hint))
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, str):
            value = _number(value, int)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, str):  # "6e-5" from a source read as YAML 1.1 (an MLflow param, a JSON string)
            value = _number(value, float)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"config key {key!r} must be a finite number, got {value}")
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin in (typing.Union, types.UnionType):
        return value
    raise ConfigError(f"config key {key!r} expects {_type_name(hint)}, got {value!r} ({type(value).__name__})")


def _check_choice(key: str, value: Any) -> Any:
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"config key {key!r} expects one of {', '.join(CHOICES[key])}, got {value!r}")
    return value


def _number(text: str, kind: type) -> Any:
    try:
        return kind(text.strip())
    except ValueError:
        return text


def _coerce_tuple(key: str, value: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"config key {key!r} expects a list, got {value!r} ({type(value).__name__})")
    if len(args) == 2 and args[1] is Ellipsis:
        if not value:
            raise ConfigError(f"config key {key!r} expects a non-empty list")
        return tuple(_coerce(key, v, args[0]) for v in value)
    if len(value) != len(args):
        raise ConfigError(f"config key {key!r} expects a list of {len(args)} values, got {len(value)}")
    return tuple(_coerce(key, v, a) for v, a in zip(value, args))


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def _suggest(key: str, known: dict[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
