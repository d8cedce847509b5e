"""Split lists with repeated names or names with spaces, and an image that claims a huge size."""

from __future__ import annotations

import shutil
import struct

import pytest

from toco_ray.data import DatasetError, VOCDataset

pytestmark = pytest.mark.unit


def test_case28_a_repeated_name_is_used_once_with_a_warning(voc_root, capsys):
    path = voc_root / "ImageSets" / "Segmentation" / "val.txt"
    path.write_text("val_00000\r\n\r\nval_00001\nval_00000\nval_00000\n")
    dataset = VOCDataset(voc_root, "val")
    assert dataset.names == ["val_00000", "val_00001"]
    assert capsys.readouterr().err == (
        f"warning: split list {path} lists 1 name(s) more than once (first: 'val_00000', 3 times); "
        "each image is used once\n"
    )


def test_case29_a_name_with_a_space_is_read_whole(voc_root):
    for folder, suffix in (("JPEGImages", ".jpg"), ("SegmentationClassAug", ".png")):
        shutil.copy(voc_root / folder / f"val_00000{suffix}", voc_root / folder / f"val 00000{suffix}")
    (voc_root / "ImageSets" / "Segmentation" / "val.txt").write_text("val 00000\nval_00001\n")
    (voc_root / "cls_labels.npy").unlink()  # labels derived from the masks, so the new name has one
    dataset = VOCDataset(voc_root, "val")
    assert dataset.names == ["val 00000", "val_00001"] and dataset[0]["image"].shape[2] == 3


def test_case29_a_missing_name_with_a_space_is_named_whole(voc_root):
    (voc_root / "ImageSets" / "Segmentation" / "val.txt").write_text("val 00000\n")
    with pytest.raises(DatasetError, match=r"first: .*JPEGImages/val 00000\.jpg"):
        VOCDataset(voc_root, "val")


def test_case33_a_decompression_bomb_is_a_dataset_error(voc_root):
    path = voc_root / "JPEGImages" / "val_00000.jpg"
    data = bytearray(path.read_bytes())
    sof = next(i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    data[sof + 5 : sof + 9] = struct.pack(">HH", 40000, 40000)  # the header claims 40000×40000
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=rf"image {path} cannot be decoded \(Image size \(1600000000 pixels\)"):
        VOCDataset(voc_root, "val").read_image("val_00000")
