import math

import pytest
import torch

from toco_ray.losses import PTCTerms, ptc_from_terms, ptc_loss, ptc_terms

pytestmark = pytest.mark.unit


def _tokens(*vectors):
    """Tokens given as (x, y) vectors in row-major order → 1×2×1×n."""
    return torch.tensor(vectors, dtype=torch.float64).T.reshape(1, 2, 1, len(vectors))


def test_ptc_three_tokens_by_hand():
    tokens = _tokens((1, 0), (0, 1), (1, 1))
    labels = torch.tensor([[[1, 1, 0]]])
    # |cos|: S01 = 0, S02 = S12 = 1/√2.
    # positives (0,1),(1,0): Σ = 0, N = 2; negatives (0,2),(2,0),(1,2),(2,1): Σ = 4/√2 = 2√2, N = 4
    terms = ptc_terms(tokens, labels)
    assert [t.item() for t in terms] == pytest.approx([0.0, 2.0, 2 * math.sqrt(2), 4.0])
    # ½(1 − 0/3) + ½·2√2/5 = 0.5 + √2/5 = 0.782843
    assert ptc_loss(tokens, labels).item() == pytest.approx(0.5 + math.sqrt(2) / 5)


def _image_a():
    # 2×2 grid, row-major: t0 = (1,0) bg, t1 = (3,4) bg, t2 = (1,1) ignored, t3 = (0,−2) class 2
    tokens = torch.tensor([[1.0, 3.0], [1.0, 0.0]]), torch.tensor([[0.0, 4.0], [1.0, -2.0]])
    return torch.stack(tokens).unsqueeze(0).double(), torch.tensor([[[0, 0], [255, 2]]])


def test_ptc_ignore_background_pairs_and_absolute_cosine():
    tokens, labels = _image_a()
    # bg–bg positive: S01 = |3/5| = 0.6 (twice, ordered pairs) → Σpos = 1.2, Npos = 2
    # negatives: S03 = 0, S13 = |−8/10| = 0.8 → Σneg = 2·(0 + 0.8) = 1.6, Nneg = 4; t2 (255) in no pair
    terms = ptc_terms(tokens, labels)
    assert [t.item() for t in terms] == pytest.approx([1.2, 2.0, 1.6, 4.0])
    # ½(1 − 1.2/3) + ½·1.6/5 = 0.3 + 0.16 = 0.46
    assert ptc_loss(tokens, labels).item() == pytest.approx(0.46)


def test_ptc_pools_sums_and_counts_over_the_batch():
    tokens_a, labels_a = _image_a()
    # image b: t0 = t1 = t3 = (1,0), t2 = (0,1); labels 1,1,1,255
    tokens_b = torch.tensor([[[1.0, 1.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 0.0]]]).unsqueeze(0).double()
    labels_b = torch.tensor([[[1, 1], [1, 255]]])
    # image b positives among t0,t1,t2: S01 = 1, S02 = S12 = 0 → Σpos = 2, Npos = 6; no negatives.
    # pooled with image a: Σpos = 3.2, Npos = 8, Σneg = 1.6, Nneg = 4 (no pairs across images)
    tokens, labels = torch.cat([tokens_a, tokens_b]), torch.cat([labels_a, labels_b])
    terms = ptc_terms(tokens, labels)
    assert [t.item() for t in terms] == pytest.approx([3.2, 8.0, 1.6, 4.0])
    # ½(1 − 3.2/9) + ½·1.6/5 = 0.322222 + 0.16 (the mean of per-image losses would be 0.408571)
    assert ptc_loss(tokens, labels).item() == pytest.approx(0.5 * (1 - 3.2 / 9) + 0.16)


def test_ptc_from_terms_matches_all_reduced_terms():
    tokens = torch.randn(4, 8, 3, 3, dtype=torch.float64)
    labels = torch.randint(0, 3, (4, 3, 3))
    halves = [ptc_terms(tokens[:2], labels[:2]), ptc_terms(tokens[2:], labels[2:])]
    summed = PTCTerms(*(a + b for a, b in zip(*halves)))
    assert ptc_from_terms(summed).item() == pytest.approx(ptc_loss(tokens, labels).item())


def test_ptc_with_no_valid_token_is_half():
    tokens = torch.randn(1, 4, 2, 2)
    # no pair at all: ½(1 − 0/1) + ½·0/1 = 0.5
    assert ptc_loss(tokens, torch.full((1, 2, 2), 255)).item() == 0.5


def test_ptc_gradcheck():
    tokens = torch.randn(2, 5, 2, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[[0, 1, 255], [1, 1, 0]], [[2, 2, 0], [255, 0, 2]]])
    assert torch.autograd.gradcheck(lambda t: ptc_loss(t, labels), (tokens,))


def test_ptc_label_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="token_labels"):
        ptc_loss(torch.randn(1, 4, 2, 2), torch.zeros(1, 3, 3, dtype=torch.long))
