import math

import pytest

from toco_ray.distributed.progress import eval_line, format_duration, train_line

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seconds, text", [(45, "45s"), (190, "3m10s"), (3720, "1h02m"), (math.nan, "?"), (-1, "?")])
def test_durations_read_compactly(seconds, text):
    assert format_duration(seconds) == text


def test_one_line_per_log_period():
    line = train_line(120, 600, {"total": 1.2341, "cls": 0.5, "ptc": 0.25}, lr=4.1e-4, images_per_s=6.24, eta_s=190)
    assert line == "it 120/600 | loss 1.234 (cls 0.500 ptc 0.250) | lr 4.1e-04 | 6.2 img/s | eta 3m10s"
    assert "\n" not in line


def test_eval_line_in_percent():
    metrics = {
        "eval/cam_miou": 0.412,
        "eval/aux_cam_miou": 0.387,
        "eval/seg_miou": 0.35,
        "baseline/all_background_miou": 0.036,
        "baseline/image_majority_miou": 0.039,
        "baseline/image_largest_foreground_miou": 0.09,
    }
    assert eval_line(200, metrics, 8.44) == (
        "eval @ 200 | CAM 41.2 | aux CAM 38.7 | seg 35.0 mIoU | baselines: all-bg 3.6, majority 3.9, largest-fg 9.0 | "
        "8.4 s"
    )
