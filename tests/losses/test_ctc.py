import math

import pytest
import torch

from toco_ray.losses import ctc_loss

pytestmark = pytest.mark.unit

# τ = 1/ln 2 makes E = exp(T·S/τ) = 2^(T·S): dot products 1, 0, −1 give E = 2, 1, ½.
TAU = 1 / math.log(2.0)


def _views(*vectors):
    """Per-view 2-d vectors of a single image → V×1×2."""
    return torch.tensor(vectors, dtype=torch.float64).unsqueeze(1)


def test_ctc_by_hand_both_forms():
    teacher = _views((1, 0), (0, 1))
    # global 0, global 1, crop 0 (positive), crop 1 (negative)
    student = _views((1, 0), (0, 1), (1, 0), (0, -1))
    positive = torch.tensor([[True, True, True, False]])
    # T0·S = 1, 0, 1, 0 → E0 = 2, 1, 2, 1; n_0 = E0[3] = 1
    # T1·S = 0, 1, 0, −1 → E1 = 1, 2, 1, ½; n_1 = E1[3] = ½
    # l_0 = −log(2/3.0001) − log(1/2.0001) − log(2/3.0001) [+ log 2.0001] = 2·log 1.50005 + log 2.0001 [+ log 2.0001]
    # l_1 = −log(1/1.5001) − log(2/2.5001) − log(1/1.5001) [+ log 1.5001] = 2·log 1.5001 + log 1.25005 [+ log 1.5001]
    # L = (l_0 + l_1) / (2·(3 + 1e-4))
    paper_l0 = 2 * math.log(1.50005) + math.log(2.0001)
    paper_l1 = 2 * math.log(1.5001) + math.log(1.25005)
    paper = (paper_l0 + paper_l1) / (2 * 3.0001)  # 0.423059
    reference = (paper_l0 + math.log(2.0001) + paper_l1 + math.log(1.5001)) / (2 * 3.0001)  # 0.606175
    assert ctc_loss(student, teacher, positive, TAU, form="paper").item() == pytest.approx(paper, rel=1e-12)
    assert ctc_loss(student, teacher, positive, TAU).item() == pytest.approx(reference, rel=1e-12)


def test_ctc_without_negatives():
    teacher = _views((1, 0), (0, 1))
    student = _views((1, 0), (0, 1))
    positive = torch.tensor([[True, True]])
    # E0 = 2, 1 and E1 = 1, 2; n_t = 0:
    # l_t = −log(2/2.0001) − log(1/1.0001) [+ log(1 + 0 + 1e-4)] = log 1.00005 + log 1.0001 [+ log 1.0001]
    # L = 2·l_t / (2·2.0001) = l_t / 2.0001
    paper = (math.log(1.00005) + math.log(1.0001)) / 2.0001  # 7.4993e-5
    reference = (math.log(1.00005) + 2 * math.log(1.0001)) / 2.0001  # 1.24988e-4
    assert ctc_loss(student, teacher, positive, TAU, form="paper").item() == pytest.approx(paper, rel=1e-9)
    assert ctc_loss(student, teacher, positive, TAU, form="reference").item() == pytest.approx(reference, rel=1e-9)


def _reference_loop(student, teacher, positive, tau, form):
    """Direct transcription of the per-image loop of the reference loss, naive exp/log."""
    total = 0.0
    for i in range(student.shape[1]):
        e = torch.exp(teacher[:, i] @ student[:, i].T / tau)  # 2×V
        n = e[:, ~positive[i]].sum(dim=1)
        loss = sum(-torch.log(e[:, j] / (e[:, j] + n + 1e-4)) for j in positive[i].nonzero()[:, 0])
        if form == "reference":
            loss = loss + torch.log(1 + n + 1e-4)
        total = total + loss.sum() / 2 / (positive[i].sum().item() + 1e-4)
    return total / student.shape[1]


@pytest.mark.parametrize("form", ["reference", "paper"])
def test_ctc_matches_reference_loop_on_a_batch(form):
    g = torch.Generator().manual_seed(0)
    student = torch.randn(6, 3, 5, generator=g, dtype=torch.float64)
    teacher = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    positive = torch.tensor([[1, 1, 1, 0, 1, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    expected = _reference_loop(student, teacher, positive, 0.5, form)
    assert ctc_loss(student, teacher, positive, 0.5, form=form).item() == pytest.approx(expected.item(), rel=1e-10)


def test_ctc_large_logits_stay_finite():
    # T·S/τ = 2000 overflows exp; the log-space form still gives the (finite) limit.
    teacher = _views((1, 0), (0, 1)) * 40
    student = _views((1, 0), (0, 1), (1, 0)) * 25
    loss = ctc_loss(student, teacher, torch.tensor([[True, True, False]]), 0.5)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("form", ["reference", "paper"])
def test_ctc_gradcheck(form):
    g = torch.Generator().manual_seed(1)
    student = torch.randn(5, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    positive = torch.tensor([[1, 1, 0, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda s, t: ctc_loss(s, t, positive, 0.7, form=form), (student, teacher))


def test_ctc_unknown_form_names_the_key():
    with pytest.raises(ValueError, match="ctc.form"):
        ctc_loss(torch.zeros(2, 1, 2), torch.zeros(2, 1, 2), torch.ones(1, 2, dtype=torch.bool), 1.0, form="dino")


def test_ctc_globals_must_be_positive():
    with pytest.raises(ValueError, match="global"):
        ctc_loss(torch.zeros(3, 1, 2), torch.zeros(2, 1, 2), torch.tensor([[True, False, True]]), 1.0)
