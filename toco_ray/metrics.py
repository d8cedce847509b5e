"""Segmentation metrics from a confusion matrix (SPEC §8).

Pixels whose ground truth is the ignore index (255) are excluded. ``IoU_c = TP / (TP + FP + FN)``; the mean is
taken over the classes present in the ground truth, the reference's rule (``utils/evaluate.py::scores``): a class
that is only predicted adds to the false positives of the others but has no IoU term of its own. On full VOC val
every class is present and the rule changes nothing; on subsets it does. Confusion matrices are plain integer
tensors, so distributed evaluation reduces them with a single all-reduce (sum) before computing IoU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def confusion_matrix(pred: torch.Tensor, gt: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Counts (ground truth, prediction) pairs.

    Args:
        pred: predicted class ids, any shape.
        gt: ground-truth class ids, same shape; ``ignore_index`` pixels are skipped.
        num_classes: K, including background.

    Returns:
        K×K int64 tensor, rows = ground truth, columns = prediction.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from ground truth {tuple(gt.shape)}")
    keep = gt != ignore_index
    gt_k, pred_k = gt[keep].long(), pred[keep].long()
    if gt_k.numel() and (gt_k.max() >= num_classes or gt_k.min() < 0):
        raise ValueError(f"ground-truth label {int(gt_k.max())} outside [0, {num_classes}) and not {ignore_index}")
    pred_k = pred_k.clamp(0, num_classes - 1)
    return torch.bincount(gt_k * num_classes + pred_k, minlength=num_classes**2).reshape(num_classes, num_classes)


@dataclass
class IoUResult:
    """Per-class IoU (NaN where a class is absent from the ground truth) and their mean."""

    per_class: np.ndarray  # K
    miou: float
    pixel_acc: float


def iou_from_confusion(conf: torch.Tensor | np.ndarray) -> IoUResult:
    """IoU per class and mIoU over the classes present in the ground truth (rows of ``conf`` with pixels)."""
    conf = np.asarray(conf.cpu() if isinstance(conf, torch.Tensor) else conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    valid = conf.sum(1) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(valid, tp / union, np.nan)
    miou = float(iou[valid].mean()) if valid.any() else float("nan")
    total = conf.sum()
    return IoUResult(per_class=iou, miou=miou, pixel_acc=float(tp.sum() / total) if total else float("nan"))


class ConfusionMeter:
    """Accumulates a confusion matrix over batches of (prediction, ground truth) pairs."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        self.matrix += confusion_matrix(pred.cpu(), gt.cpu(), self.num_classes, self.ignore_index)

    def result(self) -> IoUResult:
        return iou_from_confusion(self.matrix)
