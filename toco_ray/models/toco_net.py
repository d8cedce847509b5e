"""ToCoNet: the ViT backbone with the main and auxiliary classifiers, the LargeFOV decoder and the CTC heads.

Example:
    >>> from toco_ray.config import build_config
    >>> model = ToCoNet(build_config("synthetic").model)
    >>> out = model(torch.randn(2, 3, 100, 84))  # sides need not be multiples of the patch size
    >>> out.logits.shape, out.patches.shape, out.seg_logits.shape  # patch 8 → grid ceil(100/8)×ceil(84/8)
    (torch.Size([2, 20]), torch.Size([2, 96, 13, 11]), torch.Size([2, 21, 13, 11]))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from toco_ray.config import ModelConfig
from toco_ray.models.backbone import build_backbone, embed_patches
from toco_ray.models.decoder import LargeFOV
from toco_ray.models.padding import pad_to_patch_multiple, tokens_to_pixels
from toco_ray.models.projection import ProjectionHead, ema_update, make_teacher


@dataclass
class Tokens:
    """Encoder outputs of one forward pass.

    Attributes:
        cls: B×D final class token (after the final norm).
        patches: B×D×h×w final patch tokens (after the final norm).
        aux: B×D×h×w raw output of block ``aux_layer`` (no norm), patch tokens only.
        image_size: ``(H, W)`` of the input before padding to the patch size.
        blocks: per-block raw patch tokens (each B×D×h×w) when requested, else None.
    """

    cls: torch.Tensor
    patches: torch.Tensor
    aux: torch.Tensor
    image_size: tuple[int, int]
    blocks: list[torch.Tensor] | None = None


@dataclass
class ToCoOutput:
    """Everything one training forward produces.

    Attributes:
        logits: B×C main classification logits.
        aux_logits: B×C auxiliary classification logits.
        cls: B×D final class token.
        patches: B×D×h×w final patch tokens.
        aux: B×D×h×w auxiliary (intermediate-block) patch tokens.
        seg_logits: B×(C+1)×h×w decoder logits at token stride, or None.
        image_size: ``(H, W)`` of the input before padding.
    """

    logits: torch.Tensor
    aux_logits: torch.Tensor
    cls: torch.Tensor
    patches: torch.Tensor
    aux: torch.Tensor
    seg_logits: torch.Tensor | None
    image_size: tuple[int, int]


class ToCoNet(nn.Module):
    """The ToCo network (SPEC §1).

    Attributes:
        backbone: timm VisionTransformer (no head).
        classifier, aux_classifier: ``nn.Conv2d(D, C, 1, bias=False)`` after global max pooling.
        decoder: :class:`LargeFOV` on the final patch tokens.
        proj_student, proj_teacher: CTC projection heads; the teacher follows the student by EMA only.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.backbone = build_backbone(cfg)
        if self.backbone.cls_token is None:
            raise ValueError(f"model.backbone={cfg.backbone!r} has no class token; ToCo's CTC needs one")
        self.aux_index = resolve_block_index(cfg.aux_layer, len(self.backbone.blocks))
        dim = self.backbone.embed_dim
        self.classifier = nn.Conv2d(dim, cfg.num_classes, 1, bias=False)
        self.aux_classifier = nn.Conv2d(dim, cfg.num_classes, 1, bias=False)
        self.decoder = LargeFOV(dim, cfg.num_classes + 1, cfg.decoder_channels, cfg.decoder_dilation)
        self.proj_student = ProjectionHead(dim, cfg.proj_hidden_dim, cfg.proj_bottleneck_dim, cfg.proj_out_dim)
        self.proj_teacher = make_teacher(self.proj_student)

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.backbone.patch_embed.patch_size)

    def encode(self, images: torch.Tensor, return_blocks: bool = False) -> Tokens:
        """One pass through the ViT, collecting the final tokens and the raw output of block ``aux_layer``.

        Args:
            images: B×3×H×W normalised images; zero-padded at the bottom/right to a multiple of the patch size.
            return_blocks: also return every block's raw patch tokens (over-smoothing diagnostic).

        Returns:
            :class:`Tokens` on the grid ``h×w = ceil(H/p)×ceil(W/p)``.
        """
        vit = self.backbone
        image_size = (images.shape[-2], images.shape[-1])
        x = pad_to_patch_multiple(images, self.patch_size)
        grid = (x.shape[-2] // self.patch_size[0], x.shape[-1] // self.patch_size[1])
        x = vit.norm_pre(vit.patch_drop(embed_patches(vit, x)))
        aux, blocks = None, []
        for index, block in enumerate(vit.blocks):
            if vit.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if index == self.aux_index:
                aux = x
            if return_blocks:
                blocks.append(self._patch_map(x, grid))
        x = vit.norm(x)
        return Tokens(
            cls=x[:, 0],
            patches=self._patch_map(x, grid),
            aux=self._patch_map(aux, grid),
            image_size=image_size,
            blocks=blocks if return_blocks else None,
        )

    def _patch_map(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        # B×(prefix+N)×D sequence → B×D×h×w map of the patch tokens (class/register tokens dropped).
        patches = x[:, self.backbone.num_prefix_tokens :]
        return patches.transpose(1, 2).reshape(x.shape[0], x.shape[-1], *grid)

    def classify(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
        """Global max pooling of the token maps, then the 1×1 classifiers: ``(logits B×C, aux_logits B×C)``."""
        return _gmp_logits(tokens.patches, self.classifier), _gmp_logits(tokens.aux, self.aux_classifier)

    def forward(self, images: torch.Tensor, with_seg: bool = True) -> ToCoOutput:
        """Encodes ``images (B×3×H×W)`` once and applies the classifiers and (optionally) the decoder."""
        tokens = self.encode(images)
        logits, aux_logits = self.classify(tokens)
        return ToCoOutput(
            logits=logits,
            aux_logits=aux_logits,
            cls=tokens.cls,
            patches=tokens.patches,
            aux=tokens.aux,
            seg_logits=self.decoder(tokens.patches) if with_seg else None,
            image_size=tokens.image_size,
        )

    @torch.no_grad()
    def cam_maps(self, tokens: Tokens | ToCoOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Class activation maps at token stride, detached: ``(cam B×C×h×w, aux_cam B×C×h×w)``."""
        cam = F.conv2d(tokens.patches.detach(), self.classifier.weight)
        aux_cam = F.conv2d(tokens.aux.detach(), self.aux_classifier.weight)
        return cam, aux_cam

    def to_pixels(
        self, maps: torch.Tensor, image_size: tuple[int, int], out_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Token-stride ``maps (B×K×h×w)`` → ``B×K×H×W`` (upsample to the padded size, crop the padding)."""
        return tokens_to_pixels(maps, image_size, self.patch_size, out_size)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by learning-rate group: ``"backbone"`` and ``"head"`` (10× lr).

        Frozen parameters (``pos_embed`` when frozen, the fixed weight-norm gain) and the teacher head are left
        out.
        """
        heads = (self.classifier, self.aux_classifier, self.decoder, self.proj_student)
        return {
            "backbone": [p for p in self.backbone.parameters() if p.requires_grad],
            "head": [p for m in heads for p in m.parameters() if p.requires_grad],
        }

    def ema_update(self, momentum: float) -> None:
        """Moves the teacher head towards the student: ``θ_t ← ρ·θ_t + (1−ρ)·θ_s``."""
        ema_update(self.proj_teacher, self.proj_student, momentum)


def resolve_block_index(index: int, depth: int) -> int:
    """``model.aux_layer`` (negative allowed) → block index in ``[0, depth)``."""
    if not -depth <= index < depth:
        raise ValueError(f"model.aux_layer={index} is outside the backbone's {depth} blocks ([{-depth}, {depth}))")
    return index % depth


def _gmp_logits(tokens: torch.Tensor, classifier: nn.Conv2d) -> torch.Tensor:
    pooled = F.adaptive_max_pool2d(tokens, 1)  # B×D×1×1
    return classifier(pooled).flatten(1)
