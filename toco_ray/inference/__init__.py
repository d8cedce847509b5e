"""Sharded inference: multi-scale segmentation or CAM pseudo labels, dense CRF, outputs and mIoU over a split.

The per-image method (:mod:`~toco_ray.inference.predict`, :mod:`~toco_ray.inference.steps`) is plain
torch/numpy; :mod:`~toco_ray.inference.pipeline` runs it as a Ray Data pipeline (actor pool for the network, CPU
tasks for the CRF and the writing); :mod:`~toco_ray.inference.runner` ties a run together. See
``pipelines/infer.py`` for the command line.
"""

from toco_ray.inference.checkpoint import CheckpointError, CheckpointInfo, load_for_inference, resolve_checkpoint
from toco_ray.inference.outputs import OutputError, OutputLayout
from toco_ray.inference.predict import (
    cam_label,
    crf_cam_label,
    image_tensor,
    predict_cam_label,
    predict_cams,
    predict_seg,
)
from toco_ray.inference.runner import InferenceError, InferenceOptions, run_inference, run_serial
from toco_ray.inference.steps import InferenceTask, finish_item, infer_item, read_item, refine_item

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "InferenceError",
    "InferenceOptions",
    "InferenceTask",
    "OutputError",
    "OutputLayout",
    "cam_label",
    "crf_cam_label",
    "finish_item",
    "image_tensor",
    "infer_item",
    "load_for_inference",
    "predict_cam_label",
    "predict_cams",
    "predict_seg",
    "read_item",
    "refine_item",
    "resolve_checkpoint",
    "run_inference",
    "run_serial",
]
