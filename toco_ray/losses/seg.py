"""Segmentation loss L_seg (SPEC §5): background and foreground pixels weighted equally.

    L_seg = ½·CE(logits, labels with every foreground class set to ignore)
          + ½·CE(logits, labels with background set to ignore)

A term with no valid pixel is 0 rather than PyTorch's NaN (mean over zero pixels), so an image whose pseudo
label is all background, all foreground or all ignored trains normally.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def seg_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Balanced background/foreground cross-entropy.

    Args:
        logits: B×(C+1)×H×W segmentation logits (channel 0 = background) at the label size.
        labels: B×H×W pseudo labels in 0..C or ``ignore_index``.
        ignore_index: label excluded from both terms.

    Returns:
        Scalar loss; 0 (with a zero gradient) when no pixel is labelled.
    """
    labels = labels.long()
    foreground = (labels != 0) & (labels != ignore_index)
    background_only = labels.masked_fill(foreground, ignore_index)
    foreground_only = labels.masked_fill(labels == 0, ignore_index)
    background_term = _mean_ce(logits, background_only, ignore_index)
    foreground_term = _mean_ce(logits, foreground_only, ignore_index)
    return 0.5 * background_term + 0.5 * foreground_term


def _mean_ce(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    per_pixel = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")  # 0 at ignored
    return per_pixel.sum() / (labels != ignore_index).sum().clamp(min=1)
