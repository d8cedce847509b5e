"""Sharded inference: multi-scale segmentation or CAM pseudo labels, dense CRF, outputs and mIoU over a split.

The per-image method (:mod:`~toco_ray.inference.predict`, :mod:`~toco_ray.inference.steps`) is plain
torch/numpy; :mod:`~toco_ray.inference.pipeline` runs it as a Ray Data pipeline (actor pool for the network, CPU
tasks for the CRF and the writing); :mod:`~toco_ray.inference.runner` ties a run together. See
``pipelines/infer.py`` for the command line.

The names below are imported on first use, so ``toco_ray.inference.predict`` loads with torch alone (no Ray,
MLflow, pydensecrf or matplotlib), as ``pipelines.gpu_check`` needs on a GPU box that has only torch and timm.
"""

import importlib

_EXPORTS = {
    "toco_ray.inference.checkpoint": ("CheckpointError", "CheckpointInfo", "load_for_inference", "resolve_checkpoint"),
    "toco_ray.inference.outputs": ("OutputError", "OutputLayout"),
    "toco_ray.inference.predict": (
        "cam_label",
        "crf_cam_label",
        "image_tensor",
        "predict_cam_label",
        "predict_cams",
        "predict_seg",
    ),
    "toco_ray.inference.runner": ("InferenceError", "InferenceOptions", "run_inference", "run_serial"),
    "toco_ray.inference.steps": ("InferenceTask", "finish_item", "infer_item", "read_item", "refine_item"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
