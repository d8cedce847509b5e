"""Training/eval views: shapes, determinism, the valid box and the pixel alignment of the local view."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toco_ray.config import CompatConfig, DataConfig
from toco_ray.data import IMAGENET_MEAN, IMAGENET_STD, TrainViews, ValViews, ViewDataset, collate, denormalize
from toco_ray.data.transforms import PhotometricAug, normalize
from toco_ray.data.views import sample_crop_geometry

pytestmark = pytest.mark.unit

NO_PHOTOMETRIC = {"color_jitter_p": 0.0, "grayscale_p": 0.0, "main_blur_p": 0.0, "local_blur_p": 0.0}


def _item(image: np.ndarray, num_classes: int = 20) -> dict:
    label = np.zeros(num_classes, np.float32)
    label[3] = 1.0
    return {"name": "img", "image": image, "mask": None, "label": label}


def _views(seed: int, image: np.ndarray, compat: CompatConfig | None = None, **cfg) -> dict:
    return TrainViews(DataConfig(**cfg), compat)(_item(image), np.random.default_rng(seed))


def _pixels(view: torch.Tensor) -> torch.Tensor:
    """A normalised view back to 0..255 values."""
    return (denormalize(view) * 255).round()


def test_shapes_and_dtypes():
    out = _views(0, np.random.default_rng(1).integers(0, 256, (70, 90, 3), dtype=np.uint8), crop_size=64)
    for key in ("image", "local_view", "global2"):
        assert out[key].shape == (3, 64, 64) and out[key].dtype == torch.float32
    assert out["valid_box"].dtype == torch.int64 and out["valid_box"].shape == (4,)
    assert out["label"].dtype == torch.float32 and out["label"][3] == 1 and out["name"] == "img"


def test_same_seed_same_views_other_seed_other_views():
    image = np.random.default_rng(2).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    a, b, c = _views(5, image, crop_size=48), _views(5, image, crop_size=48), _views(6, image, crop_size=48)
    for key in ("image", "local_view", "global2", "valid_box"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["image"], c["image"])


@settings(max_examples=150, deadline=None, database=None)
@given(
    height=st.integers(6, 90),
    width=st.integers(6, 90),
    crop=st.integers(8, 72),
    scale=st.one_of(st.sampled_from([0.5, 2.0]), st.floats(0.5, 2.0)),
    seed=st.integers(0, 2**32 - 1),
)
def test_valid_box_is_exactly_the_non_padded_pixels(height, width, crop, scale, seed):
    # A white image stays white through resize/flip/crop; the padding is black (uint8 0) before normalisation.
    # So the white pixels are the image content, the black ones padding, and the white ones fill the box exactly.
    white = np.full((height, width, 3), 255, np.uint8)
    out = _views(seed, white, crop_size=crop, scale_range=(scale, scale), **NO_PHOTOMETRIC)
    y0, y1, x0, x1 = out["valid_box"].tolist()
    assert 0 <= y0 < y1 <= crop and 0 <= x0 < x1 <= crop
    expected = torch.zeros(crop, crop, dtype=torch.bool)
    expected[y0:y1, x0:x1] = True
    for key in ("image", "local_view"):
        pixels = _pixels(out[key])
        assert torch.equal(pixels.eq(255).all(0), expected)
        assert torch.equal(pixels.eq(0).all(0), ~expected)


def test_padding_is_black_before_normalisation():
    # 40×40 image in a 64 crop at scale 1: padding. Black normalises to −mean/std (≈ −2.1, −2.0, −1.8),
    # not to 0 (the ImageNet mean grey).
    image = np.full((40, 40, 3), 128, np.uint8)
    out = _views(0, image, crop_size=64, scale_range=(1.0, 1.0), **NO_PHOTOMETRIC)
    black = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    y0, y1, x0, x1 = out["valid_box"].tolist()
    assert (y1 - y0, x1 - x0) == (40, 40)
    torch.testing.assert_close(out["image"][:, 0, 0], black)
    torch.testing.assert_close(out["image"][:, 63, 63], black)


def test_blur_runs_on_the_whole_padded_crop():
    # The main view is always blurred (main_blur_p 1.0, the reference's): white content bleeds into the black
    # padding next to the box, as when the reference blurs its padded crop. The local view (p 0) stays sharp.
    white = np.full((40, 40, 3), 255, np.uint8)
    out = _views(0, white, crop_size=64, scale_range=(1.0, 1.0), color_jitter_p=0.0, grayscale_p=0.0,
                 main_blur_p=1.0, local_blur_p=0.0)
    y0, y1, x0, x1 = out["valid_box"].tolist()
    row = (y0 + y1) // 2
    outside = x0 - 1 if x0 > 0 else x1
    assert _pixels(out["image"])[:, row, outside].min() > 0
    assert _pixels(out["local_view"])[:, row, outside].max() == 0


def test_main_view_blur_p_1_and_local_view_blur_p_half():
    cfg = DataConfig()
    assert (cfg.main_blur_p, cfg.local_blur_p) == (1.0, 0.5)
    views = TrainViews(cfg)
    assert views.main_aug.blur_p == 1.0 and views.local_aug.blur_p == 0.5


def test_both_flips_and_both_padding_regimes_occur():
    flips, padded, cropped = set(), False, False
    for seed in range(40):
        g = sample_crop_geometry(100, 120, 96, (0.5, 2.0), np.random.default_rng(seed))
        flips.add(g.flip)
        padded |= g.scaled_size[0] < 96
        cropped |= g.scaled_size[0] > 96
    assert flips == {False, True} and padded and cropped


@pytest.mark.parametrize("seed", range(12))
def test_local_view_shows_the_same_scene_point_as_the_main_view(seed):
    # Pixel (y, x) of a ramp image has R = y, G = x: the decoded value at a crop pixel tells which source
    # point it shows. Both views must show the point predicted by the crop geometry.
    height, width, crop = 150, 190, 96
    yy, xx = np.mgrid[0:height, 0:width]
    ramp = np.stack([yy, xx, np.full_like(yy, 7)], axis=-1).astype(np.uint8)
    out = _views(seed, ramp, crop_size=crop, **NO_PHOTOMETRIC)
    # the geometry is the first thing drawn from the generator
    geometry = sample_crop_geometry(height, width, crop, (0.5, 2.0), np.random.default_rng(seed))
    assert out["valid_box"].tolist() == list(geometry.dst)
    assert torch.equal(out["image"], out["local_view"])
    decoded = denormalize(out["local_view"]) * 255
    (h_s, w_s), (sy0, _, sx0, _), (dy0, dy1, dx0, dx1) = geometry.scaled_size, geometry.src, geometry.dst
    rows, cols = np.arange(dy0, dy1), np.arange(dx0, dx1)
    y_scaled, x_scaled = rows - dy0 + sy0, cols - dx0 + sx0
    if geometry.flip:
        x_scaled = w_s - 1 - x_scaled
    # pixel centres: source coordinate = (scaled + 0.5) · (source size / scaled size) − 0.5
    y_src = (y_scaled + 0.5) * height / h_s - 0.5
    x_src = (x_scaled + 0.5) * width / w_s - 0.5
    margin = 2 * max(1.0, height / h_s)  # the resampling filter is clamped near the image border
    keep_r = (y_src > margin) & (y_src < height - 1 - margin)
    keep_c = (x_src > margin) & (x_src < width - 1 - margin)
    red = decoded[0, dy0:dy1, dx0:dx1][keep_r][:, keep_c].numpy()
    green = decoded[1, dy0:dy1, dx0:dx1][keep_r][:, keep_c].numpy()
    np.testing.assert_allclose(red, np.broadcast_to(y_src[keep_r, None], red.shape), atol=1.0)
    np.testing.assert_allclose(green, np.broadcast_to(x_src[None, keep_c], green.shape), atol=1.0)


def test_local_view_has_its_own_photometric_draw():
    image = np.random.default_rng(3).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    out = _views(1, image, crop_size=64, color_jitter_p=1.0)
    assert not torch.equal(out["image"], out["local_view"])


def _ramp() -> np.ndarray:
    yy, xx = np.mgrid[0:70, 0:90]
    return np.stack([yy, xx, np.full_like(yy, 7)], axis=-1).astype(np.uint8)


def _flipped(view: torch.Tensor, fixed: torch.Tensor) -> bool:
    """Whether ``view`` is ``fixed`` flipped left-right (it must be one of the two)."""
    if torch.equal(view, fixed):
        return False
    assert torch.equal(view, fixed.flip(-1))
    return True


def _compat_views(seed: int, compat: CompatConfig) -> tuple[dict, dict]:
    fixed = _views(seed, _ramp(), crop_size=48, **NO_PHOTOMETRIC)
    return fixed, _views(seed, _ramp(), compat, crop_size=48, **NO_PHOTOMETRIC)


def test_compat_box_before_flip_flips_both_views_but_not_the_box():
    flips = set()
    for seed in range(12):
        fixed, compat = _compat_views(seed, CompatConfig(box_before_flip=True))
        main = _flipped(compat["image"], fixed["image"])
        assert _flipped(compat["local_view"], fixed["local_view"]) == main  # the local view stays aligned
        assert torch.equal(compat["valid_box"], fixed["valid_box"])  # the box of the unflipped crop
        assert torch.equal(compat["global2"], fixed["global2"])  # nothing else changes
        flips.add(main)
    assert flips == {False, True}


def test_compat_local_view_flip_misaligns_only_the_local_view():
    flips = set()
    for seed in range(12):
        fixed, compat = _compat_views(seed, CompatConfig(local_view_flip=True))
        assert torch.equal(compat["image"], fixed["image"])
        flips.add(_flipped(compat["local_view"], fixed["local_view"]))
    assert flips == {False, True}


def test_compat_reference_flips_main_and_local_views_independently():
    outcomes = set()
    for seed in range(24):
        fixed, ref = _compat_views(seed, CompatConfig(reference=True))
        outcomes.add((_flipped(ref["image"], fixed["image"]), _flipped(ref["local_view"], fixed["local_view"])))
    assert len(outcomes) == 4  # every combination occurs: misaligned half of the time


def test_photometric_aug_draws_the_same_amount_whatever_fires():
    # Later draws (the second global view) must not depend on which photometric ops fired.
    image = torch.rand(3, 16, 16)
    on = PhotometricAug((0.4, 0.4, 0.2, 0.1), 1.0, 1.0, 1.0, 1.0)
    off = PhotometricAug((0.4, 0.4, 0.2, 0.1), 0.0, 0.0, 0.0, 0.0)
    rng_on, rng_off = np.random.default_rng(0), np.random.default_rng(0)
    changed = on(image, rng_on)
    assert torch.equal(off(image, rng_off), image) and not torch.equal(changed, image)
    assert rng_on.random() == rng_off.random()


def test_normalize_constants_and_round_trip():
    white = torch.ones(3, 2, 2)
    # (1 − 0.485) / 0.229 = 2.2489 for the red channel
    assert normalize(white)[0, 0, 0].item() == pytest.approx((1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0])
    x = torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(denormalize(normalize(x)), x, atol=1e-6, rtol=0)


def test_val_views_resized_and_native():
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    mask = np.zeros((37, 53), np.uint8)
    mask[5:9, 5:9] = 255
    item = {**_item(image), "mask": mask}
    out = ValViews(32)(item)
    assert out["image"].shape == (3, 32, 32) and out["orig_size"] == (37, 53)
    assert out["mask"].dtype == torch.int64 and out["mask"].shape == (37, 53) and out["mask"].max() == 255
    native = ValViews(None)(item)
    assert native["image"].shape == (3, 37, 53)
    torch.testing.assert_close(denormalize(native["image"]) * 255, torch.from_numpy(image).permute(2, 0, 1).float())


def test_collate_stacks_tensors_and_keeps_lists():
    rng = np.random.default_rng(0)
    items = []
    for h, w in ((30, 40), (25, 33)):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        items.append(ValViews(16)({**_item(image), "mask": np.zeros((h, w), np.uint8)}))
    batch = collate(items)
    assert batch["image"].shape == (2, 3, 16, 16) and batch["label"].shape == (2, 20)
    assert batch["name"] == ["img", "img"] and [m.shape for m in batch["mask"]] == [(30, 40), (25, 33)]
    assert batch["orig_size"] == [(30, 40), (25, 33)]
    native = collate(
        [ValViews(None)(i) for i in ({**_item(np.zeros((9, 9, 3), np.uint8))}, _item(np.zeros((8, 9, 3), np.uint8)))]
    )
    assert isinstance(native["image"], list) and native["mask"] == [None, None]


def test_view_dataset_seeds_by_epoch_and_index(synthetic_tree):
    from toco_ray.data import VOCDataset

    ds = ViewDataset(VOCDataset(synthetic_tree, "train"), TrainViews(DataConfig(crop_size=32)), seed=7)
    first = ds[2]["image"]
    assert torch.equal(ds[2]["image"], first)
    ds.set_epoch(1)
    assert not torch.equal(ds[2]["image"], first)
    train_batch = collate([ds[0], ds[1]])
    assert train_batch["image"].shape == (2, 3, 32, 32) and train_batch["valid_box"].shape == (2, 4)
