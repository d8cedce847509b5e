"""``build_dataset``: the one place that maps ``cfg.data`` to a dataset reader."""

from __future__ import annotations

from toco_ray.config import DataConfig
from toco_ray.data.base import SegDataset
from toco_ray.data.coco import COCODataset
from toco_ray.data.errors import DatasetError
from toco_ray.data.synthetic import CLASS_NAMES, SyntheticDataset, SyntheticStyle
from toco_ray.data.voc import VOCDataset

DATASETS = ("voc", "coco", "synthetic")
UNLABELLED_SPLITS = ("test",)  # splits that ship without masks nor image-level labels


def build_dataset(cfg: DataConfig, split: str, num_classes: int, limit: int = 0) -> SegDataset:
    """Returns the reader for ``cfg.dataset`` on ``split``.

    The whole split unless ``limit`` is non-zero: only the in-training validation passes ``cfg.val_limit``, so
    final inference and pseudo-label generation always cover the whole requested split. With ``cfg.root``
    empty, the synthetic dataset is generated once into the cache
    (``ensure_default_dataset``); VOC and COCO need a root.

    Args:
        cfg: data section of the config.
        split: split list name (``train_aug``, ``val``, ``val_part`` ...).
        num_classes: C, from ``cfg.model.num_classes``.
        limit: keep only the first ``limit`` names (0 = all).
    """
    labelled = split not in UNLABELLED_SPLITS
    kwargs = {
        "need_masks": labelled,
        "need_labels": labelled,
        "limit": limit,
    }
    if cfg.dataset == "synthetic":
        return SyntheticDataset(
            cfg.root or None,
            split,
            num_classes,
            seed=cfg.seed,
            num_train=cfg.num_train,
            num_val=cfg.num_val,
            style=SyntheticStyle(tuple(cfg.synthetic_object_side), cfg.synthetic_clutter),
            **kwargs,
        )
    if cfg.dataset not in DATASETS:
        raise DatasetError(f"config key 'data.dataset' is {cfg.dataset!r}; expected one of {', '.join(DATASETS)}")
    if not cfg.root:
        raise DatasetError(
            f"config key 'data.root' is empty; set it to the {cfg.dataset.upper()} root (see README#datasets). "
            "Only data.dataset=synthetic has a built-in default."
        )
    reader = VOCDataset if cfg.dataset == "voc" else COCODataset
    return reader(cfg.root, split, num_classes, **kwargs)


def class_names(cfg: DataConfig, num_classes: int) -> list[str] | None:
    """Foreground class names of the configured dataset for tables and figures, when the data layer knows them
    (the synthetic set's; None: ``class1..classC``)."""
    return list(CLASS_NAMES) if cfg.dataset == "synthetic" and num_classes == len(CLASS_NAMES) else None
