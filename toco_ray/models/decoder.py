"""LargeFOV segmentation decoder (DeepLab-v1 head) on the final patch tokens (paper §4.4, ref)."""

from __future__ import annotations

import torch
from torch import nn


class LargeFOV(nn.Module):
    """3×3 conv (dilated) + ReLU, 3×3 conv (dilated) + ReLU, 1×1 conv to ``num_classes + 1`` channels.

    Padding equals the dilation, so the output keeps the token grid: ``tokens (B×D×h×w) → logits (B×(C+1)×h×w)``.
    As in the reference, no conv has a bias and the weights keep PyTorch's default init (the reference defines a
    Kaiming init but never calls it).

    Args:
        in_channels: token width D.
        num_classes: output channels, background included (C + 1).
        channels: width of the two dilated convs (512 in the paper).
        dilation: dilation of the 3×3 convs (5 in the paper).
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int, dilation: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1, bias=False),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.layers(tokens)
