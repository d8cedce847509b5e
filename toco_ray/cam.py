"""Class activation maps and the labels ToCo derives from them (SPEC §2–§4, §8).

* :func:`multiscale_cam`: multi-scale, flip-augmented CAM and aux CAM, normalised to [0, 1] per image and class.
* :func:`cam_to_token_labels`: PTC pseudo labels on the token grid (foreground / background / ignore).
* :func:`cam_to_roi`: CTC region map (0 background, 1 uncertain, 2 foreground) at pixel resolution.
* :func:`cam_to_label`: CAM → segmentation with a constant background score (CAM mIoU in evaluation).

Everything here runs without gradients.

Example:
    >>> cam, aux_cam = multiscale_cam(model, images, scales=(1.0, 0.5, 1.5))
    >>> token_labels = cam_to_token_labels(aux_cam, labels, valid_box, grid=(28, 28), high=0.7, low=0.25)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from toco_ray.models.padding import as_pair

# Keeps the max-normalisation finite for an all-zero map (ref).
CAM_NORM_EPS = 1e-5


@torch.no_grad()
def multiscale_cam(
    model: nn.Module,
    images: torch.Tensor,
    scales: Sequence[float],
    base: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-scale + flip CAM and aux CAM (SPEC §2).

    For each scale the images are resized (bilinear, ``align_corners=False``; size ``int(s·H)×int(s·W)``), both
    the image and its horizontal flip are encoded, the token-stride CAMs are brought to ``H×W`` (padding cropped,
    see :func:`~toco_ray.models.tokens_to_pixels`), the flipped CAM is flipped back, and
    ``relu(max(cam, unflipped))`` is summed over scales. Each map is then shifted to a zero minimum and divided by
    its maximum + 1e-5.

    Args:
        model: a :class:`~toco_ray.models.ToCoNet` (``encode``, ``cam_maps``, ``to_pixels``).
        images: B×3×H×W normalised images.
        scales: image scales; 1.0 must be among them when ``base`` is given.
        base: ``(cam, aux_cam)``, each B×C×h×w at token stride, of the unflipped images at scale 1.0, e.g. from
            ``model.cam_maps(out)`` of the training forward; the images are then not encoded again for them.
            The scale-1.0 halves are always encoded separately (unflipped, then flipped), so the result with
            ``base`` is identical to the result without it.

    Returns:
        ``(cam, aux_cam)``, each B×C×H×W float32 in [0, 1].
    """
    if base is not None and 1.0 not in scales:
        raise ValueError(f"multiscale_cam: base CAMs are for scale 1.0, which is not in scales={tuple(scales)}")
    size = (images.shape[-2], images.shape[-1])
    total_cam = total_aux = None
    for scale in scales:
        scaled_size = (max(1, int(scale * size[0])), max(1, int(scale * size[1])))
        if scale == 1.0:
            cam, aux_cam = _scale_one_cams(model, images, base)
        else:
            scaled = F.interpolate(images, size=scaled_size, mode="bilinear", align_corners=False)
            cam, aux_cam = model.cam_maps(model.encode(torch.cat([scaled, scaled.flip(-1)])))
        # float32: under bf16 autocast the sums and the normalisation would lose precision
        cam = _merge_flips(model.to_pixels(cam.float(), scaled_size, size))
        aux_cam = _merge_flips(model.to_pixels(aux_cam.float(), scaled_size, size))
        total_cam = cam if total_cam is None else total_cam + cam
        total_aux = aux_cam if total_aux is None else total_aux + aux_cam
    return normalize_cam(total_cam), normalize_cam(total_aux)


def _scale_one_cams(
    model: nn.Module, images: torch.Tensor, base: tuple[torch.Tensor, torch.Tensor] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    # 2B×C×h×w token-stride CAMs of [images, flipped images]; the unflipped half comes from `base` when given.
    if base is None:
        base = model.cam_maps(model.encode(images))
    flipped = model.cam_maps(model.encode(images.flip(-1)))
    for given, computed in zip(base, flipped):
        if given.shape != computed.shape:
            raise ValueError(
                f"multiscale_cam: base CAM has shape {tuple(given.shape)}, expected {tuple(computed.shape)} "
                "(token-stride CAM of the unflipped images at scale 1.0)"
            )
    return (torch.cat([base[0].detach(), flipped[0]]), torch.cat([base[1].detach(), flipped[1]]))


def _merge_flips(cams: torch.Tensor) -> torch.Tensor:
    # 2B×C×H×W [plain, flipped] → B×C×H×W relu(max(plain, flipped flipped back)).
    plain, flipped = cams.chunk(2)
    return F.relu(torch.maximum(plain, flipped.flip(-1)))


def normalize_cam(cam: torch.Tensor) -> torch.Tensor:
    """Per image and class: ``(cam − min) / (max(cam − min) + 1e-5)`` over the spatial dims of ``B×C×H×W``."""
    cam = cam - cam.amin(dim=(-2, -1), keepdim=True)
    return cam / (cam.amax(dim=(-2, -1), keepdim=True) + CAM_NORM_EPS)


def masked_max(cam: torch.Tensor, cls_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``v`` = max over present classes of ``cam (B×C×H×W)`` and its class index (0-based): two B×H×W tensors.

    Absent classes are zeroed (CAMs are non-negative), so an image with no present class has ``v = 0``.
    """
    masked = cam * cls_labels.to(cam.dtype)[:, :, None, None]
    return masked.max(dim=1)


@torch.no_grad()
def cam_to_token_labels(
    aux_cam: torch.Tensor,
    cls_labels: torch.Tensor,
    valid_box: torch.Tensor,
    grid: tuple[int, int],
    high: float,
    low: float,
    ignore_index: int = 255,
    patch_size: int | tuple[int, int] | None = None,
    scale_box: bool = True,
) -> torch.Tensor:
    """PTC pseudo labels on the token grid (SPEC §3).

    The label-masked CAM is resized bilinearly (``align_corners=False``) to ``grid``; per token
    ``v`` = max over present classes: label = class index + 1 if ``v > high``, 0 if ``v ≤ low``, ``ignore_index``
    otherwise. Tokens outside the valid box are ``ignore_index``.

    Box on the token grid: the grid covers ``s·h × s·w`` pixels with stride ``s = patch_size`` (the image was
    padded at the bottom/right) or, without ``patch_size``, ``s = H/h`` (the grid covers exactly ``H×W``). A token
    is valid only if its whole cell lies inside the box: rows ``ceil(y0/s) .. floor(y1/s) − 1`` (same for
    columns), so tokens partly made of padding get no label. E.g. box rows [4, 28) at stride 8 → token rows 1, 2.

    Args:
        aux_cam: B×C×H×W multi-scale aux CAM in [0, 1].
        cls_labels: B×C image-level multi-hot labels.
        valid_box: B×4 int ``[y0, y1, x0, x1]`` half-open pixel bounds of the real image region.
        grid: ``(h, w)`` token grid.
        high, low: β_h and β_l.
        patch_size: token stride when ``H×W`` is not a multiple of it (the CAM is zero-padded to the grid).
        scale_box: False applies the pixel box to the token grid as it is, the reference's bug
            (``compat.ptc_box_unscaled``): a box starting below row ``h`` labels no token at all, one ending
            beyond it keeps every row.

    Returns:
        B×h×w long labels in {0, 1..C, ignore_index}.
    """
    size = (aux_cam.shape[-2], aux_cam.shape[-1])
    covered = size
    masked = aux_cam * cls_labels.to(aux_cam.dtype)[:, :, None, None]
    if patch_size is not None:
        ph, pw = as_pair(patch_size)
        covered = (grid[0] * ph, grid[1] * pw)
        masked = F.pad(masked, (0, covered[1] - size[1], 0, covered[0] - size[0]))
    resized = F.interpolate(masked, size=grid, mode="bilinear", align_corners=False)
    value, index = resized.max(dim=1)
    labels = index + 1
    labels[value <= high] = ignore_index
    labels[value <= low] = 0
    token_box = valid_box.to(labels.device)
    if scale_box:
        token_box = box_to_grid(token_box, covered, grid)
    labels[~inside_box(token_box, grid)] = ignore_index
    return labels


def box_to_grid(valid_box: torch.Tensor, size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """Pixel box (B×4 ``[y0, y1, x0, x1]`` on ``size``) → token box of the cells fully inside it (B×4 long).

    ``start = ceil(y0·h/H)``, ``end = floor(y1·h/H)`` in exact integer arithmetic.
    """
    box = valid_box.to(torch.long)
    h_pix, w_pix = size
    h, w = grid
    y0 = (box[:, 0] * h + h_pix - 1) // h_pix
    y1 = (box[:, 1] * h) // h_pix
    x0 = (box[:, 2] * w + w_pix - 1) // w_pix
    x1 = (box[:, 3] * w) // w_pix
    return torch.stack([y0, y1, x0, x1], dim=1)


def inside_box(box: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B×H×W bool mask, true inside each half-open box ``[y0, y1, x0, x1]`` of ``box (B×4)``."""
    ys = torch.arange(size[0], device=box.device)[None, :, None]
    xs = torch.arange(size[1], device=box.device)[None, None, :]
    y0, y1, x0, x1 = (box[:, i, None, None] for i in range(4))
    return (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)


@torch.no_grad()
def cam_to_roi(aux_cam: torch.Tensor, cls_labels: torch.Tensor, high: float, low: float) -> torch.Tensor:
    """CTC region map (SPEC §4): ``aux_cam (B×C×H×W)`` → B×H×W long, 0 if ``v ≤ low``, 2 if ``v ≥ high``, else 1.

    ``v`` is the max over the present classes of ``cls_labels (B×C)``.
    """
    value, _ = masked_max(aux_cam, cls_labels)
    roi = torch.ones_like(value, dtype=torch.long)
    roi[value <= low] = 0
    roi[value >= high] = 2
    return roi


@torch.no_grad()
def cam_to_label(
    cam: torch.Tensor,
    cls_labels: torch.Tensor,
    bkg_score: float,
    valid_box: torch.Tensor | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Segmentation from a CAM with a constant background score (CAM mIoU, SPEC §8).

    A channel of ``bkg_score`` is prepended, absent classes are zeroed and the argmax is taken: 0 is background
    (also on ties, i.e. where ``v ≤ bkg_score``), ``1..C`` the classes.

    Args:
        cam: B×C×H×W CAM in [0, 1].
        cls_labels: B×C multi-hot labels.
        bkg_score: background score (0.5 in evaluation).
        valid_box: optional B×4 ``[y0, y1, x0, x1]``; pixels outside are ``ignore_index``.

    Returns:
        B×H×W long labels.
    """
    masked = cam * cls_labels.to(cam.dtype)[:, :, None, None]
    background = torch.full_like(masked[:, :1], bkg_score)
    labels = torch.cat([background, masked], dim=1).argmax(dim=1)
    if valid_box is not None:
        labels[~inside_box(valid_box.to(labels.device), tuple(labels.shape[-2:]))] = ignore_index
    return labels
