"""Pixel-adaptive refinement (PAR) and the segmentation pseudo labels built with it (SPEC §5).

PAR propagates class probabilities between pixels of similar colour: each pixel takes a weighted mean of its 48
neighbours (the 8-neighbourhood at each dilation), the weights being a softmax of colour affinities plus a small
softmax of positional affinities. Because the weights of a pixel sum to ``1 + pos_weight``, every iteration
scales the masks by that factor; argmax-based consumers are unaffected (as in the reference).

Example:
    >>> par = build_par(build_config("voc").par)
    >>> refined = par(images01, probs)  # B×3×H×W in [0, 1], B×K×h×w → B×K×H×W
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from toco_ray.cam import inside_box
from toco_ray.config import PARConfig

# Offsets of the 8-neighbourhood, in the order of the reference kernel; diagonals are 0, 2, 5, 7.
_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
# Guards the divisions by a standard deviation against flat images (ref).
_STD_EPS = 1e-8


class PAR(nn.Module):
    """Pixel-adaptive refinement.

    Args:
        dilations: dilations of the 8-neighbourhood (ref: 1, 2, 4, 8, 12, 24 → 48 neighbours).
        num_iter: propagation iterations (ref: 10).
        temperature: affinity temperature of both colour and position terms (ref: 0.3).
        pos_weight: weight of the positional softmax (ref: 0.01).
    """

    def __init__(self, dilations: Sequence[int], num_iter: int, temperature: float, pos_weight: float):
        super().__init__()
        self.dilations = tuple(int(d) for d in dilations)
        self.num_iter = num_iter
        self.temperature = temperature
        self.pos_weight = pos_weight
        distance = [d * (math.sqrt(2.0) if dy and dx else 1.0) for d in self.dilations for dy, dx in _OFFSETS]
        self.register_buffer("distance", torch.tensor(distance), persistent=False)

    def neighbours(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B×K×H×W)`` → ``B×K×N×H×W``, the N = 8·len(dilations) neighbours with replicate padding."""
        h, w = x.shape[-2], x.shape[-1]
        out = []
        for d in self.dilations:
            padded = F.pad(x, (d, d, d, d), mode="replicate")
            for dy, dx in _OFFSETS:
                out.append(padded[..., d + dy * d : d + dy * d + h, d + dx * d : d + dx * d + w])
        return torch.stack(out, dim=2)

    def affinity(self, images: torch.Tensor) -> torch.Tensor:
        """Propagation weights ``A (B×N×H×W)`` of ``images (B×3×H×W)``; ``Σ_n A_n = 1 + pos_weight``.

        ``a = mean_rgb(−(|I_n − I| / (std_n(I_n) + 1e-8) / T)²)`` with the unbiased std over the N neighbours,
        ``p = −(d_n / (std(d) + 1e-8) / T)²`` with d the dilation (×√2 on diagonals),
        ``A = softmax_n(a) + pos_weight·softmax_n(p)``.
        """
        nbrs = self.neighbours(images)  # B×3×N×H×W
        diff = (nbrs - images.unsqueeze(2)).abs()
        std = nbrs.std(dim=2, keepdim=True)
        colour = -((diff / (std + _STD_EPS) / self.temperature) ** 2).mean(dim=1)  # B×N×H×W
        distance = self.distance.to(images.dtype)
        position = -((distance / (distance.std() + _STD_EPS) / self.temperature) ** 2)  # N
        return colour.softmax(dim=1) + self.pos_weight * position.softmax(dim=0)[None, :, None, None]

    def propagate(self, masks: torch.Tensor, affinity: torch.Tensor) -> torch.Tensor:
        """``num_iter`` times ``mask ← Σ_n A_n · mask_n`` for ``masks (B×K×H×W)``, ``affinity (B×N×H×W)``."""
        weights = affinity.unsqueeze(1)
        for _ in range(self.num_iter):
            masks = (self.neighbours(masks) * weights).sum(dim=2)
        return masks

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Refines ``masks (B×K×h×w)`` on ``images (B×3×H×W, [0, 1])``; returns B×K×H×W.

        The masks are first upsampled to the image size (bilinear, ``align_corners=True``).
        """
        masks = F.interpolate(masks, size=images.shape[-2:], mode="bilinear", align_corners=True)
        return self.propagate(masks, self.affinity(images))


def build_par(cfg: PARConfig) -> PAR:
    """PAR with the configured dilations, iterations, temperature and positional weight."""
    return PAR(cfg.dilations, cfg.num_iter, cfg.temperature, cfg.pos_weight)


@torch.no_grad()
def seg_pseudo_labels(
    par: PAR,
    images01: torch.Tensor,
    cam: torch.Tensor,
    cls_labels: torch.Tensor,
    valid_box: torch.Tensor,
    bkg_high: float,
    bkg_low: float,
    scale: float = 0.5,
    ignore_index: int = 255,
) -> torch.Tensor:
    """PAR-refined segmentation pseudo labels from a CAM (SPEC §5).

    Two passes, with a constant background score ``bkg_high`` and then ``bkg_low`` prepended to the CAM. For each:
    keep background + present classes, downsample image and scores to ``scale`` (bilinear,
    ``align_corners=False``), softmax over the kept channels, PAR, upsample to ``H×W``, argmax mapped back to
    class ids (0 background, 1..C). Final label: the high pass's class where it is foreground, 0 where both
    passes say background, ``ignore_index`` elsewhere and outside the valid box.

    Args:
        par: the :class:`PAR` module.
        images01: B×3×H×W images in [0, 1].
        cam: B×C×H×W CAM in [0, 1].
        cls_labels: B×C multi-hot labels.
        valid_box: B×4 ``[y0, y1, x0, x1]`` half-open pixel box of the real image.
        bkg_high, bkg_low: background scores of the two passes (0.7 and 0.25).
        scale: resolution at which PAR runs (0.5).

    Returns:
        B×H×W long labels.
    """
    b, _, h, w = images01.shape
    small_size = (max(1, int(h * scale)), max(1, int(w * scale)))
    small_images = F.interpolate(images01, size=small_size, mode="bilinear", align_corners=False)
    present = torch.cat([cls_labels.new_ones(b, 1), cls_labels], dim=1) > 0
    high_labels, low_labels = [], []
    for i in range(b):
        keep = present[i].nonzero()[:, 0]  # kept channel ids, 0 = background
        probs = [_kept_probs(cam[i : i + 1], bkg, keep, small_size) for bkg in (bkg_high, bkg_low)]
        # Channels propagate independently, so both passes share one affinity computation.
        refined = par(small_images[i : i + 1], torch.cat(probs, dim=1))
        refined = F.interpolate(refined, size=(h, w), mode="bilinear", align_corners=False)
        high, low = refined.split(keep.numel(), dim=1)
        high_labels.append(keep[high.argmax(dim=1)])
        low_labels.append(keep[low.argmax(dim=1)])
    high, low = torch.cat(high_labels), torch.cat(low_labels)
    labels = torch.where(high > 0, high, torch.full_like(high, ignore_index))
    labels[(high == 0) & (low == 0)] = 0
    labels[~inside_box(valid_box.to(labels.device), (h, w))] = ignore_index
    return labels


def _kept_probs(cam: torch.Tensor, bkg_score: float, keep: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # 1×C×H×W CAM → 1×K×h×w softmax over [background, present classes] at the PAR resolution.
    scores = torch.cat([torch.full_like(cam[:, :1], bkg_score), cam], dim=1)[:, keep]
    scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
    return scores.softmax(dim=1)
