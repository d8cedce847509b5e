"""Helpers that build small dataset trees for the data tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from toco_ray.data.palette import voc_palette

NUM_TRAIN, NUM_VAL = 10, 5  # size of the shared synthetic tree


def make_coco_tree(voc: Path, out: Path) -> dict[str, str]:
    """Rearranges a VOC-layout tree into the COCO 2014 layout; returns {coco name: voc name}."""
    renamed = {}
    for split, folder in (("train", "train2014"), ("val", "val2014")):
        (out / folder).mkdir(parents=True)
        (out / "SegmentationClass" / folder).mkdir(parents=True)
        names = (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        coco_names = []
        for i, name in enumerate(names):
            coco = f"COCO_{folder}_{i + 1:012d}"
            shutil.copy(voc / "JPEGImages" / f"{name}.jpg", out / folder / f"{coco}.jpg")
            mask = voc / "SegmentationClassAug" / f"{name}.png"
            shutil.copy(mask, out / "SegmentationClass" / folder / f"{coco}.png")
            renamed[coco] = name
            coco_names.append(coco)
        (out / f"{split}.txt").write_text("\n".join(coco_names) + "\n")
    return renamed


def write_mask(path: Path, mask: np.ndarray) -> None:
    """Saves an index PNG; the explicit full palette keeps PIL from renumbering unused palette entries."""
    png = Image.fromarray(mask.astype(np.uint8), mode="P")
    png.putpalette(voc_palette().ravel().tolist())
    png.save(path)
