"""Class Token Contrast, L_ctc (SPEC §4, paper §3.3).

The teacher head's outputs for the two global views are contrasted with the student head's outputs for every
view (globals and local crops). With E_tk = exp(T_t·S_k / τ) (raw dot products), P_i the positive views of
image i (both globals and the positive crops), N_i its negative crops and n_t = Σ_{k∈N_i} E_tk::

    l_t = Σ_{j∈P_i} −log(E_tj / (E_tj + n_t + 1e-4)) + log(1 + n_t + 1e-4)     (form "reference")
    L_i = (l_0 + l_1) / (2·(|P_i| + 1e-4)),    L_ctc = mean_i L_i

Form "paper" drops the last term (paper Eq. 4). Everything is evaluated in log space (log-sum-exp), which is
the same value but cannot overflow: head outputs are not unit vectors, so T·S/τ can exceed exp's range.
"""

from __future__ import annotations

import math

import torch

FORMS = ("reference", "paper")
_EPS = 1e-4  # the reference's additive constant inside the logs and in |P_i|


def ctc_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    positive: torch.Tensor,
    temperature: float,
    form: str = "reference",
) -> torch.Tensor:
    """L_ctc of a batch.

    Args:
        student: V×B×K student head outputs, V = 2 + n_crops views in the order global 0, global 1, crop 0, …
            (the crop-major order of :func:`~toco_ray.losses.crops.sample_local_crops`).
        teacher: 2×B×K teacher head outputs of the two global views.
        positive: B×V bool; columns 0 and 1 (the globals) must be True, the rest are the crop flags.
        temperature: τ (``ctc.temperature``).
        form: ``"reference"`` or ``"paper"`` (``ctc.form``).

    Returns:
        Scalar loss.
    """
    if form not in FORMS:
        raise ValueError(f"unknown ctc.form {form!r}; expected one of {FORMS}")
    v, b, k = student.shape
    if teacher.shape != (2, b, k) or positive.shape != (b, v):
        raise ValueError(
            f"ctc: expected teacher 2×B×K = {(2, b, k)} and positive B×V = {(b, v)} for student V×B×K = "
            f"{(v, b, k)}; got teacher {tuple(teacher.shape)}, positive {tuple(positive.shape)}"
        )
    positive = positive.bool()
    if not bool(positive[:, :2].all()):
        raise ValueError("ctc: the two global views (columns 0 and 1 of positive) must be positives")
    logits = torch.einsum("tbk,vbk->btv", teacher, student) / temperature  # B×2×V, log E
    log_n = _log_negatives_plus_eps(logits, ~positive)  # B×2, log(n_t + 1e-4)
    per_view = torch.logaddexp(logits, log_n.unsqueeze(2)) - logits  # −log(E_tj / (E_tj + n_t + 1e-4))
    l_t = (per_view * positive.unsqueeze(1)).sum(dim=2)  # B×2
    if form == "reference":
        l_t = l_t + torch.logaddexp(torch.zeros_like(log_n), log_n)  # log(1 + n_t + 1e-4)
    per_image = l_t.sum(dim=1) / (2 * (positive.sum(dim=1).to(l_t.dtype) + _EPS))
    return per_image.mean()


def _log_negatives_plus_eps(logits: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    # log(Σ_{k∈N} exp(logit_k) + 1e-4) as one log-sum-exp; the constant term keeps it finite (and its
    # gradient defined) when an image has no negative crop.
    masked = logits.masked_fill(~negative.unsqueeze(1), float("-inf"))
    eps = torch.full_like(logits[..., :1], math.log(_EPS))
    return torch.logsumexp(torch.cat([masked, eps], dim=2), dim=2)
