"""Image-level classification loss (SPEC §6): multilabel soft margin on the GMP logits, main and auxiliary."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cls_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multilabel soft-margin loss.

    Args:
        logits: B×C classifier logits (foreground classes only).
        labels: B×C multi-hot image labels (any numeric dtype).

    Returns:
        Scalar ``mean_{b,c} −[y log σ(x) + (1−y) log σ(−x)]``.
    """
    if logits.shape != labels.shape:
        raise ValueError(f"cls_loss: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ")
    return F.multilabel_soft_margin_loss(logits, labels.to(logits.dtype))
