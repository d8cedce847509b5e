"""Progress bar text: counts, rate, ETA."""

import io

import pytest

from toco_ray.inference.progress import ProgressBar, format_eta

pytestmark = pytest.mark.unit


def test_eta_format():
    assert [format_eta(s) for s in (17.4, 245, 7380, float("nan"))] == ["17s", "4m05s", "2h03m", "?"]


def test_non_terminal_stream_gets_a_line_per_tenth_and_the_last():
    stream = io.StringIO()
    bar = ProgressBar("seg val", 20, stream)
    for i in range(20):
        bar.update(skipped=i == 3)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10  # 2, 4, ..., 20 of 20
    assert lines[-1].startswith("seg val [####################] 20/20")
    assert "img/s" in lines[-1] and "eta 0s" in lines[-1] and "(1 skipped)" in lines[-1]
