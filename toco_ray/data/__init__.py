"""Data: VOC / COCO / synthetic readers, training and evaluation views, the synthetic generator.

Readers yield ``{"name", "image" (uint8 H×W×3), "mask" (uint8 H×W, 255 void, or None), "label" ((C,) multi-hot)}``;
views turn them into normalised tensors (:mod:`toco_ray.data.views`).
"""

from toco_ray.data.base import SegDataset
from toco_ray.data.build import build_dataset, class_names
from toco_ray.data.coco import COCODataset
from toco_ray.data.errors import DatasetError
from toco_ray.data.labels import IGNORE_INDEX, labels_from_mask
from toco_ray.data.palette import voc_palette
from toco_ray.data.synthetic import (
    CLASS_NAMES,
    SyntheticDataset,
    SyntheticStyle,
    ensure_default_dataset,
    generate_dataset,
    render_sample,
)
from toco_ray.data.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize, normalize
from toco_ray.data.views import TrainViews, ValViews, ViewDataset, collate
from toco_ray.data.voc import VOCDataset

__all__ = [
    "CLASS_NAMES",
    "COCODataset",
    "DatasetError",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SegDataset",
    "SyntheticDataset",
    "SyntheticStyle",
    "TrainViews",
    "ValViews",
    "VOCDataset",
    "ViewDataset",
    "build_dataset",
    "class_names",
    "collate",
    "denormalize",
    "ensure_default_dataset",
    "generate_dataset",
    "labels_from_mask",
    "normalize",
    "render_sample",
    "voc_palette",
]
