"""Patch Token Contrast, L_ptc (SPEC §3, paper §3.2).

Final patch tokens with the same pseudo token label are pulled together, tokens with different labels pushed
apart, both through the absolute cosine similarity (the reference's form):

    L_ptc = ½·(1 − Σ_pos S / (N_pos + 1)) + ½·Σ_neg S / (N_neg + 1),    S_ij = |cos(F_i, F_j)|

over ordered pairs i ≠ j of the same image whose labels are both ≠ ignore; background–background pairs are
positives. Sums and counts are pooled over the batch; :func:`ptc_terms` exposes them so a data-parallel
trainer can all-reduce them before :func:`ptc_from_terms`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class PTCTerms(NamedTuple):
    """Pooled pair statistics; every field is a 0-d tensor (counts in the similarity dtype)."""

    sum_pos: torch.Tensor
    n_pos: torch.Tensor
    sum_neg: torch.Tensor
    n_neg: torch.Tensor


def ptc_terms(tokens: torch.Tensor, token_labels: torch.Tensor, ignore_index: int = 255) -> PTCTerms:
    """Sums of |cos| over positive and negative token pairs, and the pair counts.

    Args:
        tokens: B×D×h×w final patch tokens.
        token_labels: B×h×w long pseudo token labels (0 background, 1..C classes, ``ignore_index`` unsure).
        ignore_index: label of tokens that take part in no pair.

    Returns:
        :class:`PTCTerms` pooled over the batch (ordered pairs, i ≠ j, within each image).
    """
    b, _, h, w = tokens.shape
    if token_labels.shape != (b, h, w):
        raise ValueError(f"ptc: token_labels {tuple(token_labels.shape)} do not match tokens B×h×w = {(b, h, w)}")
    feats = F.normalize(tokens.flatten(2), p=2, dim=1, eps=1e-8)  # B×D×n
    sim = torch.bmm(feats.transpose(1, 2), feats).abs()  # B×n×n
    labels = token_labels.flatten(1)
    valid = labels != ignore_index
    not_self = ~torch.eye(h * w, dtype=torch.bool, device=tokens.device)
    pair = valid.unsqueeze(2) & valid.unsqueeze(1) & not_self
    same = labels.unsqueeze(2) == labels.unsqueeze(1)
    pos, neg = pair & same, pair & ~same
    return PTCTerms(
        sum_pos=(sim * pos).sum(),
        n_pos=pos.sum().to(sim.dtype),
        sum_neg=(sim * neg).sum(),
        n_neg=neg.sum().to(sim.dtype),
    )


def ptc_from_terms(terms: PTCTerms) -> torch.Tensor:
    """``½·(1 − sum_pos/(n_pos+1)) + ½·sum_neg/(n_neg+1)`` (the +1 keeps an empty set at 0 contribution)."""
    return 0.5 * (1 - terms.sum_pos / (terms.n_pos + 1)) + 0.5 * terms.sum_neg / (terms.n_neg + 1)


def ptc_loss(tokens: torch.Tensor, token_labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """L_ptc of a batch.

    Args:
        tokens: B×D×h×w final patch tokens.
        token_labels: B×h×w long pseudo token labels, ``ignore_index`` for unsure or padded tokens.
        ignore_index: label excluded from all pairs.

    Returns:
        Scalar loss in [0, 1].
    """
    return ptc_from_terms(ptc_terms(tokens, token_labels, ignore_index))
