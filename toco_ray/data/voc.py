"""PASCAL VOC 2012 (+ SBD ``SegmentationClassAug``) reader.

Layout (``root`` = ``VOCdevkit/VOC2012``)::

    JPEGImages/<name>.jpg
    SegmentationClassAug/<name>.png      index PNG, 0 background, 1..20, 255 void (or SegmentationClass/)
    ImageSets/Segmentation/<split>.txt   one name per line, or SBD style "/JPEGImages/x.jpg /Seg.../x.png"
    cls_labels.npy                       optional: dict name → (20,) multi-hot (else derived from the masks)
"""

from __future__ import annotations

from pathlib import Path

from toco_ray.data.base import SegDataset, find_split_file, read_name_list, require_dir
from toco_ray.data.errors import DatasetError

VOC_NUM_CLASSES = 20
MASK_DIRS = ("SegmentationClassAug", "SegmentationClass")  # SBD-augmented masks preferred
LAYOUT_HINT = "expected VOCdevkit/VOC2012 layout, see README#datasets"


class VOCDataset(SegDataset):
    """VOC-layout segmentation dataset; items as in :class:`~toco_ray.data.base.SegDataset`.

    Example:
        >>> ds = VOCDataset("data/VOCdevkit/VOC2012", "train_aug")  # doctest: +SKIP
        >>> item = ds[0]; item["image"].shape, item["label"].shape  # doctest: +SKIP
        ((281, 500, 3), (20,))
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        num_classes: int = VOC_NUM_CLASSES,
        *,
        need_masks: bool = True,
        need_labels: bool = True,
        limit: int = 0,
        cache_dir: str | Path | None = None,
    ) -> None:
        root = Path(root)
        what = f"VOC root {root}"
        if not root.is_dir():
            raise DatasetError(f"{what} does not exist ({LAYOUT_HINT})")
        hint = LAYOUT_HINT + (f"; did you mean {root / 'VOC2012'}?" if (root / "VOC2012").is_dir() else "")
        self.image_dir = require_dir(root / "JPEGImages", what, hint)
        self.mask_dir = next((root / d for d in MASK_DIRS if (root / d).is_dir()), None)
        if self.mask_dir is None and need_masks:
            raise DatasetError(f"{what} has no {MASK_DIRS[0]}/ nor {MASK_DIRS[1]}/ ({hint})")
        super().__init__(
            root,
            split,
            num_classes,
            need_masks=need_masks,
            need_labels=need_labels,
            limit=limit,
            cache_dir=cache_dir,
        )

    def read_split(self) -> list[str]:
        candidates = [
            self.root / "ImageSets" / "Segmentation" / f"{self.split}.txt",
            self.root / "ImageSets" / "SegmentationAug" / f"{self.split}.txt",
            self.root / f"{self.split}.txt",
        ]
        return read_name_list(find_split_file(candidates, self.split, self.root))
