from types import SimpleNamespace

import pytest
import torch

from toco_ray.cam import (
    box_to_grid,
    cam_to_label,
    cam_to_roi,
    cam_to_token_labels,
    multiscale_cam,
    normalize_cam,
)
from toco_ray.config import build_config
from toco_ray.models import build_model, tokens_to_pixels

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(build_config("synthetic").model).eval()


class ColumnWeightedModel:
    """Patch size 1; the CAM of an image is its first channel times the column index + 1 (not flip-symmetric)."""

    patch_size = (1, 1)

    def encode(self, images):
        return SimpleNamespace(patches=images, aux=images)

    def cam_maps(self, tokens):
        ramp = torch.arange(1, tokens.patches.shape[-1] + 1, dtype=torch.float32)
        cam = tokens.patches[:, :1] * ramp
        return cam, -cam

    def to_pixels(self, maps, image_size, out_size=None):
        return tokens_to_pixels(maps, image_size, 1, out_size)


def test_flip_max_relu_and_normalisation_by_hand():
    image = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2).expand(1, 3, 1, 2)
    cam, aux_cam = multiscale_cam(ColumnWeightedModel(), image, scales=(1.0,))
    # cam: plain [1·1, 0·2] = [1, 0]; flipped image [0, 1] → [0·1, 1·2] = [0, 2], flipped back [2, 0];
    # max → [2, 0]; minus min 0, divided by 2 + 1e-5
    torch.testing.assert_close(cam, torch.tensor([2 / (2 + 1e-5), 0.0]).reshape(1, 1, 1, 2))
    # aux = −cam: max([−1, 0], [−2, 0]) = [−1, 0], ReLU → [0, 0], normalised 0 / (0 + 1e-5) = 0
    assert torch.equal(aux_cam, torch.zeros(1, 1, 1, 2))


def test_normalize_cam_by_hand():
    cam = torch.tensor([[1.0, 3.0], [2.0, 5.0]]).reshape(1, 1, 2, 2)
    # minus min 1 → [[0, 2], [1, 4]], divided by 4 + 1e-5
    expected = torch.tensor([[0.0, 2.0], [1.0, 4.0]]).reshape(1, 1, 2, 2) / (4 + 1e-5)
    torch.testing.assert_close(normalize_cam(cam), expected)


def test_multiscale_cam_shapes_and_range(model):
    images = torch.randn(2, 3, 100, 84)  # not multiples of the patch size 8
    cam, aux_cam = multiscale_cam(model, images, scales=(1.0, 0.5, 1.5))
    assert cam.shape == aux_cam.shape == (2, 20, 100, 84) and cam.dtype == torch.float32
    for maps in (cam, aux_cam):
        assert torch.all(maps.amin(dim=(-2, -1)) == 0)
        peak = maps.amax(dim=(-2, -1))
        # a class whose summed CAM is not flat peaks at M / (M + 1e-5) ≈ 1; a flat one (all ReLU'd away) is 0
        assert torch.all(((peak - 1).abs() < 1e-3) | (peak == 0)) and (peak > 0.99).any()


@pytest.mark.parametrize("size", [(64, 48), (100, 84)])
def test_base_from_the_training_forward_gives_the_identical_cam(model, size):
    images = torch.randn(2, 3, *size)
    scales = (1.0, 0.5, 1.5)
    encoded = []
    original = model.encode

    def counting_encode(x, **kwargs):
        encoded.append(x.shape[0])
        return original(x, **kwargs)

    model.encode = counting_encode
    try:
        plain = multiscale_cam(model, images, scales)
        calls_plain = sum(encoded)
        out = model(images)  # grad-mode forward, as in training
        encoded.clear()
        reused = multiscale_cam(model, images, scales, base=model.cam_maps(out))
        calls_reused = sum(encoded)
    finally:
        del model.encode
    assert torch.equal(plain[0], reused[0]) and torch.equal(plain[1], reused[1])
    # images encoded: scale 1 → 2 plain + 2 flipped, 0.5 → 4, 1.5 → 4 = 12; with base the 2 plain are skipped
    assert (calls_plain, calls_reused) == (12, 10)


def test_base_needs_scale_one(model):
    images = torch.randn(1, 3, 32, 32)
    base = model.cam_maps(model.encode(images))
    with pytest.raises(ValueError, match="scale 1.0"):
        multiscale_cam(model, images, scales=(0.5,), base=base)


def test_token_labels_by_hand_with_values_at_the_thresholds():
    # 2×2 CAM on a 2×2 grid (identity resize); classes 0 and 1 present, class 2 absent
    cam = torch.tensor(
        [
            [[0.70, 0.71], [0.25, 0.30]],  # class 0 (label 1)
            [[0.10, 0.20], [0.20, 0.80]],  # class 1 (label 2)
            [[0.90, 0.90], [0.90, 0.90]],  # class 2, absent: ignored
        ]
    )[None]
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    box = torch.tensor([[0, 2, 0, 2]])
    out = cam_to_token_labels(cam, labels, box, grid=(2, 2), high=0.7, low=0.25)
    # v = [[0.70, 0.71], [0.25, 0.80]]: 0.70 is not > 0.7 → 255; 0.71 → class 0 → 1;
    # 0.25 ≤ 0.25 → 0; 0.80 → class 1 → 2
    assert out.tolist() == [[[255, 1], [0, 2]]]
    assert out.dtype == torch.long


def test_valid_box_is_scaled_to_the_token_grid():
    cam = torch.ones(1, 1, 16, 16)  # all confident foreground; grid 2×2 → stride 8
    labels = torch.ones(1, 1)
    grid_of = lambda box: cam_to_token_labels(  # noqa: E731
        cam, labels, torch.tensor([box]), grid=(2, 2), high=0.7, low=0.25
    ).tolist()
    # rows [4, 16): ceil(4/8) = 1 .. floor(16/8) = 2 → token row 1 only (row 0 is half padding)
    assert grid_of([4, 16, 0, 16]) == [[[255, 255], [1, 1]]]
    # rows [0, 12), cols [0, 16): floor(12/8) = 1 → token row 0 only
    assert grid_of([0, 12, 0, 16]) == [[[1, 1], [255, 255]]]
    # a 448 crop with a 300×438 image at column 10 on the 28×28 grid (stride 16):
    # rows 0 .. floor(300/16) = 18; cols ceil(10/16) = 1 .. floor(448/16) = 28
    assert box_to_grid(torch.tensor([[0, 300, 10, 448]]), (448, 448), (28, 28)).tolist() == [[0, 18, 1, 28]]


def test_compat_unscaled_box_reproduces_the_reference_token_labels():
    # The reference slices the 28×28 token labels with the pixel box of the 448 crop. A 4×4 grid over 32×32
    # pixels (stride 8) shows both failure modes by hand:
    cam = torch.ones(1, 1, 32, 32)
    labels = torch.ones(1, 1)
    grid_of = lambda box, scale: cam_to_token_labels(  # noqa: E731
        cam, labels, torch.tensor([box]), grid=(4, 4), high=0.7, low=0.25, scale_box=scale
    ).tolist()
    # rows [8, 32): fixed → token rows 1..3; reference → rows 8:32 of a 4-row grid, i.e. none: PTC is lost
    assert grid_of([8, 32, 0, 32], True) == [[[255] * 4, [1] * 4, [1] * 4, [1] * 4]]
    assert grid_of([8, 32, 0, 32], False) == [[[255] * 4] * 4]
    # rows [0, 20), cols [2, 32): fixed → rows 0..1, cols 1..3; reference → rows 0:20 and cols 2:32 of the grid,
    # i.e. every row (padding tokens labelled) and columns 2, 3 only
    assert grid_of([0, 20, 2, 32], True) == [[[255, 1, 1, 1], [255, 1, 1, 1], [255] * 4, [255] * 4]]
    assert grid_of([0, 20, 2, 32], False) == [[[255, 255, 1, 1]] * 4]


def test_token_labels_with_padded_grid():
    # a 12×12 image, patch 8 → grid 2×2 covering 16×16; the CAM is zero-padded to 16×16 before resizing.
    cam = torch.ones(1, 1, 12, 12)
    out = cam_to_token_labels(
        cam, torch.ones(1, 1), torch.tensor([[0, 12, 0, 12]]), grid=(2, 2), high=0.7, low=0.25, patch_size=8
    )
    # token (0,0) samples pixel 3.5 ((0 + 0.5)·8 − 0.5) → 1.0 > 0.7 → label 1;
    # box rows/cols 0 .. floor(12/8) = 1 → the other tokens (partly padding) are 255
    assert out.tolist() == [[[1, 255], [255, 255]]]


def test_roi_map_by_hand():
    cam = torch.tensor(
        [
            [[0.25, 0.26, 0.70, 0.69]],  # class 0, present
            [[0.90, 0.90, 0.00, 0.90]],  # class 1, absent: ignored
        ]
    )[None]
    roi = cam_to_roi(cam, torch.tensor([[1.0, 0.0]]), high=0.7, low=0.25)
    # 0.25 ≤ low → 0; 0.26 → 1; 0.70 ≥ high → 2; 0.69 → 1
    assert roi.tolist() == [[[0, 1, 2, 1]]]


def test_cam_to_label_by_hand():
    cam = torch.tensor(
        [
            [[0.50, 0.60, 0.20, 0.10]],  # class 0 → label 1
            [[0.40, 0.70, 0.90, 0.30]],  # class 1 → label 2
        ]
    )[None].repeat(2, 1, 1, 1)
    labels = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    out = cam_to_label(cam, labels, bkg_score=0.5)
    # image 0: [0.5 | 0.5, 0.4] tie → background 0; [0.5 | 0.6, 0.7] → 2; [0.5 | 0.2, 0.9] → 2; [0.5 | 0.1, 0.3] → 0
    # image 1 (class 1 absent): [0.5|0.5] → 0; [0.5|0.6] → 1; [0.5|0.2] → 0; [0.5|0.1] → 0
    assert out.tolist() == [[[0, 2, 2, 0]], [[0, 1, 0, 0]]]
    boxed = cam_to_label(cam, labels, bkg_score=0.5, valid_box=torch.tensor([[0, 1, 1, 3], [0, 1, 0, 4]]))
    assert boxed.tolist() == [[[255, 2, 2, 255]], [[0, 1, 0, 0]]]
