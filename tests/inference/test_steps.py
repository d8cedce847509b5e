"""Per-image counting: pixels without a label (pred 255) or without ground truth (255) are not counted."""

import numpy as np
import pytest

from toco_ray.inference.steps import count_confusion, dense_confusion, sparse_confusion

pytestmark = pytest.mark.unit


def test_confusion_skips_void_ground_truth_and_unlabelled_predictions():
    pred = np.array([[0, 1, 255], [2, 2, 1]], np.uint8)
    mask = np.array([[0, 2, 1], [255, 2, 1]], np.uint8)
    conf = count_confusion(pred, mask, num_classes=3)
    # counted pairs (gt, pred): (0,0), (2,1), (2,2), (1,1); skipped: pred 255 at (0,2), gt 255 at (1,0)
    expected = np.zeros((3, 3), np.int64)
    for gt, p in ((0, 0), (2, 1), (2, 2), (1, 1)):
        expected[gt, p] += 1
    np.testing.assert_array_equal(conf, expected)


def test_sparse_confusion_round_trip():
    conf = np.zeros((4, 4), np.int64)
    conf[1, 1], conf[3, 0] = 5, 7
    sparse = sparse_confusion(conf)
    assert sparse == {"index": [5, 12], "count": [5, 7]}  # flat index gt·4 + pred: 1·4+1, 3·4+0
    np.testing.assert_array_equal(dense_confusion(sparse, 4), conf)
