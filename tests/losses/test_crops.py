import pytest
import torch

from toco_ray.losses import sample_local_crops

pytestmark = pytest.mark.unit


def _coordinate_view(b, h, w):
    """Channels: row index, column index, image index — a crop tells where it came from."""
    rows = torch.arange(h, dtype=torch.float32).view(1, h, 1).expand(b, h, w)
    cols = torch.arange(w, dtype=torch.float32).view(1, 1, w).expand(b, h, w)
    index = torch.arange(b, dtype=torch.float32).view(b, 1, 1).expand(b, h, w)
    return torch.stack([rows, cols, index], dim=1)


def _single_window(roi_window_values):
    # An 11×11 view with crop 10: margin 5, inner region [5, 6)² → one position, window rows/cols 0..9.
    roi = torch.full((1, 11, 11), 2)
    roi[0, :10, :10] = roi_window_values
    roi[0, 5, 5] = 0  # centre pixel is a candidate
    return sample_local_crops(_coordinate_view(1, 11, 11), roi, 1, 10, 0.2, torch.Generator().manual_seed(0))


def test_negative_rule():
    window = torch.zeros(10, 10, dtype=torch.long)
    window.view(-1)[:19] = 1  # mean 19/100 = 0.19 ≤ 0.2 → negative; row/col 10 (ROI 2) is outside the window
    assert not _single_window(window)[1].item()
    window.view(-1)[:20] = 1  # mean 20/100 = 0.2 exactly → negative
    assert not _single_window(window)[1].item()
    window.view(-1)[:12] = 2  # 12·2 + 1 (index 12 still 1) = 25 → mean 0.25 > 0.2 → positive
    window.view(-1)[13:] = 0
    assert window.sum() == 25
    crops, positive = _single_window(window)
    assert positive.item()
    assert crops[0, 0, 0, 0] == 0 and crops[0, 0, -1, -1] == 9  # the window is rows 0..9


def test_centres_come_from_roi_at_most_one():
    roi = torch.full((1, 20, 20), 2)
    candidates = [(3, 4), (5, 15), (8, 8), (10, 2), (12, 17), (16, 9)]
    for r, c in candidates:
        roi[0, r, c] = 0 if r % 2 else 1
    roi[0, 0, 0] = 0  # outside the inner region [2, 18): never a centre
    for seed in range(10):
        crops, _ = sample_local_crops(_coordinate_view(1, 20, 20), roi, 4, 4, 0.2, torch.Generator().manual_seed(seed))
        # crop size 4, margin 2: the centre (h0+2, w0+2) is pixel [2, 2] of each crop
        centres = {(int(c[0, 2, 2]), int(c[1, 2, 2])) for c in crops}
        assert len(centres) == 4 and centres <= set(candidates)


def test_too_few_candidates_fall_back_to_every_inner_position():
    roi = torch.full((1, 12, 12), 2)
    roi[0, 4, 4] = roi[0, 7, 7] = 0  # 2 candidates < 5 crops
    crops, positive = sample_local_crops(_coordinate_view(1, 12, 12), roi, 5, 4, 0.2, torch.Generator().manual_seed(3))
    centres = {(int(c[0, 2, 2]), int(c[1, 2, 2])) for c in crops}
    assert len(centres) == 5  # without replacement
    assert all(2 <= r < 10 and 2 <= c < 10 for r, c in centres)  # inner region [2, 12−2)
    assert positive.all()  # every window holds ROI-2 pixels: mean ≥ (16−2)·2/16 > 0.2


def test_crop_major_order_and_flags_match_windows():
    b, n, s = 3, 4, 6
    g = torch.Generator().manual_seed(0)
    roi = torch.randint(0, 3, (b, 24, 24), generator=g)
    roi[1] = 0  # image 1: every crop is negative
    view = _coordinate_view(b, 24, 24)
    crops, positive = sample_local_crops(view, roi, n, s, 0.2, torch.Generator().manual_seed(1))
    assert crops.shape == (n * b, 3, s, s) and positive.shape == (b, n)
    for k in range(n):
        for i in range(b):
            crop = crops[k * b + i]  # crop k of image i
            assert (crop[2] == i).all()
            top, left = int(crop[0, 0, 0]), int(crop[1, 0, 0])
            window_mean = roi[i, top : top + s, left : left + s].double().mean().item()
            assert positive[i, k].item() == (window_mean > 0.2)
    assert not positive[1].any()


def test_seeded_generator_is_deterministic():
    roi = torch.randint(0, 3, (2, 30, 30), generator=torch.Generator().manual_seed(0))
    view = torch.rand(2, 3, 30, 30)

    def sample(seed):
        return sample_local_crops(view, roi, 8, 8, 0.2, torch.Generator().manual_seed(seed))

    (a, fa), (b, fb), (c, _) = sample(5), sample(5), sample(6)
    assert torch.equal(a, b) and torch.equal(fa, fb)
    assert not torch.equal(a, c)


def test_view_smaller_than_crop_is_an_error():
    with pytest.raises(ValueError, match=r"8×40 view .*ctc\.local_crop_size=16"):
        sample_local_crops(torch.zeros(1, 3, 8, 40), torch.zeros(1, 8, 40), 2, 16, 0.2, torch.Generator())
