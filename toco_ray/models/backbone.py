"""The ViT backbone: any timm VisionTransformer, with weights from the hub, a local file, or random init.

Example:
    >>> from toco_ray.config import build_config
    >>> vit = build_backbone(build_config("synthetic").model)  # random init, no download
    >>> vit.patch_embed.patch_size
    (8, 8)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import timm
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from toco_ray.config import ModelConfig

# Keys of the ImageNet classifier: our backbone has no head (num_classes=0), so these are dropped silently.
_CLASSIFIER_PREFIXES = ("head.", "head_dist.", "fc_norm.")


def build_backbone(cfg: ModelConfig) -> VisionTransformer:
    """Creates the timm ViT of ``cfg.backbone`` with no classification head and dynamic input size.

    Hub weights are downloaded only here and only when ``cfg.pretrained`` is true and no ``pretrained_path`` is
    given. ``depth``/``embed_dim``/``num_heads``/``patch_size`` override the timm defaults when non-zero (tiny
    test models). ``dynamic_img_size=True`` makes timm resize the absolute position embedding (bicubic) to the
    token grid of every input.

    Raises:
        FileNotFoundError: ``cfg.pretrained_path`` is set but does not exist.
        ValueError: the backbone is not a VisionTransformer, or the weight file misses some backbone keys.
    """
    overrides = {
        name: getattr(cfg, name) for name in ("depth", "embed_dim", "num_heads", "patch_size") if getattr(cfg, name)
    }
    model = timm.create_model(
        cfg.backbone,
        pretrained=cfg.pretrained and not cfg.pretrained_path,
        num_classes=0,
        dynamic_img_size=True,
        **overrides,
    )
    if not isinstance(model, VisionTransformer):
        raise ValueError(
            f"model.backbone={cfg.backbone!r} builds a {type(model).__name__}; expected a timm VisionTransformer"
        )
    if cfg.pretrained_path:
        load_backbone_weights(model, cfg.pretrained_path)
    if cfg.freeze_pos_embed and model.pos_embed is not None:
        model.pos_embed.requires_grad_(False)
    return model


def load_backbone_weights(model: VisionTransformer, path: str | Path) -> None:
    """Loads a local weight file into ``model``, resizing ``pos_embed`` to the model's grid.

    Accepts a ``.pth``/``.pt`` state dict (possibly nested under ``"model"`` or ``"state_dict"``, ``module.``
    prefixes stripped), a ``.safetensors`` file, or an original JAX ``.npz`` (through timm's own loader).
    ImageNet classifier keys are ignored; any other unexpected key is reported as a warning.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: backbone parameters are missing from the file (all are listed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained_path={str(path)!r} does not exist (expected a weight file)")
    if path.suffix == ".npz":
        model.load_pretrained(str(path))  # timm resizes pos_embed to the model's grid itself
        return
    state_dict = timm.models.load_state_dict(str(path), use_ema=False)
    # Converts foreign layouts and resizes pos_embed (timm.layers.resample_abs_pos_embed, bicubic).
    state_dict = checkpoint_filter_fn(state_dict, model)
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # shape mismatches: name the file, keep torch's per-key detail
        raise ValueError(f"weight file {path} does not fit {type(model).__name__}: {err}") from None
    if result.missing_keys:
        raise ValueError(
            f"weight file {path} lacks {len(result.missing_keys)} parameter(s) of {type(model).__name__}: "
            f"{', '.join(result.missing_keys)}; is it a checkpoint of the configured model.backbone?"
        )
    if result.unexpected_keys:
        warnings.warn(
            f"weight file {path}: ignored {len(result.unexpected_keys)} key(s) the backbone does not have: "
            f"{', '.join(result.unexpected_keys)}",
            stacklevel=2,
        )
