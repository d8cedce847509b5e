"""Token grids of images whose sides are not multiples of the patch size.

The network pads its input with zeros at the bottom/right up to the next multiple of the patch size, so the token
grid ``h×w = ceil(H/p)×ceil(W/p)`` covers the padded image. Maps at token stride are brought back to pixels by
upsampling to the padded size and cropping to ``H×W``; :func:`tokens_to_pixels` does both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def as_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def token_grid(image_size: tuple[int, int], patch_size: int | tuple[int, int]) -> tuple[int, int]:
    """Token grid ``(ceil(H/p), ceil(W/p))`` of an ``H×W`` image."""
    ph, pw = as_pair(patch_size)
    return -(-image_size[0] // ph), -(-image_size[1] // pw)


def pad_to_patch_multiple(images: torch.Tensor, patch_size: int | tuple[int, int]) -> torch.Tensor:
    """Zero-pads ``images (B×3×H×W)`` at the bottom/right to ``B×3×(h·p)×(w·p)``; a no-op when already aligned."""
    h, w = token_grid(tuple(images.shape[-2:]), patch_size)
    ph, pw = as_pair(patch_size)
    pad_h, pad_w = h * ph - images.shape[-2], w * pw - images.shape[-1]
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h))


def tokens_to_pixels(
    maps: torch.Tensor,
    image_size: tuple[int, int],
    patch_size: int | tuple[int, int],
    out_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Upsamples a token-stride map to the pixels of the image it was computed from.

    Args:
        maps: B×K×h×w at token stride, ``h×w`` the grid of the (padded) ``image_size`` image.
        image_size: ``(H, W)`` of the image before padding.
        patch_size: the backbone's patch size ``p``.
        out_size: final size; defaults to ``image_size`` (used by multi-scale CAM to go back to the original size).

    Returns:
        B×K×out_size, bilinear with ``align_corners=False``. When ``H, W`` are multiples of ``p`` this is one
        interpolation straight to ``out_size``; otherwise the map is upsampled to the padded size, cropped to
        ``H×W`` and, if ``out_size`` differs, resized again.
    """
    image_size = (int(image_size[0]), int(image_size[1]))
    out_size = image_size if out_size is None else (int(out_size[0]), int(out_size[1]))
    ph, pw = as_pair(patch_size)
    padded = (maps.shape[-2] * ph, maps.shape[-1] * pw)
    if padded == image_size:
        return F.interpolate(maps, size=out_size, mode="bilinear", align_corners=False)
    maps = F.interpolate(maps, size=padded, mode="bilinear", align_corners=False)
    maps = maps[..., : image_size[0], : image_size[1]]
    if out_size != image_size:
        maps = F.interpolate(maps, size=out_size, mode="bilinear", align_corners=False)
    return maps
