"""Pixel-level building blocks of the views: ImageNet normalisation, resizing, photometric augmentation.

Every random draw comes from a ``numpy.random.Generator`` passed in by the caller, so a view is a pure function
of (image, seed). Photometric ops work on float tensors ``3×H×W`` in [0, 1] (torchvision functional ops).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

# ImageNet statistics, used for every backbone (also the 21k weights, as the reference does).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

BLUR_SIGMA_RANGE = (0.1, 2.0)  # Gaussian blur sigma in pixels (ref/DINO GaussianBlur radius_min/max)
SOLARIZE_THRESHOLD = 128 / 255  # pixels at or above are inverted (ref: PIL ImageOps.solarize default 128)


def to_float_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``H×W×3`` RGB array → float32 tensor ``3×H×W`` in [0, 1]."""
    # astype copies into a fresh writable array (PIL-backed arrays are read-only)
    return torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).div_(255.0).contiguous()


def normalize(image: torch.Tensor) -> torch.Tensor:
    """Float image(s) in [0, 1], ``3×H×W`` or ``B×3×H×W`` → ImageNet-normalised, same shape."""
    mean = image.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (image - mean) / std


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`: ``3×H×W`` or ``B×3×H×W`` normalised images → [0, 1] (clamped).

    Example:
        >>> x = torch.rand(2, 3, 4, 4)
        >>> torch.allclose(denormalize(normalize(x)), x, atol=1e-6)
        True
    """
    mean = images.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (images * std + mean).clamp_(0.0, 1.0)


def resize_image(image: np.ndarray, size: tuple[int, int], resample: int = Image.BILINEAR) -> np.ndarray:
    """Resizes a uint8 ``H×W×3`` array to ``size = (height, width)`` with PIL (bilinear by default)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), resample=resample))


@dataclass
class PhotometricAug:
    """Colour jitter, greyscale, Gaussian blur and solarisation, each applied with its own probability.

    The same number of values is drawn from ``rng`` whatever is applied, so the draws of later stages
    (and of other views) do not depend on which photometric ops fired.

    Args:
        jitter: (brightness, contrast, saturation, hue) strengths, as torchvision ``ColorJitter``.
        jitter_p: probability of the colour jitter (applied in a random order, as torchvision does).
        grayscale_p: probability of converting to 3-channel greyscale.
        blur_p: probability of a Gaussian blur with sigma uniform in ``BLUR_SIGMA_RANGE``.
        solarize_p: probability of solarisation.
    """

    jitter: tuple[float, float, float, float]
    jitter_p: float
    grayscale_p: float
    blur_p: float
    solarize_p: float = 0.0

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """image ``3×H×W`` float in [0, 1] → augmented ``3×H×W`` float in [0, 1]."""
        apply = rng.random(4) < (self.jitter_p, self.grayscale_p, self.blur_p, self.solarize_p)
        order = rng.permutation(4)
        b, c, s, h = self.jitter
        factors = (
            rng.uniform(max(0.0, 1 - b), 1 + b),
            rng.uniform(max(0.0, 1 - c), 1 + c),
            rng.uniform(max(0.0, 1 - s), 1 + s),
            rng.uniform(-h, h),
        )
        sigma = rng.uniform(*BLUR_SIGMA_RANGE)
        if apply[0]:
            image = _color_jitter(image, order, factors)
        if apply[1]:
            image = TF.rgb_to_grayscale(image, num_output_channels=3)
        if apply[2]:
            image = gaussian_blur(image, sigma)
        if apply[3]:
            image = TF.solarize(image, threshold=SOLARIZE_THRESHOLD)
        return image


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blurs ``3×H×W`` with an isotropic Gaussian of ``sigma`` pixels (kernel covers ±3 sigma)."""
    radius = max(1, math.ceil(3 * sigma))
    size = min(2 * radius + 1, _largest_odd(min(image.shape[-2:])))
    if size < 3:
        return image
    return TF.gaussian_blur(image, kernel_size=[size, size], sigma=[sigma, sigma])


def _largest_odd(n: int) -> int:
    return n if n % 2 else n - 1


def _color_jitter(image: torch.Tensor, order: np.ndarray, factors: tuple[float, ...]) -> torch.Tensor:
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for k in order:
        if k == 3 and factors[3] == 0.0:
            continue  # hue 0 is the identity; skip its RGB↔HSV round trip
        image = ops[k](image, float(factors[k]))
    return image
