"""Over-smoothing diagnostic (paper Figure 2): how alike the patch tokens become block after block.

The mean cosine over all token pairs is dominated by background–background pairs when objects are small, and
Patch Token Contrast pulls those together, so it can rise while PTC pushes classes apart. Beside it,
:func:`token_similarity_by_pair` reports the mean over pairs whose ground-truth classes differ: ``fg_bg`` (one
token foreground, the other background) and ``fg_fg`` (two foreground tokens of different classes). Token labels
come from the masks by the majority rule of :func:`token_labels`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from toco_ray.data.labels import IGNORE_INDEX
from toco_ray.models.padding import as_pair, token_grid

PAIR_KINDS = ("fg_bg", "fg_fg")  # cross-class pair types, beside "all" (every pair i≠j)
UNLABELLED = -1  # token label of a patch without a majority class: left out of every cross-class pair
MIN_PURITY = 0.5  # a token takes class k only when strictly more than this share of its patch's pixels are k


@torch.no_grad()
def token_similarity_per_block(model: nn.Module, images: torch.Tensor) -> list[float]:
    """Mean pairwise cosine similarity of the patch tokens at the output of every block.

    Args:
        model: a :class:`~toco_ray.models.ToCoNet` (anything whose ``encode(x, return_blocks=True)`` returns
            per-block token maps).
        images: B×3×H×W normalised images.

    Returns:
        One float per block: the similarity averaged over token pairs ``i≠j`` of an image, then over images.
    """
    blocks = model.encode(images, return_blocks=True).blocks
    return [mean_pairwise_cosine(tokens) for tokens in blocks]


@torch.no_grad()
def token_similarity_by_pair(
    model: nn.Module,
    images: torch.Tensor,
    masks: Sequence[torch.Tensor] | torch.Tensor | None,
    patch_size: int | tuple[int, int],
) -> dict[str, list[float]]:
    """Mean cosine similarity of patch tokens per block, over all pairs and over each cross-class pair type.

    Args:
        model: as for :func:`token_similarity_per_block`.
        images: B×3×H×W normalised images (the network input).
        masks: B ground-truth masks of class ids (0 background, 1..C, 255 void), each at any size (native
            resolution is fine: they are resized to ``H×W``); None when the images have none.
        patch_size: the backbone's patch size ``p``.

    Returns:
        ``{"all": [...], "fg_bg": [...], "fg_fg": [...]}``, one float per block. ``all`` is
        :func:`mean_pairwise_cosine`; the others are :func:`mean_cosine_of_pairs`, NaN at every block when
        the images hold no pair of that type (or ``masks`` is None).
    """
    blocks = model.encode(images, return_blocks=True).blocks
    curves = {"all": [mean_pairwise_cosine(tokens) for tokens in blocks]}
    labels = None if masks is None else token_labels(masks, tuple(images.shape[-2:]), patch_size).to(images.device)
    for kind in PAIR_KINDS:
        curves[kind] = [math.nan if labels is None else mean_cosine_of_pairs(t, labels, kind) for t in blocks]
    return curves


def mean_pairwise_cosine(tokens: torch.Tensor) -> float:
    """Mean of ``cos(F_i, F_j)`` over ``i≠j`` of ``tokens (B×D×h×w)``, averaged over the batch."""
    n = tokens.shape[-2] * tokens.shape[-1]
    if n < 2:
        raise ValueError(f"need at least 2 tokens for pairwise similarity, got a {tuple(tokens.shape[-2:])} grid")
    sim = _cosines(tokens)
    off_diagonal = sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(dim=-1)
    return float((off_diagonal / (n * (n - 1))).mean())


def mean_cosine_of_pairs(tokens: torch.Tensor, labels: torch.Tensor, kind: str) -> float:
    """Mean of ``cos(F_i, F_j)`` over the token pairs of type ``kind`` within an image, averaged over images.

    Args:
        tokens: B×D×h×w token maps.
        labels: B×h×w token classes (0 background, 1..C, :data:`UNLABELLED` left out), e.g. :func:`token_labels`.
        kind: ``"fg_bg"`` (one token in 1..C, the other 0) or ``"fg_fg"`` (both in 1..C, different classes).

    Returns:
        The mean over images that hold at least one such pair (each image weighs the same, as in
        :func:`mean_pairwise_cosine`); NaN when none does.
    """
    if labels.shape != (tokens.shape[0], *tokens.shape[-2:]):
        raise ValueError(f"token labels {tuple(labels.shape)} do not match the token maps {tuple(tokens.shape)}")
    sim = _cosines(tokens)
    pairs = _pairs_of_kind(labels.flatten(1).to(sim.device), kind)  # B×N×N
    counts = pairs.sum(dim=(1, 2))
    present = counts > 0
    if not present.any():
        return math.nan
    per_image = (sim * pairs).sum(dim=(1, 2))[present] / counts[present]
    return float(per_image.mean())


def token_labels(
    masks: Sequence[torch.Tensor] | torch.Tensor,
    image_size: tuple[int, int],
    patch_size: int | tuple[int, int],
    purity: float = MIN_PURITY,
) -> torch.Tensor:
    """Ground-truth class of every token: the class of strictly more than ``purity`` of its patch's pixels.

    Each mask is resized (nearest) to the network input ``image_size`` and padded with void at the bottom/right
    to the padded token grid, as the network pads the image. Token ``(i, j)`` then takes class ``k`` when more than
    ``purity`` of the ``p×p`` pixels of its patch are ``k``, void and padding counting against every class; a
    patch that is mostly void, or mixed with no class above ``purity``, is :data:`UNLABELLED`. With the default
    ``purity = 0.5`` the class is a strict majority, so it is unique and never a coin toss between two classes.

    Args:
        masks: B masks ``H_b×W_b`` of class ids (0 background, 1..C, 255 void), or one B×H×W tensor.
        image_size: ``(H, W)`` of the image the tokens were computed from (before padding).
        patch_size: the backbone's patch size ``p``.
        purity: share of a patch's pixels its class must exceed.

    Returns:
        B×h×w int64 labels on the grid ``h×w = ceil(H/p)×ceil(W/p)``.

    Example:
        >>> mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 255], [255, 255, 2, 2], [255, 0, 0, 3]])
        >>> token_labels([mask], (4, 4), 2).tolist()  # patches: 3/4 of 1, 3/4 of 0, 3/4 void, 2/4 of 2
        [[[1, 0], [-1, -1]]]
    """
    aligned = [_mask_on_token_grid(mask, image_size, patch_size) for mask in masks]
    return torch.stack([_patch_majority(mask, patch_size, purity) for mask in aligned])


def _mask_on_token_grid(mask: torch.Tensor, image_size: tuple[int, int], patch_size) -> torch.Tensor:
    # H_b×W_b → (h·p)×(w·p): nearest resize to the input size, then void where the network pads with zeros
    mask = mask.long().cpu()
    if tuple(mask.shape) != tuple(image_size):
        mask = F.interpolate(mask[None, None].float(), size=image_size, mode="nearest-exact")[0, 0].long()
    (h, w), (ph, pw) = token_grid(image_size, patch_size), as_pair(patch_size)
    return F.pad(mask, (0, w * pw - mask.shape[1], 0, h * ph - mask.shape[0]), value=IGNORE_INDEX)


def _patch_majority(mask: torch.Tensor, patch_size, purity: float) -> torch.Tensor:
    ph, pw = as_pair(patch_size)
    h, w = mask.shape[0] // ph, mask.shape[1] // pw
    patches = mask.reshape(h, ph, w, pw).permute(0, 2, 1, 3).reshape(h, w, ph * pw)
    mode = patches.mode(dim=-1).values  # a class above half the pixels is always the mode
    share = (patches == mode[..., None]).float().mean(dim=-1)
    labelled = (mode != IGNORE_INDEX) & (share > purity)
    return torch.where(labelled, mode, torch.full_like(mode, UNLABELLED))


def _cosines(tokens: torch.Tensor) -> torch.Tensor:
    feats = F.normalize(tokens.flatten(2).float(), dim=1)  # B×D×N
    return feats.transpose(1, 2) @ feats  # B×N×N


def _pairs_of_kind(labels: torch.Tensor, kind: str) -> torch.Tensor:
    # B×N labels → B×N×N mask of ordered pairs (i, j); one direction only, which leaves the mean unchanged
    fg, bg = labels > 0, labels == 0
    if kind == "fg_bg":
        return fg[:, :, None] & bg[:, None, :]
    if kind == "fg_fg":
        return fg[:, :, None] & fg[:, None, :] & (labels[:, :, None] != labels[:, None, :])
    raise ValueError(f"unknown pair kind {kind!r}; expected one of {PAIR_KINDS}")
