import numpy as np
import pytest
import torch

from toco_ray.metrics import ConfusionMeter, confusion_matrix, iou_from_confusion

pytestmark = pytest.mark.unit


def test_iou_on_known_masks():
    gt = torch.tensor([[0, 0, 1, 1], [0, 2, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 0, 1]])
    conf = confusion_matrix(pred, gt, num_classes=3)
    # kept pixels (gt≠255): (0,0),(0,1),(1,1),(1,1),(0,0),(2,2),(2,0)
    assert conf.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
    res = iou_from_confusion(conf)
    # class 0: TP 2, FP 1 (gt2→0), FN 1 (0→1): 2/4; class 1: TP 2, FP 1, FN 0: 2/3; class 2: TP 1, FN 1: 1/2
    np.testing.assert_allclose(res.per_class, [0.5, 2 / 3, 0.5])
    assert res.miou == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert res.pixel_acc == pytest.approx(5 / 7)


def test_absent_classes_are_excluded_from_the_mean():
    meter = ConfusionMeter(num_classes=4)
    meter.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 255]))
    res = meter.result()
    assert np.isnan(res.per_class[2]) and np.isnan(res.per_class[3])
    assert res.miou == 1.0


def test_a_class_only_predicted_counts_as_false_positive_but_has_no_iou_term():
    # gt: 0 0 1 1 1 1; pred: 0 2 1 1 1 2 — class 2 is predicted twice but absent from the ground truth.
    gt = torch.tensor([0, 0, 1, 1, 1, 1])
    pred = torch.tensor([0, 2, 1, 1, 1, 2])
    res = iou_from_confusion(confusion_matrix(pred, gt, num_classes=3))
    # class 0: TP 1, FN 1 (→2): 1/2; class 1: TP 3, FN 1 (→2): 3/4; class 2: no ground truth → NaN, not 0
    np.testing.assert_allclose(res.per_class[:2], [0.5, 0.75])
    assert np.isnan(res.per_class[2])
    assert res.miou == pytest.approx((0.5 + 0.75) / 2)  # mean over present classes; union rule: 1.25 / 3


def test_label_outside_range_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), num_classes=3)
