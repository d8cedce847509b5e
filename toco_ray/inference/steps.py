"""The four per-image steps of an inference run, shared by the serial loop and the Ray Data stages.

``read`` (decode image, mask, image-level label) → ``infer`` (the network: segmentation probabilities or CAMs)
→ ``refine`` (label maps, with the dense CRF when enabled) → ``finish`` (write the PNGs, count the confusion
matrices, write the per-image record). Each step is a plain function of its inputs; the Ray pipeline only
moves their results between processes.

Label kinds (each a ``H×W`` uint8 map, counted against the ground truth when there is one):

* seg mode: ``seg`` (argmax of the multi-scale probabilities), ``seg_crf`` (after the CRF).
* cam mode: ``cam`` and ``cam_aux`` (one background score, ``cam.eval_bkg``: the CAM mIoU), ``pseudo``
  (dual background scores, 255 = uncertain), ``pseudo_crf`` (the same after the CRF).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toco_ray.config import ToCoConfig
from toco_ray.crf import CRFParams, dense_crf
from toco_ray.data.base import SegDataset
from toco_ray.inference.outputs import OutputLayout, write_json, write_label_png, write_npy
from toco_ray.inference.predict import (
    IGNORE_INDEX,
    cam_label,
    crf_cam_label,
    image_tensor,
    predict_cam_label,
    predict_cams,
    predict_seg,
)
from toco_ray.metrics import confusion_matrix

MODES = ("seg", "cam")
PARTIAL_KINDS = ("pseudo", "pseudo_crf")  # label maps with 255 = "no label": counted where labelled only
EMPTY_MASK = np.zeros((0, 0), dtype=np.uint8)  # stands for "no ground truth" (arrays travel between processes)


@dataclass
class InferenceTask:
    """Everything a step needs besides the model and the image (sent once to every Ray worker).

    Attributes:
        cfg: the experiment config of the checkpoint.
        mode: ``seg`` (final segmentation) or ``cam`` (CAM pseudo labels).
        scales: image scales (seg: ``eval.scales``; cam: ``cam.scales``).
        crf: run the dense CRF (``eval.crf_*``).
        out_dir: the run's output folder.
        save_probs: also write float16 scores (seg probabilities / CAMs) at ``probs_scale`` of the image size.
        probs_scale: resolution factor of the saved scores.
        threads: torch intra-op threads of a CPU inference worker (the serial loop uses the same number, so
            both paths compute identical numbers).
    """

    cfg: ToCoConfig
    mode: str
    scales: tuple[float, ...]
    crf: bool
    out_dir: str
    save_probs: bool = False
    probs_scale: float = 0.25
    threads: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"inference mode {self.mode!r}; expected one of {', '.join(MODES)}")

    @property
    def num_classes(self) -> int:
        """K = C + 1: classes of the label maps, background included."""
        return self.cfg.model.num_classes + 1

    @property
    def kinds(self) -> tuple[str, ...]:
        """Label maps produced per image (see the module docstring)."""
        if self.mode == "seg":
            return ("seg", "seg_crf") if self.crf else ("seg",)
        return ("cam", "cam_aux", "pseudo", "pseudo_crf") if self.crf else ("cam", "cam_aux", "pseudo")

    @property
    def written_kinds(self) -> tuple[str, ...]:
        """Label maps written as PNGs: the products (CAM-mIoU labels are only counted)."""
        return self.kinds if self.mode == "seg" else tuple(k for k in self.kinds if k in PARTIAL_KINDS)

    @property
    def final_kind(self) -> str:
        """The run's headline label map: the CRF one when the CRF runs."""
        return self.written_kinds[-1]


def read_item(dataset: SegDataset, index: int) -> dict[str, Any]:
    """Image ``index`` of ``dataset``: name, image (H×W×3 uint8), mask (H×W uint8 or 0×0), label (C,) float32.

    Raises:
        DatasetError: the image or mask cannot be read (the message names the file).
    """
    start = time.perf_counter()
    item = dataset[index]
    return {
        "name": item["name"],
        "image": item["image"],
        "mask": EMPTY_MASK if item["mask"] is None else item["mask"],
        "label": np.asarray(item["label"], dtype=np.float32),
        "read_s": time.perf_counter() - start,
    }


def infer_item(model: nn.Module, task: InferenceTask, item: dict[str, Any], device: torch.device | str) -> dict:
    """Runs the network on one image.

    Returns:
        seg: ``{"probs": (C+1)×H×W float32}``; cam: ``{"cams": C×H×W, "aux_cams": C×H×W}`` float32 in [0, 1]
        (named apart from the ``cam`` label kind: scores and labels share one row in the Ray stages); plus
        ``infer_s``.
    """
    start = time.perf_counter()
    if task.mode == "seg":
        cfg = task.cfg
        probs = predict_seg(
            model, image_tensor(item["image"], device), task.scales, cfg.eval.protocol, cfg.data.val_size
        )
        out = {"probs": probs[0].cpu().numpy()}
    else:
        cam, aux_cam = predict_cams(model, item["image"], task.scales, task.cfg.data.val_size, device)
        out = {"cams": cam[0].cpu().numpy(), "aux_cams": aux_cam[0].cpu().numpy()}
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)  # honest per-image timings: CUDA calls return before the work is done
    out["infer_s"] = time.perf_counter() - start
    return out


def refine_item(task: InferenceTask, item: dict[str, Any], scores: dict[str, Any]) -> dict[str, Any]:
    """Label maps of one image (every kind of ``task.kinds``, H×W uint8) plus ``crf_s`` (0 without CRF)."""
    start = time.perf_counter()
    if task.mode == "seg":
        probs = scores["probs"]
        labels = {"seg": probs.argmax(axis=0)}
        if task.crf:
            labels["seg_crf"] = dense_crf(item["image"], probs, CRFParams.final(task.cfg.eval)).argmax(axis=0)
    else:
        cam_cfg = task.cfg.cam
        cam, aux_cam, cls_label = (as_tensor(a) for a in (scores["cams"], scores["aux_cams"], item["label"]))
        labels = {
            "cam": cam_label(cam, cls_label, cam_cfg.eval_bkg),
            "cam_aux": cam_label(aux_cam, cls_label, cam_cfg.eval_bkg),
            "pseudo": predict_cam_label(cam, cls_label, cam_cfg.bkg_high, cam_cfg.bkg_low),
        }
        if task.crf:
            labels["pseudo_crf"] = crf_cam_label(
                item["image"], cam, cls_label, cam_cfg.bkg_high, cam_cfg.bkg_low, task.cfg.eval
            )
    out = {kind: np.asarray(value, dtype=np.uint8) for kind, value in labels.items()}
    out["crf_s"] = time.perf_counter() - start if task.crf else 0.0
    return out


def finish_item(
    task: InferenceTask, item: dict[str, Any], scores: dict[str, Any], labels: dict[str, Any]
) -> dict[str, Any]:
    """Writes the image's outputs and its record (last, atomically) and returns the record.

    The record holds the image size, the step timings and, when the image has a mask, one confusion matrix per
    label kind in sparse form (:func:`sparse_confusion`); for the partial kinds (255 = no label) only labelled
    pixels are counted and ``labelled_px`` says how many pixels got a label.
    """
    start = time.perf_counter()
    layout = OutputLayout(task.out_dir)
    name = item["name"]
    for kind in task.written_kinds:
        write_label_png(layout.label_png(kind, name), labels[kind])
    if task.save_probs:
        write_npy(layout.probs(name), reduced_scores(task, scores))
    mask = item["mask"]
    record: dict[str, Any] = {
        "name": name,
        "height": int(item["image"].shape[0]),
        "width": int(item["image"].shape[1]),
        "has_mask": bool(mask.size),
        "read_s": float(item.get("read_s", 0.0)),
        "infer_s": float(scores["infer_s"]),
        "crf_s": float(labels["crf_s"]),
        "valid_px": int((mask != IGNORE_INDEX).sum()) if mask.size else 0,
        "labelled_px": {k: int((labels[k] != IGNORE_INDEX).sum()) for k in task.kinds if k in PARTIAL_KINDS},
        "conf": {k: sparse_confusion(count_confusion(labels[k], mask, task.num_classes)) for k in task.kinds}
        if mask.size
        else {},
    }
    record["write_s"] = time.perf_counter() - start
    write_json(layout.record(name), record)
    return record


def count_confusion(pred: np.ndarray, mask: np.ndarray, num_classes: int) -> np.ndarray:
    """K×K int64 confusion matrix of ``pred`` against ``mask`` (both H×W); pixels where either is 255 are skipped."""
    gt = np.where(pred == IGNORE_INDEX, IGNORE_INDEX, mask)
    return confusion_matrix(as_tensor(pred), as_tensor(gt), num_classes).numpy()


def sparse_confusion(conf: np.ndarray) -> dict[str, list[int]]:
    """K×K counts → ``{"index": flat indices gt·K + pred of the non-zero cells, "count": their counts}``.

    An image holds a few classes, so this is a few numbers instead of K² (6561 for COCO) per image and kind.
    """
    flat = conf.ravel()
    index = np.flatnonzero(flat)
    return {"index": index.tolist(), "count": flat[index].tolist()}


def dense_confusion(sparse: dict[str, list[int]], num_classes: int) -> np.ndarray:
    """Inverse of :func:`sparse_confusion`: K×K int64."""
    flat = np.zeros(num_classes * num_classes, dtype=np.int64)
    np.add.at(flat, np.asarray(sparse["index"], dtype=np.int64), np.asarray(sparse["count"], dtype=np.int64))
    return flat.reshape(num_classes, num_classes)


def reduced_scores(task: InferenceTask, scores: dict[str, Any]) -> np.ndarray:
    """The scores worth keeping (seg probabilities or the CAM), resized by ``probs_scale``, as float16."""
    values = as_tensor(scores["probs" if task.mode == "seg" else "cams"])
    size = tuple(max(1, round(s * task.probs_scale)) for s in values.shape[-2:])
    small = F.interpolate(values[None], size=size, mode="bilinear", align_corners=False)[0]
    return small.numpy().astype(np.float16)


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``array``'s memory, or a copy's when it is read-only (zero-copy arrays from Ray's object
    store), which torch would otherwise warn about on every image."""
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def process_item(
    model: nn.Module, task: InferenceTask, dataset: SegDataset, index: int, device: torch.device | str
) -> dict[str, Any]:
    """All four steps for one image (the serial loop's body); returns the record."""
    item = read_item(dataset, index)
    scores = infer_item(model, task, item, device)
    labels = refine_item(task, item, scores)
    return finish_item(task, item, scores, labels)
