"""CTC projection heads (DINO-style) and the EMA that makes the teacher head follow the student (SPEC §1)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class ProjectionHead(nn.Module):
    """MLP → L2 normalisation → weight-normalised linear layer whose gain is fixed at 1.

    ``Linear(D,hid)–GELU–Linear(hid,hid)–GELU–Linear(hid,bottleneck)``, L2-normalise, then
    ``Linear(bottleneck,out, no bias)`` with weight ``g·v/‖v‖`` per output row, ``g ≡ 1`` and not trained
    (DINO's ``norm_last_layer=True``): every output is a cosine between the bottleneck and a prototype.

    Args:
        in_dim: class-token width D.
        hidden_dim: MLP width (2048 in the reference).
        bottleneck_dim: width before the normalisation (256).
        out_dim: output width (1024).
    """

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):  # DINO init
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        gain = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N×D)`` → ``N×out_dim``."""
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


def make_teacher(student: nn.Module) -> nn.Module:
    """A copy of ``student`` that is never trained by gradient (only by :func:`ema_update`)."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``θ_t ← ρ·θ_t + (1−ρ)·θ_s`` over all parameters (ρ = ``momentum``; ρ = 0 copies the student)."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)
