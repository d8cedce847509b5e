"""Dense CRF post-processing (Krähenbühl & Koltun, NIPS 2011) as in the final evaluation (SPEC §8).

One call refines the class probabilities of one image: unary = −log(softmax probabilities), a Gaussian
(position-only) pairwise term and a bilateral (position + colour) pairwise term, mean-field inference for
``crf_iters`` iterations. The parameters come from :class:`~toco_ray.config.EvalConfig`: the final segmentation
uses ``crf_*`` (:meth:`CRFParams.final`), CAM pseudo labels ``cam_crf_*`` (:meth:`CRFParams.cam_labels`), as the
reference's two tools do.

Example:
    >>> cfg = build_config("voc").eval
    >>> refined = dense_crf(image, probs, CRFParams.final(cfg))   # image 375×500×3 uint8, probs 21×375×500
    >>> refined.argmax(0).shape
    (375, 500)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_softmax

from toco_ray.config import EvalConfig
from toco_ray.memory import keep_freed_memory


@dataclass(frozen=True)
class CRFParams:
    """Mean-field iterations and the two pairwise kernels (pydensecrf's ``sxy``/``srgb``/``compat``)."""

    iters: int
    gauss_sxy: float
    gauss_compat: float
    bi_sxy: float
    bi_srgb: float
    bi_compat: float

    @classmethod
    def final(cls, cfg: EvalConfig) -> CRFParams:
        """The final segmentation's CRF (ref ``infer_seg_voc``: 1/1, 121/5/4)."""
        return cls(cfg.crf_iters, cfg.crf_gauss_sxy, cfg.crf_gauss_compat, cfg.crf_bi_sxy, cfg.crf_bi_srgb,
                   cfg.crf_bi_compat)

    @classmethod
    def cam_labels(cls, cfg: EvalConfig) -> CRFParams:
        """The CRF of CAM pseudo labels (ref ``infer_cam_crf_label``: 3/3, 36/3/4)."""
        return cls(cfg.crf_iters, cfg.cam_crf_gauss_sxy, cfg.cam_crf_gauss_compat, cfg.cam_crf_bi_sxy,
                   cfg.cam_crf_bi_srgb, cfg.cam_crf_bi_compat)


KEEP_FREED_MEMORY = True
"""Whether :func:`dense_crf` first tunes glibc to keep freed buffers (see :func:`keep_freed_memory`)."""


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> np.ndarray:
    """Refines per-pixel class probabilities with a fully connected CRF.

    Args:
        image: H×W×3 uint8 RGB image the probabilities belong to.
        probs: K×H×W class probabilities (each pixel sums to 1), any float dtype.
        params: iterations and kernel parameters (:meth:`CRFParams.final` or :meth:`CRFParams.cam_labels`).

    Returns:
        K×H×W float32 marginals after inference (argmax over K is the refined label map).

    Raises:
        ValueError: the image is not H×W×3 uint8 or its size differs from the probabilities'.
    """
    num_labels, height, width = probs.shape
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"dense_crf: image must be H×W×3 uint8, got {image.shape} {image.dtype}")
    if image.shape[:2] != (height, width):
        raise ValueError(f"dense_crf: image is {image.shape[:2]} (H, W) but probabilities are {(height, width)}")
    if KEEP_FREED_MEMORY:
        keep_freed_memory()
    crf = dcrf.DenseCRF2D(width, height, num_labels)
    # The C++ side reads raw buffers: arrays must be C-contiguous (else the result is silently wrong) and
    # writeable (Cython memoryviews refuse read-only ones, e.g. zero-copy arrays from Ray's object store).
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.astype(np.float32, copy=False))))
    crf.addPairwiseGaussian(sxy=params.gauss_sxy, compat=params.gauss_compat)
    rgb = np.require(image, dtype=np.uint8, requirements=["C_CONTIGUOUS", "WRITEABLE"])
    crf.addPairwiseBilateral(sxy=params.bi_sxy, srgb=params.bi_srgb, rgbim=rgb, compat=params.bi_compat)
    marginals = crf.inference(params.iters)
    return np.asarray(marginals, dtype=np.float32).reshape(num_labels, height, width)
