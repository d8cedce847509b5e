"""Over-smoothing diagnostic (paper Figure 2): how alike the patch tokens become block after block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


def mean_pairwise_cosine(tokens: torch.Tensor) -> float:
    """Mean of ``cos(F_i, F_j)`` over ``i≠j`` of ``tokens (B×D×h×w)``, averaged over the batch."""
    feats = F.normalize(tokens.flatten(2).float(), dim=1)  # B×D×N
    n = feats.shape[-1]
    if n < 2:
        raise ValueError(f"need at least 2 tokens for pairwise similarity, got a {tuple(tokens.shape[-2:])} grid")
    sim = feats.transpose(1, 2) @ feats  # B×N×N
    off_diagonal = sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(dim=-1)
    return float((off_diagonal / (n * (n - 1))).mean())
