import math

import pytest
import torch

from toco_ray.losses import cls_loss

pytestmark = pytest.mark.unit


def test_cls_loss_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    labels = torch.tensor([[1, 0]])
    # present class, x=0: −log σ(0) = log 2; absent class, x=ln 3: −log σ(−ln 3) = −log(1/4) = log 4
    # mean over the 2 classes: (log 2 + log 4) / 2 = 1.5·log 2
    assert cls_loss(logits, labels).item() == pytest.approx(1.5 * math.log(2.0))


def test_cls_loss_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ"):
        cls_loss(torch.zeros(2, 3), torch.zeros(2, 4))
