"""Per-image predictions: flip-sum and max over scales, CAM labels with one and two background scores, CRF keys."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from toco_ray.config import build_config
from toco_ray.inference.checkpoint import build_inference_model
from toco_ray.inference.predict import (
    cam_bkg_probs,
    cam_label,
    crf_cam_label,
    image_tensor,
    predict_cam_label,
    predict_cams,
    predict_seg,
)
from toco_ray.models import tokens_to_pixels

pytestmark = pytest.mark.unit


class MeanLogitNet(nn.Module):
    """Patch size 1; background logit 0, class-1 logit = channel mean × (input height / 8)."""

    def forward(self, x, with_seg=True):
        fg = x.mean(dim=1, keepdim=True) * (x.shape[-2] / 8)
        return SimpleNamespace(seg_logits=torch.cat([torch.zeros_like(fg), fg], dim=1))

    def to_pixels(self, maps, image_size, out_size=None):
        return tokens_to_pixels(maps, image_size, 1, out_size)


def test_flipped_logits_are_flipped_back_before_the_sum():
    image = torch.zeros(1, 3, 8, 8)
    image[..., :4] = 1.0  # left half 1, right half 0
    probs = predict_seg(MeanLogitNet(), image, scales=(1.0,))
    # logit = 1 (left) + unflipped 1 (left) = 2 → sigmoid(2) = 0.8808; right 0 + 0 → 0.5.
    # Without the unflip both halves would get 1 → 0.7311.
    assert probs[0, 1, :, :4] == pytest.approx(torch.full((8, 4), 0.8808), abs=1e-4)
    assert probs[0, 1, :, 4:] == pytest.approx(torch.full((8, 4), 0.5), abs=1e-4)
    assert torch.allclose(probs.sum(1), torch.ones(1, 8, 8))


def test_max_over_scales_then_softmax():
    image = torch.ones(1, 3, 8, 8)
    probs = predict_seg(MeanLogitNet(), image, scales=(0.5, 1.0, 1.5))
    # scale s: input height 8s → logit s, flip-sum 2s; max over scales 2·1.5 = 3 → sigmoid(3) = 0.9526
    # (a sum over scales would give sigmoid(6) = 0.9975, a mean sigmoid(2) = 0.8808)
    assert probs[0, 1] == pytest.approx(torch.full((8, 8), 0.9526), abs=1e-4)


def test_coco_protocol_resizes_the_input_takes_the_flip_max_and_sums_the_scales():
    image = torch.zeros(1, 3, 12, 12)
    image[..., :6] = 1.0  # left half 1, right half 0
    coco = predict_seg(MeanLogitNet(), image, scales=(0.5, 1.5), protocol="coco", input_size=8)
    # resized to 8×8 first: scale s → height 8s → logit s on the left half, 0 on the right. Flip-max keeps s
    # (flip-sum would give 2s); summed over the scales 0.5 + 1.5 = 2 → sigmoid(2) = 0.8808 on the left, 0.5 right.
    assert coco.shape == (1, 2, 12, 12)
    assert coco[0, 1, :, :4] == pytest.approx(torch.full((12, 4), 0.8808), abs=1e-3)
    assert coco[0, 1, :, 8:] == pytest.approx(torch.full((12, 4), 0.5), abs=1e-3)
    # the voc protocol on the same image: native 12 → logit 1.5s, flip-sum 3s, max over scales 4.5 → 0.9890
    voc = predict_seg(MeanLogitNet(), image, scales=(0.5, 1.5))
    assert voc[0, 1, :, :4] == pytest.approx(torch.full((12, 4), 0.9890), abs=1e-3)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    cfg = build_config("synthetic", {"model.depth": 2, "model.aux_layer": -1})
    return build_inference_model(cfg).eval(), cfg


def test_real_network_single_scale_equals_two_separate_passes(tiny_model):
    model, _ = tiny_model
    image = np.random.default_rng(0).integers(0, 256, (37, 52, 3), dtype=np.uint8)  # not a patch multiple
    x = image_tensor(image)
    probs = predict_seg(model, x, scales=(1.0,))
    with torch.no_grad():
        plain = model.to_pixels(model(x).seg_logits, (37, 52))
        flipped = model.to_pixels(model(x.flip(-1)).seg_logits, (37, 52)).flip(-1)
    assert probs.shape == (1, 21, 37, 52)
    torch.testing.assert_close(probs, (plain + flipped).softmax(1), atol=1e-5, rtol=1e-5)


def test_cams_come_back_at_native_size_in_unit_range(tiny_model):
    model, cfg = tiny_model
    image = np.random.default_rng(1).integers(0, 256, (45, 30, 3), dtype=np.uint8)
    cam, aux_cam = predict_cams(model, image, cfg.cam.scales, input_size=32)
    assert cam.shape == aux_cam.shape == (1, 20, 45, 30)
    assert float(cam.min()) >= 0.0 and float(cam.max()) <= 1.0


def test_dual_threshold_pseudo_label_by_hand():
    # 3 pixels; class 1 present with CAM 0.8 / 0.5 / 0.1; class 2 absent with 0.9 everywhere (must be ignored)
    cam = torch.tensor([[[0.8, 0.5, 0.1]], [[0.9, 0.9, 0.9]]])
    label = torch.tensor([1.0, 0.0])
    # high 0.7: 0.8 > 0.7 → class 1; low 0.25: 0.5 > 0.25 → class 1 but not confident → 255; 0.1 ≤ 0.25 → 0
    assert predict_cam_label(cam, label, bkg_high=0.7, bkg_low=0.25).tolist() == [[1, 255, 0]]


def test_single_background_score_ties_go_to_background():
    cam = torch.tensor([[[0.5, 0.51]]])
    assert cam_label(cam, torch.tensor([1.0]), bkg_score=0.5).tolist() == [[0, 1]]


def test_crf_input_is_a_softmax_over_background_and_present_classes():
    cam = torch.tensor([[[0.2]], [[0.9]], [[1.0]]])  # 3 classes, 1 pixel
    probs, keys = cam_bkg_probs(cam, torch.tensor([0.0, 1.0, 1.0]), bkg_score=0.7)
    assert keys.tolist() == [0, 2, 3]  # background, then classes 2 and 3 (class 1 is absent)
    expected = torch.tensor([0.7, 0.9, 1.0]).exp() / torch.tensor([0.7, 0.9, 1.0]).exp().sum()
    torch.testing.assert_close(probs[:, 0, 0], expected)


def test_crf_pseudo_label_maps_channels_back_to_class_ids():
    image = np.zeros((20, 20, 3), np.uint8)
    image[:, :10] = 220  # bright left half, dark right half
    cam = torch.zeros(3, 20, 20)
    cam[2, :, :10] = 1.0  # class 3 (index 2) fires on the left half only
    label = torch.tensor([0.0, 0.0, 1.0])
    out = crf_cam_label(image, cam, label, 0.7, 0.25, build_config("voc").eval)
    # left: softmax(bkg 0.7, cam 1.0) favours the class in both passes → 3; right: bkg beats cam 0 → 0
    assert (out[:, :10] == 3).all() and (out[:, 10:] == 0).all()


def test_crf_pseudo_label_without_present_class_is_background():
    image = np.zeros((6, 6, 3), np.uint8)
    out = crf_cam_label(image, torch.rand(4, 6, 6), torch.zeros(4), 0.7, 0.25, build_config("voc").eval)
    assert out.shape == (6, 6) and (out == 0).all()
