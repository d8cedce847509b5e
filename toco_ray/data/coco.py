"""MS-COCO 2014 reader in the VOC-style layout used by WSSS work (masks converted to index PNGs).

Layout (``root``)::

    train2014/<name>.jpg, val2014/<name>.jpg           (or JPEGImages/train2014/, JPEGImages/val2014/)
    SegmentationClass/train2014/<name>.png, .../val2014/<name>.png   0 background, 1..80, 255 void
    train.txt, val.txt                                 names without extension (optional: else the folder)
    cls_labels.npy                                     optional: dict name → (80,) multi-hot

Split ``val_part`` is the first 5000 names of ``val`` (ref in-training evaluation) unless a
``val_part.txt`` exists.
"""

from __future__ import annotations

from pathlib import Path

from toco_ray.data.base import IMAGE_SUFFIX, SegDataset, find_split_file, read_name_list
from toco_ray.data.errors import DatasetError

COCO_NUM_CLASSES = 80
VAL_PART_SIZE = 5000  # ref: in-training evaluation on the first 5000 val2014 images
LAYOUT_HINT = "expected COCO 2014 layout with train2014/, val2014/ and SegmentationClass/, see README#datasets"


class COCODataset(SegDataset):
    """COCO 2014 segmentation dataset; items as in :class:`~toco_ray.data.base.SegDataset`.

    Args:
        root: dataset root (layout in the module docstring).
        split: ``train``, ``val``, ``val_part`` or any ``{split}.txt`` in the root whose name starts with
            ``train`` or ``val`` (which decides the image folder).
        num_classes: C (80).
        limit: keep the first ``limit`` names (0 = all; ``val_part`` defaults to 5000).
        Other arguments as :class:`~toco_ray.data.base.SegDataset`.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        num_classes: int = COCO_NUM_CLASSES,
        *,
        need_masks: bool = True,
        need_labels: bool = True,
        limit: int = 0,
        cache_dir: str | Path | None = None,
    ) -> None:
        root = Path(root)
        what = f"COCO root {root}"
        if not root.is_dir():
            raise DatasetError(f"{what} does not exist ({LAYOUT_HINT})")
        folder = _image_folder(split)
        candidates = [root / folder, root / "JPEGImages" / folder]
        image_dir = next((p for p in candidates if p.is_dir()), None)
        if image_dir is None:
            raise DatasetError(f"{what} has no {folder}/ nor JPEGImages/{folder}/ ({LAYOUT_HINT})")
        self.image_dir = image_dir
        mask_dir = root / "SegmentationClass" / folder
        self.mask_dir = mask_dir if mask_dir.is_dir() else None
        if self.mask_dir is None and need_masks:
            raise DatasetError(f"{what} has no SegmentationClass/{folder}/ ({LAYOUT_HINT})")
        if split == "val_part" and not limit:
            limit = VAL_PART_SIZE
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
        lists = [self.root / f"{self.split}.txt", self.root / "ImageSets" / "Segmentation" / f"{self.split}.txt"]
        if self.split == "val_part" and not any(p.is_file() for p in lists):
            lists = [self.root / "val.txt", self.root / "ImageSets" / "Segmentation" / "val.txt"]
        if any(p.is_file() for p in lists):
            return read_name_list(find_split_file(lists, self.split, self.root))
        # no list file: every image of the folder, sorted (COCO ids sort numerically as strings)
        names = sorted(p.name[: -len(IMAGE_SUFFIX)] for p in self.image_dir.glob(f"*{IMAGE_SUFFIX}"))
        if not names:
            raise DatasetError(f"COCO image folder {self.image_dir} holds no *{IMAGE_SUFFIX} files ({LAYOUT_HINT})")
        return names


def _image_folder(split: str) -> str:
    if split.startswith("train"):
        return "train2014"
    if split.startswith("val"):
        return "val2014"
    raise DatasetError(f"COCO split {split!r} is unknown; expected a name starting with 'train' or 'val'")
