"""The PASCAL VOC colour palette used by index PNG masks (class k is drawn in ``voc_palette()[k]``)."""

from __future__ import annotations

import numpy as np


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """Returns the VOC palette as a ``num_colors×3`` uint8 array (index 255 = void, drawn cream white).

    The VOC devkit builds colour k from the bits of k spread over the high bits of R, G and B.

    Example:
        >>> voc_palette()[1].tolist()  # class 1 (aeroplane) is dark red
        [128, 0, 0]
    """
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for k in range(num_colors):
        code, r, g, b = k, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (code & 1) << shift
            g |= ((code >> 1) & 1) << shift
            b |= ((code >> 2) & 1) << shift
            code >>= 3
        palette[k] = (r, g, b)
    return palette
