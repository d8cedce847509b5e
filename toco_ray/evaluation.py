"""In-training evaluation (SPEC §8): CAM, aux-CAM and segmentation confusion matrices on the val split.

As the reference's ``validate()``, each val image is resized to ``data.val_size``; the CAM and aux CAM are the
multi-scale + flip CAMs of :func:`~toco_ray.cam.multiscale_cam` at ``cam.scales`` (1.0, 0.5, 1.5): these are the
paper's M and M^m (Tables 4 and 5). The CAM labels use the ground-truth image-level labels and a constant
background score ``cam.eval_bkg``; the segmentation is the single-scale argmax of the decoder logits.
Every prediction is brought to the native mask size before it is counted. The functions here return raw K×K
confusion matrices (K = C + 1), so a distributed caller sums them over workers (one all-reduce) before computing IoU.

Trivial baselines are counted alongside, from the ground truth alone: every pixel background; every pixel of an
image set to the class covering most of it; every pixel set to its largest foreground class. A CAM worth its name
must beat them all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from toco_ray.cam import cam_to_label, multiscale_cam
from toco_ray.metric_names import BASELINES, KINDS, baseline_miou, eval_miou, eval_pixel_acc
from toco_ray.metrics import IoUResult, confusion_matrix, iou_from_confusion

IGNORE_INDEX = 255


@dataclass
class Predictions:
    """Predictions for one batch, each a list of B tensors at the native mask size (H_i×W_i, long).

    ``cams`` and ``aux_cams`` (B×C×S×S in [0, 1], at the network input size) are kept for overlays.
    """

    cam: list[torch.Tensor]
    aux_cam: list[torch.Tensor]
    seg: list[torch.Tensor]
    cams: torch.Tensor
    aux_cams: torch.Tensor


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    out_sizes: Sequence[tuple[int, int]],
    bkg_score: float,
    scales: Sequence[float],
    autocast_dtype: torch.dtype | None = None,
) -> Predictions:
    """CAM, aux-CAM and segmentation labels for a batch.

    Args:
        model: a :class:`~toco_ray.models.ToCoNet` in eval mode.
        images: B×3×S×S normalised val images.
        labels: B×C multi-hot ground-truth image-level labels.
        out_sizes: B native mask sizes ``(H_i, W_i)``.
        bkg_score: constant background score of the CAM labels (``cam.eval_bkg``).
        scales: CAM scales (``cam.scales``); the segmentation forward is reused for scale 1.0.
        autocast_dtype: e.g. ``torch.bfloat16`` on GPU; None for full precision.
    """
    autocast = (
        torch.autocast(device_type=images.device.type, dtype=autocast_dtype)
        if autocast_dtype
        else contextlib.nullcontext()
    )
    with autocast:
        out = model(images, with_seg=True)
        base = model.cam_maps(out) if 1.0 in scales else None
        cams, aux_cams = multiscale_cam(model, images, scales, base=base)
    cams, aux_cams = cams.float(), aux_cams.float()
    seg_logits = out.seg_logits.float()
    result = Predictions(cam=[], aux_cam=[], seg=[], cams=cams, aux_cams=aux_cams)
    for i, size in enumerate(out_sizes):
        size = (int(size[0]), int(size[1]))
        label = labels[i : i + 1]
        for kind, cam in (("cam", cams), ("aux_cam", aux_cams)):
            native = F.interpolate(cam[i : i + 1], size=size, mode="bilinear", align_corners=False)
            getattr(result, kind).append(cam_to_label(native, label, bkg_score)[0])
        seg = model.to_pixels(seg_logits[i : i + 1], out.image_size, out_size=size)
        result.seg.append(seg.argmax(dim=1)[0])
    return result


def baseline_predictions(mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The trivial baselines for one ground-truth mask ``H×W``, each a constant prediction for the whole image.

    ``all_background``: class 0. ``image_majority``: the class (background included) covering most of the
    image's valid pixels. ``image_largest_foreground``: the foreground class covering most of them (background
    when the image has none), i.e. the best single class the image-level labels could name.
    """
    valid = mask[mask != IGNORE_INDEX].long()
    counts = torch.bincount(valid, minlength=2) if valid.numel() else torch.zeros(2, dtype=torch.long)
    majority = int(counts.argmax())
    foreground = int(counts[1:].argmax()) + 1 if counts[1:].sum() > 0 else 0
    return {
        "all_background": torch.zeros_like(mask),
        "image_majority": torch.full_like(mask, majority),
        "image_largest_foreground": torch.full_like(mask, foreground),
    }


@dataclass
class EvalCounts:
    """Raw confusion matrices (K×K int64, rows = ground truth) of every prediction kind and baseline."""

    matrices: dict[str, torch.Tensor]
    num_images: int = 0

    @classmethod
    def zeros(cls, num_classes: int) -> EvalCounts:
        k = num_classes + 1
        return cls({name: torch.zeros(k, k, dtype=torch.long) for name in (*KINDS, *BASELINES)})

    def stacked(self) -> torch.Tensor:
        """All matrices plus the image count as one flat int64 tensor (what a distributed all-reduce sums)."""
        flat = [self.matrices[name].flatten() for name in sorted(self.matrices)]
        return torch.cat([*flat, torch.tensor([self.num_images])])

    def with_stacked(self, values: torch.Tensor) -> EvalCounts:
        """The same layout filled from :meth:`stacked` values (e.g. after summing over workers)."""
        values = values.cpu()
        out, offset = {}, 0
        for name in sorted(self.matrices):
            size = self.matrices[name].numel()
            out[name] = values[offset : offset + size].reshape(self.matrices[name].shape).clone()
            offset += size
        return EvalCounts(out, int(values[offset]))


def count_batch(counts: EvalCounts, preds: Predictions, masks: Sequence[torch.Tensor]) -> None:
    """Adds one batch's predictions and the baselines to ``counts`` (in place)."""
    k = counts.matrices["cam"].shape[0]
    for i, mask in enumerate(masks):
        mask = mask.cpu().long()
        per_kind = {"cam": preds.cam[i], "aux_cam": preds.aux_cam[i], "seg": preds.seg[i]}
        per_kind.update(baseline_predictions(mask))
        for name, pred in per_kind.items():
            counts.matrices[name] += confusion_matrix(pred.cpu(), mask, k, IGNORE_INDEX)
        counts.num_images += 1


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Puts ``model`` in eval mode for the block and restores its previous mode after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[dict],
    num_classes: int,
    bkg_score: float,
    scales: Sequence[float],
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> EvalCounts:
    """Counts confusion matrices over val batches (this worker's shard only; sum over workers afterwards).

    Args:
        model: a :class:`~toco_ray.models.ToCoNet`; in eval mode during the pass, its mode restored after.
        batches: collated val batches with "image" (B×3×S×S), "label" (B×C) and "mask" (B native H_i×W_i masks).
        num_classes: C (matrices are (C+1)×(C+1)).
        bkg_score: ``cam.eval_bkg``.
        scales: CAM scales (``cam.scales``).
    """
    counts = EvalCounts.zeros(num_classes)
    with eval_mode(model):
        for batch in batches:
            masks = list(batch["mask"])
            images = batch["image"].to(device)
            labels = batch["label"].to(device)
            preds = predict(model, images, labels, [m.shape[-2:] for m in masks], bkg_score, scales, autocast_dtype)
            count_batch(counts, preds, masks)
    return counts


def summarize(counts: EvalCounts) -> dict[str, IoUResult]:
    """IoU per class, mIoU and pixel accuracy of every prediction kind and baseline."""
    return {name: iou_from_confusion(matrix) for name, matrix in counts.matrices.items()}


def eval_metrics(results: dict[str, IoUResult]) -> dict[str, float]:
    """Flat metric names: ``eval/cam_miou``, ``eval/aux_cam_miou``, ``eval/seg_miou`` (+ pixel accuracy),
    ``baseline/<name>_miou``."""
    metrics = {}
    for name in KINDS:
        metrics[eval_miou(name)] = results[name].miou
        metrics[eval_pixel_acc(name)] = results[name].pixel_acc
    for name in BASELINES:
        metrics[baseline_miou(name)] = results[name].miou
    return metrics
