"""The synthetic generator: byte-level determinism, label/mask consistency and the properties that make
its weak supervision non-trivial."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from pipelines.make_synthetic import main as make_synthetic_main
from toco_ray.data import DatasetError, SyntheticStyle, VOCDataset, generate_dataset, labels_from_mask, render_sample
from toco_ray.data.labels import load_label_file
from toco_ray.data.synthetic import (
    CLASS_HUE_SPREAD,
    CLASS_HUES,
    CLASS_HUES_B,
    NUM_CLASSES,
    SIDE_RANGE,
    default_dataset_dir,
)

pytestmark = pytest.mark.unit


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_writes_byte_identical_files(tmp_path):
    a = _files(generate_dataset(tmp_path / "a", num_train=5, num_val=3, seed=11))
    b = _files(generate_dataset(tmp_path / "b", num_train=5, num_val=3, seed=11))
    c = _files(generate_dataset(tmp_path / "c", num_train=5, num_val=3, seed=12))
    assert a == b
    assert sorted(a) == sorted(c) and a["JPEGImages/train_00000.jpg"] != c["JPEGImages/train_00000.jpg"]
    expected = {"ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/train_aug.txt", "cls_labels.npy"}
    assert expected <= set(a) and len([k for k in a if k.startswith("JPEGImages/")]) == 8


def test_a_larger_dataset_extends_a_smaller_one(tmp_path):
    small = _files(generate_dataset(tmp_path / "s", num_train=2, num_val=1, seed=0))
    large = _files(generate_dataset(tmp_path / "l", num_train=4, num_val=2, seed=0))
    for key in ("JPEGImages/train_00001.jpg", "SegmentationClassAug/val_00000.png"):
        assert small[key] == large[key]


def test_label_file_matches_the_written_masks(synthetic_tree):
    labels = load_label_file(synthetic_tree / "cls_labels.npy", NUM_CLASSES)
    ds = VOCDataset(synthetic_tree, "train")
    assert sorted(labels) == sorted(ds.names + VOCDataset(synthetic_tree, "val").names)
    for i in range(len(ds)):
        item = ds[i]
        np.testing.assert_array_equal(labels[item["name"]], labels_from_mask(item["mask"], NUM_CLASSES))
        assert 1 <= item["label"].sum() <= 4


def test_mask_png_round_trips_exactly(tmp_path):
    # PIL must not renumber palette entries: the file holds the rendered class ids
    root = generate_dataset(tmp_path, num_train=3, num_val=0, seed=4)
    for i in range(3):
        _, mask = render_sample(np.random.default_rng([4, 0, i]))
        np.testing.assert_array_equal(
            np.asarray(Image.open(root / "SegmentationClassAug" / f"train_{i:05d}.png")), mask
        )


def test_image_properties_over_many_samples():
    sizes, class_counts, void_fractions = [], [], []
    instance_hues, background_saturation, object_saturation = {}, [], []
    for i in range(60):
        image, mask = render_sample(np.random.default_rng([0, 0, i]))
        h, w = mask.shape
        sizes.append((h, w))
        present = labels_from_mask(mask, NUM_CLASSES)
        class_counts.append(int(present.sum()))
        background = image[mask == 0].astype(np.float32)
        hsv = np.asarray(Image.fromarray(image).convert("HSV"), dtype=np.float32) / 255.0
        background_saturation.append(np.median(hsv[mask == 0, 1]))
        assert background.std(axis=0).min() > 10, "background must be textured, not a flat colour"
        # a void band separates every two different labels: no 4-neighbours carry two different non-void ids
        for a, b in ((mask[1:], mask[:-1]), (mask[:, 1:], mask[:, :-1])):
            assert not np.any((a != b) & (a != 255) & (b != 255))
        void_fractions.append(float((mask == 255).mean()))
        for c in np.flatnonzero(present):
            instance_hues.setdefault(int(c), []).extend(hsv[mask == c + 1, 0])
            object_saturation.append(np.median(hsv[mask == c + 1, 1]))
    lo, hi = SIDE_RANGE
    assert all(lo <= s <= hi and s % 16 for hw in sizes for s in hw) and all(h != w for h, w in sizes)
    assert set(class_counts) == {1, 2, 3, 4}
    assert min(void_fractions) > 0 and max(void_fractions) < 0.15
    # an instance is painted in its class's two hues (± the spread, plus pixel noise); the background is dull
    for c, hues in instance_hues.items():
        pair = np.array([CLASS_HUES[c], CLASS_HUES_B[c] % 1.0])
        distance = np.abs((np.asarray(hues)[:, None] - pair[None] + 0.5) % 1.0 - 0.5).min(axis=1)
        assert np.mean(distance <= CLASS_HUE_SPREAD + 0.03) > 0.9, f"class {c}: pixels off its two hues"
    assert np.median(background_saturation) < 0.25 < np.median(object_saturation)


def test_no_single_hue_identifies_a_class():
    # every hue is the first colour of one class and the second colour of another: only the pair is a class
    assert sorted(CLASS_HUES) == pytest.approx(sorted(h % 1.0 for h in CLASS_HUES_B))
    assert all(abs(a - b % 1.0) > 0.05 for a, b in zip(CLASS_HUES, CLASS_HUES_B))
    assert len(set(zip(CLASS_HUES, CLASS_HUES_B))) == NUM_CLASSES


def test_co_occurring_pairs_appear_together_more_often_than_chance():
    together, unpaired = {0: [], 2: []}, []
    for i in range(150):
        _, mask = render_sample(np.random.default_rng([1, 0, i]))
        present = set(np.flatnonzero(labels_from_mask(mask, NUM_CLASSES)).tolist())
        for a, partner in ((0, 13), (2, 9)):  # two of the configured pairs
            if a in present:
                together[a].append(partner in present)
        if 1 in present:
            unpaired.extend(b in present for b in (7, 8, 10, 12))  # classes never paired with class 1
    # unpaired: ~0.9 other classes per image spread over 19 → about 5 %; paired: P(partner) ≈ 0.6 or more
    assert np.mean(unpaired) < 0.15
    assert all(np.mean(v) > 0.4 for v in together.values())


def test_cli_writes_a_tree(tmp_path, capsys):
    make_synthetic_main(["--out", str(tmp_path / "cli"), "--num-train", "2", "--num-val", "1", "--seed", "3"])
    assert VOCDataset(tmp_path / "cli", "train_aug").names == ["train_00000", "train_00001"]
    assert "generated 3/3" in capsys.readouterr().err


# sha256 over the first four default-style training samples (image bytes, then mask bytes, for each): a change here
# means the default dataset's bytes changed, so GENERATOR_VERSION must be bumped with it
DEFAULT_STYLE_DIGEST = "5050583c1e9647891d469757d7b4142b6749192252997ff048c1fdec7e1910ce"


def test_the_default_style_draws_the_bytes_of_the_default_dataset():
    digest = hashlib.sha256()
    for i in range(4):
        image, mask = render_sample(np.random.default_rng([0, 0, i]))
        digest.update(image.tobytes())
        digest.update(mask.tobytes())
    assert digest.hexdigest() == DEFAULT_STYLE_DIGEST


def test_a_style_is_deterministic_and_has_a_cache_folder_of_its_own(tmp_path):
    big = SyntheticStyle(object_side=(0.6, 1.0), clutter=0.5)
    a = _files(generate_dataset(tmp_path / "a", num_train=3, num_val=2, seed=5, style=big))
    b = _files(generate_dataset(tmp_path / "b", num_train=3, num_val=2, seed=5, style=big))
    default = _files(generate_dataset(tmp_path / "d", num_train=3, num_val=2, seed=5))
    assert a == b
    assert a["JPEGImages/train_00000.jpg"] != default["JPEGImages/train_00000.jpg"]
    assert default_dataset_dir(5, 3, 2, tmp_path).name == "synthetic-5-3-2-v4"
    assert default_dataset_dir(5, 3, 2, tmp_path, big).name == "synthetic-5-3-2-v4-obj0.6-1-clutter0.5"


def test_larger_objects_cover_more_of_the_image():
    def foreground(style):
        masks = [render_sample(np.random.default_rng([2, 0, i]), style)[1] for i in range(40)]
        return np.mean([((m > 0) & (m != 255)).mean() for m in masks])

    small, large = foreground(SyntheticStyle()), foreground(SyntheticStyle(object_side=(0.6, 1.0)))
    assert large > 1.5 * small


def test_no_clutter_leaves_a_smoother_background():
    def roughness(style):
        values = []
        for i in range(20):
            image, mask = render_sample(np.random.default_rng([3, 0, i]), style)
            grad = np.abs(np.diff(image.astype(np.float32).mean(axis=2), axis=1))
            values.append(grad[mask[:, 1:] == 0].mean())  # background pixels only
        return np.mean(values)

    # the per-pixel noise (NOISE_STD) stays, so only the clutter's share of the roughness goes away
    assert roughness(SyntheticStyle(clutter=0.0)) < roughness(SyntheticStyle(clutter=2.0))


@pytest.mark.parametrize("style", [{"object_side": (0.8, 0.4)}, {"object_side": (0.01, 0.5)}, {"clutter": -1.0}])
def test_a_style_out_of_range_is_refused(style):
    with pytest.raises(DatasetError, match="object_side|clutter"):
        SyntheticStyle(**style)


def test_the_cli_refuses_a_bad_object_side_with_one_line(tmp_path, capsys):
    assert make_synthetic_main(["--out", str(tmp_path / "x"), "--object-side", "0.9", "0.2"]) == 2
    assert "object_side" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
