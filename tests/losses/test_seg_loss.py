import math

import pytest
import torch

from toco_ray.losses import seg_loss

pytestmark = pytest.mark.unit


def _logits(*pixels):
    """(background, class 1) logits per pixel → 1×2×1×n."""
    return torch.tensor(pixels, dtype=torch.float64).T.reshape(1, 2, 1, len(pixels))


def test_seg_loss_balances_background_and_foreground():
    ln3 = math.log(3.0)
    logits = _logits((0.0, 0.0), (ln3, 0.0), (0.0, ln3), (5.0, -5.0))
    labels = torch.tensor([[[0, 0, 1, 255]]])
    # bg pixels: (0,0) → CE log 2; (ln3,0) → −log(3/4) = log(4/3); bg term = (log 2 + log 4/3)/2 = ½·log(8/3)
    # fg pixel: (0,ln3) with label 1 → log(4/3); the 255 pixel is in neither term
    # loss = ½·½·log(8/3) + ½·log(4/3) = 0.245206 + 0.143841 = 0.389048
    expected = 0.25 * math.log(8 / 3) + 0.5 * math.log(4 / 3)
    assert seg_loss(logits, labels).item() == pytest.approx(expected)


def test_seg_loss_two_pixels():
    logits = _logits((0.0, 0.0), (0.0, math.log(3.0)))
    labels = torch.tensor([[[0, 1]]])
    # ½·log 2 + ½·log(4/3) = ½·log(8/3) = 0.490415
    assert seg_loss(logits, labels).item() == pytest.approx(0.5 * math.log(8 / 3))


def test_seg_loss_all_ignored_is_zero_with_finite_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = seg_loss(logits, torch.full((2, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


def test_seg_loss_background_only_has_no_foreground_term():
    logits = _logits((0.0, 0.0), (math.log(3.0), 0.0))
    labels = torch.tensor([[[0, 0]]])
    # bg term (log 2 + log 4/3)/2, fg term 0 (no valid pixel, not NaN) → ½·bg term = ¼·log(8/3)
    loss = seg_loss(logits, labels)
    assert loss.item() == pytest.approx(0.25 * math.log(8 / 3))


def test_seg_loss_foreground_only_has_no_background_term():
    logits = _logits((0.0, 0.0), (0.0, math.log(3.0)))
    labels = torch.tensor([[[1, 1]]])
    # fg term (log 2 + log 4/3)/2, bg term 0 → ¼·log(8/3)
    assert seg_loss(logits, labels).item() == pytest.approx(0.25 * math.log(8 / 3))
