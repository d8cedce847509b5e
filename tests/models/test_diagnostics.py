import math

import pytest
import torch

from toco_ray.config import build_config
from toco_ray.models import (
    PAIR_KINDS,
    ToCoNet,
    build_model,
    mean_cosine_of_pairs,
    token_labels,
    token_similarity_by_pair,
    token_similarity_per_block,
)

pytestmark = pytest.mark.unit

V = 255  # void


def _grid(*vectors) -> torch.Tensor:
    # D-dim token vectors on a 1×N grid → 1×D×1×N
    return torch.tensor(vectors, dtype=torch.float32).T.reshape(1, -1, 1, len(vectors))


@pytest.fixture(scope="module")
def model() -> ToCoNet:
    torch.manual_seed(0)
    return build_model(build_config("synthetic").model).eval()


def test_cross_class_pair_means_by_hand():
    # image 1: a=(1,0) bg, b=(0,1) class 1, c=(1,1) class 2, b2=(0,2) class 1, d=(-1,0) unlabelled
    #   fg_bg: cos(b,a)=0, cos(c,a)=1/√2, cos(b2,a)=0           → (0 + 1/√2 + 0)/3 = √2/6
    #   fg_fg: cos(b,c)=1/√2, cos(b2,c)=1/√2 (b,b2 same class: out) → 1/√2
    # image 2: t0=(1,0) class 1, t1=t2=(1,0) bg, t3=(0,1) bg, t4=(0,1) unlabelled
    #   fg_bg: cos(t0,t1)=1, cos(t0,t2)=1, cos(t0,t3)=0 (t4 out)  → 2/3;  fg_fg: no pair, image left out
    first = _grid((1, 0), (0, 1), (1, 1), (0, 2), (-1, 0))
    second = _grid((1, 0), (1, 0), (1, 0), (0, 1), (0, 1))
    tokens = torch.cat([first, second])
    labels = torch.tensor([[[0, 1, 2, 1, -1]], [[1, 0, 0, 0, -1]]])
    assert mean_cosine_of_pairs(tokens, labels, "fg_bg") == pytest.approx((math.sqrt(2) / 6 + 2 / 3) / 2)
    assert mean_cosine_of_pairs(tokens, labels, "fg_fg") == pytest.approx(1 / math.sqrt(2))


@pytest.mark.parametrize(
    ("labels", "nan_kinds"),
    [
        ([0, 0, 0, 0], {"fg_bg", "fg_fg"}),  # background only
        ([3, 0, 3, 0], {"fg_fg"}),  # one foreground class: no fg–fg pair of different classes
        ([1, 2, -1, -1], {"fg_bg"}),  # no background token
        ([-1, -1, -1, -1], {"fg_bg", "fg_fg"}),  # nothing labelled
    ],
)
def test_absent_pair_type_is_nan(labels, nan_kinds):
    tokens = torch.randn(1, 8, 2, 2)
    for kind in PAIR_KINDS:
        value = mean_cosine_of_pairs(tokens, torch.tensor(labels).reshape(1, 2, 2), kind)
        assert math.isnan(value) == (kind in nan_kinds), kind


def test_pair_kind_and_label_shape_are_checked():
    with pytest.raises(ValueError, match="unknown pair kind 'bg_bg'"):
        mean_cosine_of_pairs(torch.randn(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), "bg_bg")
    with pytest.raises(ValueError, match="do not match"):
        mean_cosine_of_pairs(torch.randn(1, 4, 2, 2), torch.zeros(1, 4, dtype=torch.long), "fg_bg")


def test_token_takes_the_strict_majority_class_of_its_patch():
    mask = torch.tensor(
        [
            [1, 1, 0, 0, 2, 2],
            [1, 0, 0, V, 2, V],
            [V, V, 2, 2, 3, 3],
            [V, 0, 0, 3, 3, 3],
        ]
    )
    # 2×2 patches: {1,1,1,0} → 1 (3/4); {0,0,0,V} → 0 (void counts against it, still 3/4);
    # {2,2,2,V} → 2; {V,V,V,0} → mostly void; {2,2,0,3} → 2 has only 2/4, mixed; {3,3,3,3} → 3
    assert token_labels([mask], (4, 6), 2).tolist() == [[[1, 0, 2], [-1, -1, 3]]]
    # a stricter purity keeps only the pure patch
    assert token_labels([mask], (4, 6), 2, purity=0.8).tolist() == [[[-1, -1, -1], [-1, -1, 3]]]


def test_token_labels_follow_the_network_input_resize_and_padding():
    # a native 2×2 mask under a 4×4 input: each pixel becomes one 2×2 patch (nearest resize)
    small = torch.tensor([[0, 1], [2, V]])
    # a 3×3 mask under a 3×3 input with p=2: padded to 4×4 with void, as the network pads the image
    # patches: {1,1,1,1} → 1; {0,0,pad,pad} → 2/4, out; {0,0,pad,pad} → out; {0,pad,pad,pad} → out
    odd = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 0]])
    assert token_labels([small], (4, 4), 2).tolist() == [[[0, 1], [2, -1]]]
    assert token_labels([odd], (3, 3), 2).tolist() == [[[1, -1], [-1, -1]]]
    # masks of different native sizes stack on the input's grid
    assert token_labels([small, torch.zeros(8, 8)], (4, 4), 2).shape == (2, 2, 2)


def test_token_similarity_by_pair_on_the_model(model):
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 32)  # p=8: a 4×4 grid
    masks = [torch.zeros(32, 32, dtype=torch.long), torch.zeros(20, 20, dtype=torch.long)]
    masks[0][:16, :16] = 5  # 2×2 tokens of class 5
    masks[0][16:, 16:] = 7  # 2×2 tokens of class 7
    masks[1][:10] = 3  # native 20×20: the top half of the input, class 3
    curves = token_similarity_by_pair(model, images, masks, model.patch_size)
    assert set(curves) == {"all", *PAIR_KINDS}
    assert curves["all"] == pytest.approx(token_similarity_per_block(model, images))
    for kind in PAIR_KINDS:
        assert len(curves[kind]) == 4 and all(-1.0 <= s <= 1.0 for s in curves[kind]), kind
    background = token_similarity_by_pair(model, images, [torch.zeros(32, 32)] * 2, model.patch_size)
    without_masks = token_similarity_by_pair(model, images, None, model.patch_size)
    for curves in (background, without_masks):
        assert all(math.isnan(s) for kind in PAIR_KINDS for s in curves[kind])
