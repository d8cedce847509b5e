"""Local crops for Class Token Contrast (SPEC §4).

Crop centres are drawn uniformly among pixels whose ROI value is ≤ 1 (background or uncertain), inside a margin
of ``crop_size // 2``; a crop whose mean ROI is ≤ ``neg_thre`` (almost pure confident background) is a
negative for CTC, any other crop a positive. ROI values: 0 background, 1 uncertain, 2 foreground.
"""

from __future__ import annotations

import torch


def sample_local_crops(
    local_view: torch.Tensor,
    roi: torch.Tensor,
    n_crops: int,
    crop_size: int,
    neg_thre: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cuts ``n_crops`` square crops per image and flags each as positive or negative.

    With m = crop_size // 2, candidate positions (h0, w0) index the inner region ``roi[m:H−m, m:W−m]``; the
    crop is rows h0..h0+crop_size, columns w0..w0+crop_size of the full image, centred on pixel (h0+m, w0+m).
    Candidates are the inner pixels with ROI ≤ 1, or every inner position when there are fewer than
    ``n_crops`` of those; ``n_crops`` of them are picked without replacement (``torch.randperm``).

    Args:
        local_view: B×3×H×W local view, geometrically aligned with ``roi``.
        roi: B×H×W ROI map with values 0/1/2.
        n_crops: crops per image (``ctc.n_local_crops``).
        crop_size: crop side in pixels (``ctc.local_crop_size``).
        neg_thre: a crop with mean ROI ≤ this is negative (``ctc.neg_thre``).
        generator: random source of the picks; its device is where the permutation is drawn.

    Returns:
        ``crops`` (n_crops·B)×3×s×s, crop-major (crop 0 of every image, then crop 1, …), and ``positive``
        B×n_crops bool.
    """
    b, _, h, w = local_view.shape
    if roi.shape != (b, h, w):
        raise ValueError(f"local crops: roi {tuple(roi.shape)} does not match the local view's B×H×W {(b, h, w)}")
    margin = crop_size // 2
    inner_h, inner_w = h - 2 * margin, w - 2 * margin
    if h < crop_size or w < crop_size or inner_h * inner_w < n_crops:
        raise ValueError(
            f"local crops: a {h}×{w} view cannot hold {n_crops} crops of ctc.local_crop_size={crop_size} "
            f"({max(inner_h, 0)}×{max(inner_w, 0)} inner positions); use a smaller crop or a larger view"
        )
    tops_lefts = torch.stack([_pick_positions(r, margin, n_crops, generator) for r in roi])  # B×n×2
    rows = tops_lefts[..., 0, None] + torch.arange(crop_size, device=roi.device)  # B×n×s
    cols = tops_lefts[..., 1, None] + torch.arange(crop_size, device=roi.device)
    batch = torch.arange(b, device=roi.device).view(b, 1, 1, 1)
    rows, cols = rows.unsqueeze(3), cols.unsqueeze(2)  # B×n×s×1, B×n×1×s
    windows = local_view[batch, :, rows, cols]  # B×n×s×s×3 (advanced indices first)
    crops = windows.permute(1, 0, 4, 2, 3).reshape(n_crops * b, -1, crop_size, crop_size)
    # Float64 mean: k/s² rounds to the same double as the decimal threshold when they are equal (0.2 = 0.2).
    roi_mean = roi[batch, rows, cols].double().sum(dim=(2, 3)) / (crop_size * crop_size)
    return crops, roi_mean > neg_thre


def _pick_positions(roi: torch.Tensor, margin: int, n_crops: int, generator: torch.Generator) -> torch.Tensor:
    """Top-left corners (n_crops×2, long) of the crops of one image (roi H×W)."""
    h, w = roi.shape
    inner = roi[margin : h - margin, margin : w - margin]
    candidates = (inner <= 1).nonzero()
    if candidates.shape[0] < n_crops:
        candidates = torch.ones_like(inner, dtype=torch.bool).nonzero()
    order = torch.randperm(candidates.shape[0], generator=generator, device=generator.device)
    return candidates[order[:n_crops].to(candidates.device)]
