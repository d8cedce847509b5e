import math

import pytest

from toco_ray.distributed.loop import oversmoothing_metrics

pytestmark = pytest.mark.unit


def test_oversmoothing_keys_per_pair_kind_and_block_with_nan_blocks_left_out():
    curves = {"all": [0.5, 0.75], "fg_bg": [0.25, 0.125], "fg_fg": [math.nan, math.nan]}
    assert oversmoothing_metrics(curves) == {
        "oversmoothing/block_01": 0.5,  # the all-pairs keys keep their names
        "oversmoothing/block_02": 0.75,
        "oversmoothing_fg_bg/block_01": 0.25,
        "oversmoothing_fg_bg/block_02": 0.125,
    }  # no fg–fg pair in the probe images: nothing logged rather than NaN
