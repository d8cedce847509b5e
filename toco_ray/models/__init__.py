"""The ToCo network: timm ViT backbone, classifiers, LargeFOV decoder, CTC projection heads with EMA teacher."""

from toco_ray.config import ModelConfig
from toco_ray.models.backbone import (
    build_backbone,
    check_backbone_name,
    embed_patches,
    load_backbone_weights,
    resize_pos_embed,
    weights_tags,
)
from toco_ray.models.decoder import LargeFOV
from toco_ray.models.diagnostics import (
    PAIR_KINDS,
    mean_cosine_of_pairs,
    mean_pairwise_cosine,
    token_labels,
    token_similarity_by_pair,
    token_similarity_per_block,
)
from toco_ray.models.padding import pad_to_patch_multiple, token_grid, tokens_to_pixels
from toco_ray.models.projection import ProjectionHead, ema_update, make_teacher
from toco_ray.models.toco_net import ToCoNet, ToCoOutput, Tokens, resolve_block_index


def build_model(cfg: ModelConfig) -> ToCoNet:
    """Builds the ToCo network for ``cfg`` (hub weights are fetched only if ``cfg.pretrained`` asks for them)."""
    return ToCoNet(cfg)


__all__ = [
    "PAIR_KINDS",
    "LargeFOV",
    "ProjectionHead",
    "ToCoNet",
    "ToCoOutput",
    "Tokens",
    "build_backbone",
    "build_model",
    "check_backbone_name",
    "embed_patches",
    "ema_update",
    "load_backbone_weights",
    "make_teacher",
    "mean_cosine_of_pairs",
    "mean_pairwise_cosine",
    "pad_to_patch_multiple",
    "resize_pos_embed",
    "resolve_block_index",
    "token_grid",
    "token_labels",
    "token_similarity_by_pair",
    "token_similarity_per_block",
    "tokens_to_pixels",
    "weights_tags",
]
