"""ToCo's losses, one module each: classification, PTC, CTC (with its local crops), segmentation and the
dense-CRF energy regulariser (with its Gaussian filters)."""

from toco_ray.losses.cls import cls_loss
from toco_ray.losses.crops import sample_local_crops
from toco_ray.losses.ctc import ctc_loss
from toco_ray.losses.energy import DenseEnergyLoss, energy_gate, pixel_features
from toco_ray.losses.permutohedral import (
    PermutohedralLattice,
    gaussian_filter_exact,
    gaussian_filter_permutohedral,
)
from toco_ray.losses.ptc import PTCTerms, ptc_from_terms, ptc_loss, ptc_terms
from toco_ray.losses.seg import seg_loss

__all__ = [
    "DenseEnergyLoss",
    "PTCTerms",
    "PermutohedralLattice",
    "cls_loss",
    "ctc_loss",
    "energy_gate",
    "gaussian_filter_exact",
    "gaussian_filter_permutohedral",
    "pixel_features",
    "ptc_from_terms",
    "ptc_loss",
    "ptc_terms",
    "sample_local_crops",
    "seg_loss",
]
