"""Dense-CRF energy regulariser L_reg (Tang et al., "On Regularized Losses for Weakly-supervised CNN
Segmentation", ECCV 2018), as ToCo's reference applies it to the segmentation branch (SPEC §5).

At ``scale`` (0.5) of the label size, with P = softmax of the segmentation logits::

    gate = max(roi − max_k P_k, 0), set to 1 on unlabelled (255) pixels, treated as a constant
    P    ← P ⊙ roi
    L    = −weight · Σ_{k,i} P_ki · gate_i · [K P_k]_i / B

where K is the Gaussian kernel over (x/σ_xy', y/σ_xy', r/σ_rgb, g/σ_rgb, b/σ_rgb), σ_xy' = σ_xy · scale, applied
unnormalised with its self term (``losses/permutohedral.py``).

Differences from the reference, on purpose:

* The reference runs a compiled permutohedral lattice on the CPU with a hand-written backward
  ``−2·weight·gate⊙K(P)⊙roi/B``, which is the gradient of the gate-free symmetric quadratic form only. Ours is
  the gradient of the forward with the gate held constant, ``−weight·roi⊙(gate⊙K(P) + Kᵀ(gate⊙P))/B``, as
  autograd would give it; the lattice filters P and gate⊙P in the forward (with K and its transpose, which
  differ by about 1 % where the lattice is cut off) and the backward reuses both.
* Our lattice approximates the exact Gaussian sum (energy within a few per cent); the reference's lattice
  constants and its dropping of mass blurred into empty lattice cells give 0.57–0.58× the exact energy on a
  photograph (measured against its compiled extension), so at equal ``weight`` this term's gradient is about
  1.5× the reference's; ``compat.reg_energy_scale`` scales the weight to match.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from toco_ray.config import LossConfig
from toco_ray.losses.permutohedral import PermutohedralLattice, gaussian_filter_exact

KERNELS = ("permutohedral", "exact")


class DenseEnergyLoss(nn.Module):
    """Gated dense-CRF energy of the segmentation probabilities.

    Args:
        weight: multiplies the energy (ref 1e-7).
        sigma_rgb: colour bandwidth in 0..255 units (ref 15).
        sigma_xy: spatial bandwidth in pixels at full resolution (ref 100; scaled by ``scale``).
        scale: the energy is computed on inputs resized by this factor (ref 0.5).
        kernel: ``"permutohedral"`` (fast, approximate) or ``"exact"`` (O(N²) brute force, for validation).
        ignore_index: label value of unlabelled pixels.
        backend: the permutohedral lattice's backend (``losses/permutohedral.py``): "auto", "numba" or "torch".

    Example:
        >>> loss_fn = DenseEnergyLoss.from_config(cfg.loss)
        >>> loss = loss_fn(images_255, seg_logits.softmax(1), roi_mask, seg_label)
    """

    def __init__(
        self,
        weight: float = 1e-7,
        sigma_rgb: float = 15.0,
        sigma_xy: float = 100.0,
        scale: float = 0.5,
        kernel: str = "permutohedral",
        ignore_index: int = 255,
        backend: str = "auto",
    ):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"unknown energy kernel {kernel!r}; expected one of {KERNELS}")
        self.weight = weight
        self.sigma_rgb = sigma_rgb
        self.sigma_xy = sigma_xy
        self.scale = scale
        self.kernel = kernel
        self.ignore_index = ignore_index
        self.backend = backend

    @classmethod
    def from_config(cls, cfg: LossConfig, kernel: str = "permutohedral") -> DenseEnergyLoss:
        """Builds the loss from ``loss.reg_*`` config values."""
        return cls(cfg.reg_weight, cfg.reg_sigma_rgb, cfg.reg_sigma_xy, cfg.reg_scale, kernel=kernel)

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, sigma_rgb={self.sigma_rgb}, sigma_xy={self.sigma_xy}, "
            f"scale={self.scale}, kernel={self.kernel}"
        )

    def forward(
        self,
        images_255: torch.Tensor,
        probs: torch.Tensor,
        roi_mask: torch.Tensor,
        seg_label: torch.Tensor,
    ) -> torch.Tensor:
        """Computes L_reg.

        Args:
            images_255: B×3×H×W RGB in 0..255 (de-normalised input); no gradient flows into it.
            probs: B×K×H×W softmax of the segmentation logits at the label size.
            roi_mask: B×H×W, 1 inside the valid image box, 0 on padding.
            seg_label: B×H×W segmentation pseudo-labels; ``ignore_index`` marks unlabelled pixels.

        Returns:
            Scalar ``−weight · Σ P⊙gate⊙K(P) / B``.
        """
        if probs.element_size() < 4:  # lattice sums in half precision lose the small terms
            probs = probs.float()
        images, probs, roi, unlabelled = self._downscale(images_255, probs, roi_mask, seg_label)
        gate = energy_gate(probs, roi, unlabelled)
        probs = probs * roi.unsqueeze(1)
        b, k, h, w = probs.shape
        features = pixel_features(images, self.sigma_xy * self.scale, self.sigma_rgb)  # B×N×5
        values = probs.flatten(2).transpose(1, 2)  # B×N×K
        gate = gate.reshape(b, h * w, 1).to(values.dtype)
        if self.kernel == "exact":
            filtered = torch.stack([gaussian_filter_exact(f, v) for f, v in zip(features, values)])
            energy = (values * gate * filtered).sum()
        else:
            energy = _lattice_energy(features.to(values.dtype), values, gate, self.backend)
        return -self.weight * energy / b

    def _downscale(self, images, probs, roi_mask, seg_label):
        # Same resampling as the reference: nearest for image, box and labels, bilinear for P.
        resize = {"scale_factor": self.scale, "recompute_scale_factor": True}
        images = F.interpolate(images.detach().float(), **resize)
        probs = F.interpolate(probs, mode="bilinear", align_corners=False, **resize)
        roi = F.interpolate(roi_mask.unsqueeze(1).to(probs.dtype), **resize).squeeze(1)
        labels = F.interpolate(seg_label.unsqueeze(1).float(), **resize).squeeze(1)
        return images, probs, roi, labels.long() == self.ignore_index


# Eager under torch.compile: the lattice is built from data (unique codes, searched hashes, Python-int strides),
# which the compiler would specialise and recompile at every step, and inductor's Triton code on CUDA stores the
# int64 hash strides as int32 constants and fails to build (torch 2.11, H200).
@torch.compiler.disable
def _lattice_energy(features: torch.Tensor, values: torch.Tensor, gate: torch.Tensor, backend: str) -> torch.Tensor:
    lattice = PermutohedralLattice(features, backend=backend)
    return _GatedEnergy.apply(values, gate, lattice)


class _GatedEnergy(torch.autograd.Function):
    """``Σ values ⊙ gate ⊙ K(values)`` with the gate held constant, from one filtering of [P, gate ⊙ P].

    The gradient ``gate ⊙ K(P) + Kᵀ(gate ⊙ P)`` is what autograd gives through the lattice; both filtered maps
    come out of the forward, so the backward is one multiply.
    """

    @staticmethod
    def forward(ctx, values: torch.Tensor, gate: torch.Tensor, lattice: PermutohedralLattice) -> torch.Tensor:
        gated = gate * values  # B×N×K
        if not ctx.needs_input_grad[0]:
            return (gated * lattice.filter(values)).sum()
        filtered, gated_filtered = lattice.filter_pair(values, gated)
        ctx.save_for_backward(gate * filtered + gated_filtered)
        return (gated * filtered).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (direction,) = ctx.saved_tensors
        return grad * direction, None, None


def energy_gate(probs: torch.Tensor, roi: torch.Tensor, unlabelled: torch.Tensor) -> torch.Tensor:
    """Per-pixel weight of the energy: where the prediction is unsure and the pseudo-label gives no answer.

    Args:
        probs: B×K×h×w class probabilities (before masking with ``roi``).
        roi: B×h×w valid-box mask (1 inside).
        unlabelled: B×h×w bool, pixels without a pseudo-label.

    Returns:
        B×h×w detached gate ``max(roi − max_k P_k, 0)``, 1 on unlabelled pixels (also outside the box, where
        P is zeroed anyway).
    """
    gate = roi - probs.detach().max(dim=1).values
    gate = torch.where(unlabelled, torch.ones_like(gate), gate)
    return gate.clamp(min=0)


def pixel_features(images: torch.Tensor, sigma_xy: float, sigma_rgb: float) -> torch.Tensor:
    """Bilateral features of every pixel.

    Args:
        images: B×3×h×w RGB in 0..255.
        sigma_xy: spatial bandwidth in pixels of this resolution.
        sigma_rgb: colour bandwidth.

    Returns:
        B×(h·w)×5 features ``(x/σ_xy, y/σ_xy, r/σ_rgb, g/σ_rgb, b/σ_rgb)``, pixels in row-major order.
    """
    b, _, h, w = images.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=images.device, dtype=images.dtype),
        torch.arange(w, device=images.device, dtype=images.dtype),
        indexing="ij",
    )
    position = torch.stack([xs, ys]).expand(b, 2, h, w) / sigma_xy
    return torch.cat([position, images / sigma_rgb], dim=1).flatten(2).transpose(1, 2)
