"""The ViT backbone: any timm VisionTransformer, with weights from the hub, a local file, or random init.

Example:
    >>> from toco_ray.config import build_config
    >>> vit = build_backbone(build_config("synthetic").model)  # random init, no download
    >>> vit.patch_embed.patch_size
    (8, 8)
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models import split_model_name_tag
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from toco_ray.config import ConfigError, ModelConfig

# Keys of the ImageNet classifier: our backbone has no head (num_classes=0), so these are dropped silently.
_CLASSIFIER_PREFIXES = ("head.", "head_dist.", "fc_norm.")


def build_backbone(cfg: ModelConfig) -> VisionTransformer:
    """Creates the timm ViT of ``cfg.backbone`` with no classification head and dynamic input size.

    Hub weights are downloaded only here and only when ``cfg.pretrained`` is true and no ``pretrained_path`` is
    given. ``depth``/``embed_dim``/``num_heads``/``patch_size`` override the timm defaults when non-zero (tiny
    test models). ``dynamic_img_size=True`` lets any input size through; :func:`embed_patches` resizes the position
    embedding to each input's token grid. Where the weights came from is kept in ``model.toco_weights``
    (see :func:`weights_tags`).

    Raises:
        ConfigError: ``cfg.backbone`` is not a timm model or names a pretrained tag timm does not have.
        FileNotFoundError: ``cfg.pretrained_path`` is set but does not exist.
        ValueError: the backbone is not a VisionTransformer, or the weight file misses some backbone keys.
    """
    check_backbone_name(cfg.backbone)
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
    model.toco_weights = _weights_origin(cfg, model)
    return model


def check_backbone_name(name: str) -> None:
    """``model.backbone`` must be a timm model, and its pretrained tag (``name.tag``) one timm knows.

    Raises:
        ConfigError: naming the key and, for a bad tag, the tags timm has for the architecture.
    """
    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        raise ConfigError(f"config key 'model.backbone' is {name!r}: timm has no model {arch!r}")
    if tag and name not in timm.list_pretrained(arch + ".*"):
        known = ", ".join(n.partition(".")[2] for n in timm.list_pretrained(arch + ".*")) or "none"
        raise ConfigError(
            f"config key 'model.backbone' is {name!r}: timm has no tag {tag!r} for {arch} (tags: {known})"
        )


def embed_patches(vit: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Patch embedding, prefix tokens and the absolute position embedding resized to the token grid.

    The embedding is resized with plain bicubic interpolation (``align_corners=False``, no antialiasing), as the
    reference does (SPEC §1); timm's own dynamic-size path antialiases, a different kernel (7–8 % apart at 28²,
    far more at the 6² of local crops).

    Args:
        vit: a timm VisionTransformer built with ``dynamic_img_size=True``.
        images: B×3×H×W with H, W multiples of the patch size.

    Returns:
        B×(prefix + h·w)×D tokens, ready for ``vit.patch_drop`` and the blocks.
    """
    x = vit.patch_embed(images)  # B×h×w×D
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)
    prefix = [t.expand(b, -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
    if vit.pos_embed is None:
        return torch.cat([*prefix, x], dim=1)
    pos = resize_pos_embed(vit, (h, w))
    # no_embed_class: the embedding covers the patches only (add, then prepend the prefix tokens); otherwise it
    # has an entry for the class token (prepend, then add)
    x = torch.cat([*prefix, x + pos], dim=1) if vit.no_embed_class else torch.cat([*prefix, x], dim=1) + pos
    return vit.pos_drop(x)


def resize_pos_embed(vit: VisionTransformer, grid: tuple[int, int]) -> torch.Tensor:
    """``vit.pos_embed`` (1×(prefix + H₀·W₀)×D) bicubically resized to ``grid``, prefix entries kept."""
    return resample_abs_pos_embed(
        vit.pos_embed,
        new_size=list(grid),
        old_size=list(vit.patch_embed.grid_size),
        num_prefix_tokens=0 if vit.no_embed_class else vit.num_prefix_tokens,
        interpolation="bicubic",
        antialias=False,
    )


def weights_tags(model: VisionTransformer) -> dict[str, str]:
    """What the backbone's weights are: the resolved timm name with its pretrained tag, the source, the weight
    file and its SHA-256 (``unknown`` when the hub cache cannot be located). Hashes the file: call once, on rank 0.
    """
    origin = dict(getattr(model, "toco_weights", {}))
    path = origin.pop("file", None)
    origin["weights.file"] = str(path) if path else "none"
    origin["weights.sha256"] = _sha256(path) if path else "none"
    return origin


def _weights_origin(cfg: ModelConfig, model: VisionTransformer) -> dict[str, Any]:
    pretrained = model.pretrained_cfg or {}
    name = f"{pretrained.get('architecture', cfg.backbone)}.{pretrained.get('tag', '')}".rstrip(".")
    if cfg.pretrained_path:
        return {"weights.timm_name": name, "weights.source": "file", "file": Path(cfg.pretrained_path).resolve()}
    if not cfg.pretrained:
        return {"weights.timm_name": cfg.backbone, "weights.source": "random init"}
    return {"weights.timm_name": name, "weights.source": "timm hub", "file": _cached_hub_file(pretrained)}


def _cached_hub_file(pretrained: dict[str, Any]) -> Path | None:
    # Where timm's download landed: the Hugging Face cache for hub ids, torch.hub's for plain URLs.
    from huggingface_hub import try_to_load_from_cache

    repo = pretrained.get("hf_hub_id")
    names = [pretrained["hf_hub_filename"]] if pretrained.get("hf_hub_filename") else []
    for filename in [*names, "model.safetensors", "pytorch_model.bin"]:
        found = try_to_load_from_cache(repo, filename) if repo else None
        if isinstance(found, str):
            return Path(found)
    url = pretrained.get("url")
    if url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        return candidate if candidate.is_file() else None
    return None


def _sha256(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        return "unknown"
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
