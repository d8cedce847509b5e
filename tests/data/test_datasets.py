"""VOC / COCO / synthetic readers on small generated trees: items, labels, split lists, caching, build_dataset."""

from __future__ import annotations

import numpy as np
import pytest
from data_trees import NUM_TRAIN, NUM_VAL, make_coco_tree

from toco_ray.config import build_config
from toco_ray.data import COCODataset, SyntheticDataset, VOCDataset, build_dataset, labels_from_mask
from toco_ray.data import labels as labels_module
from toco_ray.data.labels import DERIVED_LABELS_FILE, load_label_file
from toco_ray.data.synthetic import GENERATOR_VERSION

pytestmark = pytest.mark.unit


def test_voc_items_have_the_common_format(synthetic_tree):
    ds = VOCDataset(synthetic_tree, "train")
    assert len(ds) == NUM_TRAIN
    item = ds[3]
    assert item["name"] == "train_00003"
    assert item["image"].dtype == np.uint8 and item["image"].ndim == 3 and item["image"].shape[2] == 3
    assert item["mask"].dtype == np.uint8 and item["mask"].shape == item["image"].shape[:2]
    assert item["label"].dtype == np.float32 and item["label"].shape == (20,)
    assert set(np.unique(item["mask"])) <= set(range(21)) | {255}
    np.testing.assert_array_equal(item["label"], labels_from_mask(item["mask"], 20))


def test_voc_train_aug_split_equals_train(synthetic_tree):
    assert VOCDataset(synthetic_tree, "train_aug").names == VOCDataset(synthetic_tree, "train").names


def test_labels_derived_from_masks_equal_the_label_file_and_are_cached(voc_root):
    from_file = load_label_file(voc_root / "cls_labels.npy", 20)
    (voc_root / "cls_labels.npy").unlink()
    ds = VOCDataset(voc_root, "val")
    for name in ds.names:
        np.testing.assert_array_equal(ds.labels[name], from_file[name])
    cached = load_label_file(voc_root / DERIVED_LABELS_FILE, 20)
    assert sorted(cached) == sorted(ds.names)
    # a second reader takes the labels from the cache: it never reads a mask
    VOCDataset(voc_root, "val", need_masks=False, cache_dir=voc_root / "unused")
    assert not (voc_root / "unused").exists()


def test_derived_label_cache_goes_to_cache_dir_when_root_is_read_only(voc_root, tmp_path, monkeypatch):
    (voc_root / "cls_labels.npy").unlink()
    real_save = labels_module.save_npy_atomic

    def save_refusing_root(path, obj):
        if path.parent == voc_root:
            raise PermissionError(13, "Read-only file system", str(path))
        return real_save(path, obj)

    monkeypatch.setattr(labels_module, "save_npy_atomic", save_refusing_root)
    ds = VOCDataset(voc_root, "train", cache_dir=tmp_path / "cache")
    assert not (voc_root / DERIVED_LABELS_FILE).exists()
    (cache_file,) = (tmp_path / "cache" / "labels").iterdir()
    assert sorted(load_label_file(cache_file, 20)) == sorted(ds.names)


def test_sbd_style_split_lines_and_root_level_list(voc_root):
    names = VOCDataset(voc_root, "val").names
    sbd = "".join(f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n" for n in names)
    (voc_root / "val_sbd.txt").write_text(sbd + "\n")  # trailing blank line is ignored
    assert VOCDataset(voc_root, "val_sbd").names == names


def test_segmentation_class_folder_is_accepted(voc_root):
    (voc_root / "SegmentationClassAug").rename(voc_root / "SegmentationClass")
    ds = VOCDataset(voc_root, "val")
    assert ds.mask_dir.name == "SegmentationClass" and ds[0]["mask"] is not None


def test_limit_keeps_the_first_names(synthetic_tree):
    assert VOCDataset(synthetic_tree, "train", limit=4).names == [f"train_{i:05d}" for i in range(4)]


def test_split_without_masks_reads_mask_none(voc_root):
    (voc_root / "SegmentationClassAug" / "val_00001.png").unlink()
    ds = VOCDataset(voc_root, "val", need_masks=False)
    assert ds[1]["mask"] is None and ds[1]["label"].sum() >= 1  # label still from cls_labels.npy


def test_coco_reader_on_a_generated_tree(synthetic_tree, tmp_path):
    root = tmp_path / "coco"
    renamed = make_coco_tree(synthetic_tree, root)
    voc_labels = load_label_file(synthetic_tree / "cls_labels.npy", 20)
    train = COCODataset(root, "train")
    assert len(train) == NUM_TRAIN and train.image_dir.name == "train2014"
    item = train[2]
    assert item["name"] == "COCO_train2014_000000000003" and item["label"].shape == (80,)
    # labels derived from the masks (no label file in the tree) match the generator's, padded to 80 classes
    np.testing.assert_array_equal(item["label"][:20], voc_labels[renamed[item["name"]]])
    assert item["label"][20:].sum() == 0
    val = COCODataset(root, "val")
    assert len(val) == NUM_VAL and val[0]["mask"].shape == val[0]["image"].shape[:2]


def test_coco_val_part_limit_and_list_from_folder(synthetic_tree, tmp_path):
    root = tmp_path / "coco"
    make_coco_tree(synthetic_tree, root)
    (root / "val.txt").unlink()  # the list is then the sorted image folder
    val = COCODataset(root, "val")
    assert val.names == sorted(val.names) and len(val) == NUM_VAL
    assert COCODataset(root, "val_part", limit=3).names == val.names[:3]
    assert COCODataset(root, "val_part").names == val.names  # fewer than 5000: all of them


def test_coco_jpegimages_layout(synthetic_tree, tmp_path):
    root = tmp_path / "coco"
    make_coco_tree(synthetic_tree, root)
    (root / "JPEGImages").mkdir()
    (root / "train2014").rename(root / "JPEGImages" / "train2014")
    assert COCODataset(root, "train").image_dir == root / "JPEGImages" / "train2014"


def test_build_dataset_picks_the_reader_and_limits_only_when_asked(synthetic_tree):
    cfg = build_config("synthetic", {"data.root": str(synthetic_tree), "data.val_limit": 2}).data
    train = build_dataset(cfg, cfg.train_split, 20)
    val = build_dataset(cfg, cfg.val_split, 20, limit=cfg.val_limit)
    assert isinstance(train, SyntheticDataset) and len(train) == NUM_TRAIN and len(val) == 2
    # data.val_limit cuts the in-training validation only: the split itself is whole
    assert len(build_dataset(cfg, cfg.val_split, 20)) == NUM_VAL
    voc = build_dataset(build_config("voc", {"data.root": str(synthetic_tree)}).data, "val", 20)
    assert type(voc) is VOCDataset and len(voc) == NUM_VAL


def test_default_synthetic_dataset_is_generated_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TOCO_RAY_CACHE", str(tmp_path))
    cfg = build_config("synthetic", {"data.num_train": 4, "data.num_val": 2, "data.seed": 3}).data
    ds = build_dataset(cfg, "train", 20)
    assert ds.root == tmp_path / f"synthetic-3-4-2-v{GENERATOR_VERSION}" and len(ds) == 4
    assert [p.name for p in tmp_path.iterdir()] == [ds.root.name]  # no temporary folder left behind
    stamp = (ds.root / "cls_labels.npy").stat().st_mtime_ns
    build_dataset(cfg, "val", 20)
    assert (ds.root / "cls_labels.npy").stat().st_mtime_ns == stamp  # not regenerated
