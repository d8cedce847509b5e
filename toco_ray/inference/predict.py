"""Per-image predictions of the final evaluation and of pseudo-label generation (SPEC §2, §8).

Pure torch/numpy: the serial loop and the Ray Data stages call these same functions, which is what makes their
outputs identical.

* :func:`predict_seg`: multi-scale + flip segmentation at native resolution → class probabilities.
* :func:`predict_cams`: multi-scale CAM and aux CAM of the network input, brought to native resolution.
* :func:`cam_label`: CAM → labels with one constant background score (CAM mIoU, ``cam.eval_bkg``).
* :func:`predict_cam_label`: CAM → pseudo labels with the dual background scores (``cam.bkg_high``/``bkg_low``).
* :func:`crf_cam_label`: the same pseudo labels after a dense CRF on the CAM+background probabilities.

Example:
    >>> probs = predict_seg(model, image_tensor(item["image"]), scales=(1.0, 1.25, 1.5))  # 1×(C+1)×H×W
    >>> pred = probs.argmax(1)[0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toco_ray.cam import cam_to_label, multiscale_cam
from toco_ray.config import EvalConfig
from toco_ray.data.transforms import normalize, resize_image, to_float_tensor

IGNORE_INDEX = 255


def image_tensor(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``H×W×3`` RGB → normalised ``1×3×H×W`` float32 on ``device``."""
    return normalize(to_float_tensor(image)).unsqueeze(0).to(device)


@torch.no_grad()
def predict_seg(
    model: nn.Module, images: torch.Tensor, scales: Sequence[float], protocol: str = "voc", input_size: int = 448
) -> torch.Tensor:
    """Multi-scale + flip segmentation (SPEC §8), as the reference's final evaluation.

    ``protocol="voc"`` (ref ``infer_seg_voc``): per scale ``s`` the images are resized to ``int(s·H)×int(s·W)``
    (bilinear, ``align_corners=False``), the decoder logits of the image and of its flip are brought to ``H×W``
    and summed (the flipped one flipped back); the element-wise max over scales is taken.
    ``protocol="coco"`` (ref ``infer_seg_coco_ddp``): the images are first resized to ``input_size²``, the scales
    are of that size, the flip pair is merged by max within a scale and the scales are summed. Either way the
    softmax over classes comes last.

    Args:
        model: a :class:`~toco_ray.models.ToCoNet` in eval mode.
        images: B×3×H×W normalised images (native resolution).
        scales: e.g. ``cfg.eval.scales`` (VOC 1.0, 1.25, 1.5).
        protocol: ``eval.protocol``, ``"voc"`` or ``"coco"``.
        input_size: the coco protocol's square input side (``data.val_size``, 448).

    Returns:
        B×(C+1)×H×W float32 class probabilities (background first).
    """
    size = (images.shape[-2], images.shape[-1])
    merge_flips, merge_scales = (torch.maximum, torch.add) if protocol == "coco" else (torch.add, torch.maximum)
    if protocol == "coco":
        images = F.interpolate(images, size=(input_size, input_size), mode="bilinear", align_corners=False)
    base = (images.shape[-2], images.shape[-1])
    total = None
    for scale in scales:
        scaled_size = (max(1, int(scale * base[0])), max(1, int(scale * base[1])))
        x = images
        if scaled_size != base:
            x = F.interpolate(images, size=scaled_size, mode="bilinear", align_corners=False)
        logits = model(torch.cat([x, x.flip(-1)]), with_seg=True).seg_logits.float()
        plain, flipped = model.to_pixels(logits, scaled_size, size).chunk(2)
        merged = merge_flips(plain, flipped.flip(-1))
        total = merged if total is None else merge_scales(total, merged)
    return total.softmax(dim=1)


@torch.no_grad()
def predict_cams(
    model: nn.Module, image: np.ndarray, scales: Sequence[float], input_size: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-scale CAM and aux CAM of one image at its native resolution.

    As the reference's pseudo-label inference, the network sees the image resized to ``input_size×input_size``
    (``data.val_size``, the in-training evaluation view); the CAMs (SPEC §2) are resized back to ``H×W``
    (bilinear, ``align_corners=False``).

    Args:
        model: a :class:`~toco_ray.models.ToCoNet` in eval mode.
        image: uint8 ``H×W×3`` RGB.
        scales: CAM scales (``cam.scales``).
        input_size: side of the square network input.

    Returns:
        ``(cam, aux_cam)``, each 1×C×H×W float32 in [0, 1] on ``device``.
    """
    native = image.shape[:2]
    x = image_tensor(resize_image(image, (input_size, input_size)), device)
    cam, aux_cam = multiscale_cam(model, x, scales)
    return (
        F.interpolate(cam.float(), size=native, mode="bilinear", align_corners=False),
        F.interpolate(aux_cam.float(), size=native, mode="bilinear", align_corners=False),
    )


def cam_label(cam: torch.Tensor, cls_label: torch.Tensor, bkg_score: float) -> torch.Tensor:
    """Labels of one CAM (C×H×W) with a constant background score; ``cls_label (C,)`` masks absent classes.

    Returns:
        H×W long in {0..C}: 0 where no present class exceeds ``bkg_score`` (ties go to background).
    """
    return cam_to_label(cam[None], cls_label[None], bkg_score)[0]


def combine_dual(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """Merges the labels of the high and low background passes (H×W each) into one pseudo label.

    Foreground class from the high pass; background only where both passes say background; 255 elsewhere
    (foreground under the low threshold but not the high one: uncertain).
    """
    out = high.clone()
    out[high == 0] = IGNORE_INDEX
    out[(high == 0) & (low == 0)] = 0
    return out


def predict_cam_label(cam: torch.Tensor, cls_label: torch.Tensor, bkg_high: float, bkg_low: float) -> torch.Tensor:
    """Pseudo label of one image from its CAM with the dual background scores (SPEC §5, without PAR).

    Example: present-class CAM values 0.8, 0.5, 0.1 with ``bkg_high=0.7``, ``bkg_low=0.25`` → class, 255, 0.

    Args:
        cam: C×H×W CAM in [0, 1].
        cls_label: (C,) multi-hot image-level label.
        bkg_high, bkg_low: ``cam.bkg_high`` and ``cam.bkg_low``.

    Returns:
        H×W long in {0..C, 255}.
    """
    return combine_dual(cam_label(cam, cls_label, bkg_high), cam_label(cam, cls_label, bkg_low))


def cam_bkg_probs(cam: torch.Tensor, cls_label: torch.Tensor, bkg_score: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CRF input of one CAM: softmax over a constant background score and the present classes' CAMs.

    Returns:
        ``(probs (1+P)×H×W, keys (1+P,))`` where ``keys`` maps a channel to its label (0 background, then the
        present classes 1..C).
    """
    present = torch.nonzero(cls_label > 0).flatten()
    background = torch.full_like(cam[:1], bkg_score)
    probs = torch.cat([background, cam[present]]).softmax(dim=0)
    keys = torch.cat([present.new_zeros(1), present + 1])
    return probs, keys


def crf_cam_label(
    image: np.ndarray, cam: torch.Tensor, cls_label: torch.Tensor, bkg_high: float, bkg_low: float, cfg: EvalConfig
) -> torch.Tensor:
    """Dual-threshold pseudo label after a dense CRF on each pass's CAM+background probabilities.

    Args:
        image: H×W×3 uint8 RGB.
        cam: C×H×W CAM in [0, 1] at the image size.
        cls_label: (C,) multi-hot image-level label.
        bkg_high, bkg_low: the two background scores.
        cfg: the eval section; its ``cam_crf_*`` parameters (ref ``infer_cam_crf_label``: Gaussian 3/3,
            bilateral 36/3/4), not the final segmentation's.

    Returns:
        H×W long in {0..C, 255}.
    """
    from toco_ray.crf import CRFParams, dense_crf  # pydensecrf: only runs that refine with the CRF need it

    labels = []
    for bkg in (bkg_high, bkg_low):
        probs, keys = cam_bkg_probs(cam, cls_label, bkg)
        if len(keys) == 1:  # no present class: everything is background, nothing for the CRF to decide
            labels.append(torch.zeros(cam.shape[-2:], dtype=torch.long))
            continue
        refined = dense_crf(image, probs.cpu().numpy(), CRFParams.cam_labels(cfg))
        labels.append(keys.cpu()[torch.from_numpy(refined.argmax(axis=0))])
    return combine_dual(*labels)
