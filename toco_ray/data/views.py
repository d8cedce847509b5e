"""Training and evaluation views (SPEC §4, §7): what one dataset item becomes before it meets the model.

Training, per image (crop side S = ``cfg.crop_size``):

* ``image``: the main global view. Random rescale in ``cfg.scale_range``, horizontal flip (p 0.5), random
  S×S crop padded with black (uint8 0) when the image is smaller, then colour jitter / greyscale / blur
  (p ``cfg.main_blur_p``) of the whole padded crop, then normalisation: the reference's order.
* ``local_view``: the same geometry as ``image`` pixel for pixel (same rescale, flip, crop, padding) with its
  own photometric draw (blur p ``cfg.local_blur_p``); local crops are cut from it with the ROI map computed on
  ``image``.
* ``global2``: the second global view, a RandomResizedCrop of the original image (scale
  ``cfg.global_crop_scale``) + flip + colour jitter / greyscale / blur / solarisation (DINO style).
* ``valid_box``: ``[y0, y1, x0, x1]``, half-open bounds of the non-padded pixels of ``image`` (and of
  ``local_view``) after all geometric transforms.

The reference flips both views once more after the crop, each with its own draw, and keeps the valid box of
the unflipped crop: the box is wrong whenever the main view flips, and the local view is misaligned with the main
view half of the time. ``compat.box_before_flip`` and ``compat.local_view_flip`` reproduce those flips. The two
draws are made whatever the switches say, so a switch changes only what it names.

All randomness comes from the ``numpy.random.Generator`` passed in, so a view is reproducible from
(item, seed); :class:`ViewDataset` derives that generator from (seed, epoch, index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from toco_ray.config import CompatConfig, DataConfig
from toco_ray.data.transforms import PhotometricAug, normalize, resize_image, to_float_tensor

GLOBAL2_BLUR_P = 0.1  # Gaussian blur probability on the second global view (ref, DINO global view 2)
GLOBAL2_SOLARIZE_P = 0.2  # solarisation probability on the second global view (ref, DINO)
RRC_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop aspect-ratio range (torchvision default, as the ref)
RRC_ATTEMPTS = 10  # RandomResizedCrop tries before falling back to a centre crop (torchvision)
FLIP_P = 0.5  # horizontal flip probability (ref)


@dataclass(frozen=True)
class CropGeometry:
    """Where the rescaled, flipped image lands in the S×S crop.

    Attributes:
        scaled_size: (h, w) of the image after rescaling.
        flip: whether it is flipped left-right (before cropping, as the reference does).
        src: ``(y0, y1, x0, x1)`` of the visible part, in the rescaled (and flipped) image.
        dst: ``(y0, y1, x0, x1)`` where that part lies in the crop: the valid box.
    """

    scaled_size: tuple[int, int]
    flip: bool
    src: tuple[int, int, int, int]
    dst: tuple[int, int, int, int]


def sample_crop_geometry(
    height: int, width: int, crop_size: int, scale_range: tuple[float, float], rng: np.random.Generator
) -> CropGeometry:
    """Draws rescale, flip and crop for a ``height×width`` image (reference ``random_scaling``/``random_crop``).

    Along an axis of rescaled length n: if n ≥ S the crop starts uniformly in [0, n − S]; otherwise the image is
    placed uniformly in the S-long crop and the rest is padding. Always draws four numbers from ``rng``.
    """
    scale = rng.uniform(*scale_range)
    flip = bool(rng.random() < FLIP_P)
    h, w = max(1, int(height * scale)), max(1, int(width * scale))
    sy, dy = _place(h, crop_size, int(rng.integers(0, abs(h - crop_size) + 1)))
    sx, dx = _place(w, crop_size, int(rng.integers(0, abs(w - crop_size) + 1)))
    return CropGeometry((h, w), flip, (*sy, *sx), (*dy, *dx))


def _place(n: int, crop: int, offset: int) -> tuple[tuple[int, int], tuple[int, int]]:
    if n >= crop:
        return (offset, offset + crop), (0, crop)
    return (0, n), (offset, offset + n)


def crop_region(image: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """uint8 ``H×W×3`` → the visible part ``(y1−y0)×(x1−x0)×3`` after rescale, flip and crop."""
    scaled = resize_image(image, geometry.scaled_size)
    if geometry.flip:
        scaled = scaled[:, ::-1]
    y0, y1, x0, x1 = geometry.src
    return scaled[y0:y1, x0:x1]


def padded_crop(image: np.ndarray, geometry: CropGeometry, crop_size: int) -> np.ndarray:
    """uint8 ``H×W×3`` → the ``S×S×3`` uint8 crop, the visible part at its valid box and black elsewhere."""
    canvas = np.zeros((crop_size, crop_size, 3), dtype=np.uint8)
    y0, y1, x0, x1 = geometry.dst
    canvas[y0:y1, x0:x1] = crop_region(image, geometry)
    return canvas


def sample_resized_crop(
    height: int, width: int, scale: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """torchvision ``RandomResizedCrop.get_params`` driven by ``rng`` → box ``(y0, y1, x0, x1)``."""
    area = height * width
    log_ratio = (math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1]))
    for _ in range(RRC_ATTEMPTS):
        target = area * rng.uniform(*scale)
        ratio = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            y0 = int(rng.integers(0, height - h + 1))
            x0 = int(rng.integers(0, width - w + 1))
            return y0, y0 + h, x0, x0 + w
    # fallback: the largest centre crop within the ratio range
    in_ratio = width / height
    if in_ratio < RRC_RATIO[0]:
        w, h = width, int(round(width / RRC_RATIO[0]))
    elif in_ratio > RRC_RATIO[1]:
        h, w = height, int(round(height * RRC_RATIO[1]))
    else:
        w, h = width, height
    y0, x0 = (height - h) // 2, (width - w) // 2
    return y0, y0 + h, x0, x0 + w


class TrainViews:
    """Builds the training views of one item (see the module docstring).

    Args:
        cfg: data section of the config (crop size, rescale range, photometric strengths and probabilities).
        compat: the ``compat`` section; ``box_before_flip`` and ``local_view_flip`` restore the reference's
            post-crop flips (see the module docstring).
        global2_blur_p: blur probability of the second global view.
        global2_solarize_p: solarisation probability of the second global view.

    Example:
        >>> views = TrainViews(DataConfig(crop_size=64))
        >>> item = {"name": "a", "image": np.zeros((50, 70, 3), np.uint8), "label": np.ones(20, np.float32)}
        >>> out = views(item, np.random.default_rng(0))
        >>> out["image"].shape, out["valid_box"].dtype
        (torch.Size([3, 64, 64]), torch.int64)
    """

    def __init__(
        self,
        cfg: DataConfig,
        compat: CompatConfig | None = None,
        *,
        global2_blur_p: float = GLOBAL2_BLUR_P,
        global2_solarize_p: float = GLOBAL2_SOLARIZE_P,
    ) -> None:
        compat = compat or CompatConfig()
        self.crop_size = cfg.crop_size
        self.scale_range = tuple(cfg.scale_range)
        self.global_crop_scale = tuple(cfg.global_crop_scale)
        self.box_before_flip = compat.on("box_before_flip")
        self.local_view_flip = compat.on("local_view_flip")
        jitter = tuple(cfg.color_jitter)
        self.main_aug = PhotometricAug(jitter, cfg.color_jitter_p, cfg.grayscale_p, cfg.main_blur_p)
        self.local_aug = PhotometricAug(jitter, cfg.color_jitter_p, cfg.grayscale_p, cfg.local_blur_p)
        self.global2_aug = PhotometricAug(
            jitter, cfg.color_jitter_p, cfg.grayscale_p, global2_blur_p, global2_solarize_p
        )

    def __call__(self, item: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """item (``image`` uint8 H×W×3, ``label`` (C,), ``name``) → views.

        Returns:
            ``image``, ``local_view``, ``global2``: float32 ``3×S×S``; ``valid_box``: int64 ``(4,)``;
            ``label``: float32 ``(C,)``; ``name``: str.
        """
        image = item["image"]
        geometry = sample_crop_geometry(*image.shape[:2], self.crop_size, self.scale_range, rng)
        crop = to_float_tensor(padded_crop(image, geometry, self.crop_size))
        post_crop_flips = rng.random(2) < FLIP_P  # the reference's second flips of the main and local views
        main = self.main_aug(crop, rng)
        local = self.local_aug(crop, rng)
        main, local = self.flip_after_crop(main, local, post_crop_flips)
        return {
            "name": item["name"],
            "image": normalize(main),
            "local_view": normalize(local),
            "global2": self.second_global_view(image, rng),
            "valid_box": torch.tensor(geometry.dst, dtype=torch.int64),
            "label": torch.as_tensor(item["label"], dtype=torch.float32),
        }

    def flip_after_crop(
        self, main: torch.Tensor, local: torch.Tensor, flips: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's post-crop flips, where a compat switch asks for them (the valid box is not flipped)."""
        main_flip = self.box_before_flip and flips[0]
        local_flip = flips[1] if self.local_view_flip else main_flip  # aligned: the local view follows the main
        return (main.flip(-1) if main_flip else main), (local.flip(-1) if local_flip else local)

    def second_global_view(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """RandomResizedCrop of the original image to S×S (bicubic), flip, photometric aug → ``3×S×S``."""
        y0, y1, x0, x1 = sample_resized_crop(*image.shape[:2], self.global_crop_scale, rng)
        size = (self.crop_size, self.crop_size)
        view = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC, box=(x0, y0, x1, y1)))
        if rng.random() < FLIP_P:
            view = view[:, ::-1]
        return normalize(self.global2_aug(to_float_tensor(view), rng))


class ValViews:
    """Evaluation view: the image resized to ``size×size`` (bilinear), or at native size when ``size`` is None.

    Returns dicts with ``image`` float32 ``3×size×size`` (or ``3×H×W``) normalised, ``mask`` int64 ``H×W`` at
    native resolution (None when the item has none), ``label`` float32 ``(C,)``, ``name`` and
    ``orig_size`` = (H, W).
    """

    def __init__(self, size: int | None) -> None:
        self.size = size

    def __call__(self, item: dict[str, Any], rng: np.random.Generator | None = None) -> dict[str, Any]:
        image = item["image"]
        resized = image if self.size is None else resize_image(image, (self.size, self.size))
        mask = item.get("mask")
        return {
            "name": item["name"],
            "image": normalize(to_float_tensor(resized)),
            "mask": None if mask is None else torch.from_numpy(mask.astype(np.int64)),
            "label": torch.as_tensor(item["label"], dtype=torch.float32),
            "orig_size": (int(image.shape[0]), int(image.shape[1])),
        }


class ViewDataset(Dataset):
    """Wraps a dataset with a view builder; item ``i`` of epoch ``e`` uses ``default_rng([seed, e, i])``.

    Call :meth:`set_epoch` before creating each epoch's DataLoader iterator (workers copy the dataset then).
    """

    def __init__(self, dataset: Dataset, views: TrainViews | ValViews, seed: int = 0) -> None:
        self.dataset = dataset
        self.views = views
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.views(self.dataset[index], rng)


LIST_KEYS = frozenset({"name", "mask", "orig_size"})  # per-image values whose sizes differ: never stacked


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batches view dicts: equal-shape tensors are stacked (``B×…``), ``LIST_KEYS`` and anything else
    (e.g. native-size images of different shapes) stay lists of length B."""
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        stackable = key not in LIST_KEYS and all(isinstance(v, torch.Tensor) for v in values)
        if stackable and all(v.shape == values[0].shape for v in values):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch
