"""Every malformed input raises DatasetError naming the offending file and what was expected."""

from __future__ import annotations

import numpy as np
import pytest
from data_trees import make_coco_tree, write_mask
from PIL import Image

from toco_ray.config import build_config
from toco_ray.data import COCODataset, DatasetError, VOCDataset, build_dataset
from toco_ray.data.labels import save_label_file

pytestmark = pytest.mark.unit


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"VOC root .*nowhere does not exist"):
        VOCDataset(tmp_path / "nowhere", "train")


def test_missing_jpegimages_folder(voc_root):
    (voc_root / "JPEGImages").rename(voc_root / "images")
    with pytest.raises(DatasetError, match=r"VOC root .* has no JPEGImages/ \(expected VOCdevkit/VOC2012 layout"):
        VOCDataset(voc_root, "train")


def test_devkit_root_suggests_voc2012(voc_root):
    with pytest.raises(DatasetError, match=r"did you mean .*VOC2012\?"):
        VOCDataset(voc_root.parent, "train")


def test_missing_mask_folder(voc_root):
    (voc_root / "SegmentationClassAug").rename(voc_root / "masks")
    with pytest.raises(DatasetError, match=r"has no SegmentationClassAug/ nor SegmentationClass/"):
        VOCDataset(voc_root, "train")


def test_missing_split_list(voc_root):
    with pytest.raises(DatasetError, match=r"split 'trainval' .*ImageSets/Segmentation/trainval\.txt"):
        VOCDataset(voc_root, "trainval")


def test_split_naming_a_missing_image(voc_root):
    with open(voc_root / "ImageSets" / "Segmentation" / "val.txt", "a") as fh:
        fh.write("ghost_0001\n")
    with pytest.raises(DatasetError, match=r"missing from .*JPEGImages, first: .*ghost_0001\.jpg"):
        VOCDataset(voc_root, "val")


def test_listed_image_without_mask(voc_root):
    (voc_root / "SegmentationClassAug" / "val_00002.png").unlink()
    with pytest.raises(DatasetError, match=r"without a mask .*val_00002\.png"):
        VOCDataset(voc_root, "val")


def test_corrupt_jpeg_is_named_when_read(voc_root):
    path = voc_root / "JPEGImages" / "val_00001.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated: the header parses, the pixels do not
    ds = VOCDataset(voc_root, "val")  # existence checks pass at construction
    with pytest.raises(DatasetError, match=r"image .*val_00001\.jpg cannot be decoded"):
        ds[1]


def test_unreadable_jpeg_garbage(voc_root):
    (voc_root / "JPEGImages" / "val_00003.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError, match=r"val_00003\.jpg cannot be decoded .*expected a valid JPEG"):
        VOCDataset(voc_root, "val")[3]


def test_mask_size_differs_from_image(voc_root):
    path = voc_root / "SegmentationClassAug" / "val_00000.png"
    mask = np.asarray(Image.open(path))
    write_mask(path, mask[:-3])  # three rows short
    with pytest.raises(DatasetError, match=r"mask .*val_00000\.png is .* but image .*val_00000\.jpg"):
        VOCDataset(voc_root, "val")[0]


def test_mask_value_outside_classes(voc_root):
    path = voc_root / "SegmentationClassAug" / "val_00004.png"
    mask = np.asarray(Image.open(path)).copy()
    mask[0, 0] = 37  # VOC has classes 0..20 and 255
    write_mask(path, mask)
    with pytest.raises(DatasetError, match=r"mask .*val_00004\.png holds values \[37\]; expected 0\.\.20"):
        VOCDataset(voc_root, "val")[4]


def test_bad_mask_value_found_while_deriving_labels(voc_root):
    (voc_root / "cls_labels.npy").unlink()
    path = voc_root / "SegmentationClassAug" / "train_00001.png"
    write_mask(path, np.full((20, 20), 21, np.uint8))
    with pytest.raises(DatasetError, match=r"train_00001\.png holds values \[21\]"):
        VOCDataset(voc_root, "train")


def test_rgb_mask_is_rejected(voc_root):
    path = voc_root / "SegmentationClassAug" / "val_00000.png"
    Image.open(path).convert("RGB").save(path)
    with pytest.raises(DatasetError, match=r"mask .*val_00000\.png has PIL mode 'RGB'; expected an index PNG"):
        VOCDataset(voc_root, "val")[0]


def test_malformed_label_file(voc_root):
    np.save(voc_root / "cls_labels.npy", np.zeros(3))
    with pytest.raises(DatasetError, match=r"label file .*cls_labels\.npy does not hold records with fields name"):
        VOCDataset(voc_root, "val")


def test_label_vector_of_wrong_length(voc_root):
    save_label_file(voc_root / "cls_labels.npy", {"val_00000": np.zeros(21)})
    with pytest.raises(DatasetError, match=r"cls_labels\.npy: entry 'val_00000' has shape \(21,\)"):
        VOCDataset(voc_root, "val")


def test_image_with_neither_label_nor_mask(voc_root):
    (voc_root / "cls_labels.npy").unlink()
    (voc_root / "SegmentationClassAug" / "val_00002.png").unlink()
    with pytest.raises(DatasetError, match=r"image .*val_00002\.jpg has no image-level label"):
        VOCDataset(voc_root, "val", need_masks=False)
    assert VOCDataset(voc_root, "val", need_masks=False, need_labels=False).labels["val_00002"].sum() == 0


def test_coco_missing_image_folder(synthetic_tree, tmp_path):
    root = tmp_path / "coco"
    make_coco_tree(synthetic_tree, root)
    (root / "val2014").rename(root / "images")
    with pytest.raises(DatasetError, match=r"COCO root .* has no val2014/ nor JPEGImages/val2014/"):
        COCODataset(root, "val")


def test_coco_unknown_split(synthetic_tree, tmp_path):
    root = tmp_path / "coco"
    make_coco_tree(synthetic_tree, root)
    with pytest.raises(DatasetError, match=r"COCO split 'test' is unknown"):
        COCODataset(root, "test")


def test_build_dataset_needs_a_root_for_voc():
    with pytest.raises(DatasetError, match=r"'data.root' is empty"):
        build_dataset(build_config("voc").data, "val", 20)


def test_build_dataset_unknown_name():
    cfg = build_config("voc", {"data.dataset": "cityscapes", "data.root": "/x"}).data
    with pytest.raises(DatasetError, match=r"'data.dataset' is 'cityscapes'; expected one of voc, coco, synthetic"):
        build_dataset(cfg, "val", 20)


def test_synthetic_needs_20_classes(synthetic_tree):
    cfg = build_config("synthetic", {"data.root": str(synthetic_tree)}).data
    with pytest.raises(DatasetError, match=r"synthetic dataset has 20 classes; got num_classes=80"):
        build_dataset(cfg, "val", 80)
