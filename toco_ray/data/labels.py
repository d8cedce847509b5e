"""Image-level labels: C-dim multi-hot vectors, read from a label file or derived from the masks and cached.

The label file is the reference's format: ``np.save`` of a dict ``name → (C,)`` 0/1 array, loaded with
``np.load(path, allow_pickle=True).item()``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from toco_ray.data.cache import default_cache_dir, save_npy_atomic
from toco_ray.data.errors import DatasetError

IGNORE_INDEX = 255  # void pixels in masks (VOC/COCO convention), never a class
DERIVED_LABELS_FILE = "cls_labels_derived.npy"  # cache of labels derived from masks, next to the data


def labels_from_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """mask ``H×W`` uint8 (0 background, 1..C classes, 255 void) → float32 ``(C,)`` multi-hot of 1..C present.

    Example:
        >>> labels_from_mask(np.array([[0, 2], [255, 3]], np.uint8), 4).tolist()
        [0.0, 1.0, 1.0, 0.0]
    """
    values = np.unique(mask)
    values = values[(values != 0) & (values != IGNORE_INDEX)].astype(np.int64)
    label = np.zeros(num_classes, dtype=np.float32)
    label[values[values <= num_classes] - 1] = 1.0
    return label


def load_label_file(path: Path, num_classes: int) -> dict[str, np.ndarray]:
    """Reads a multi-hot label file → ``{name: float32 (C,)}``; raises :class:`DatasetError` if malformed."""
    expected = f"expected np.save of a dict name → ({num_classes},) multi-hot array"
    try:
        data = np.load(path, allow_pickle=True)
        table = data.item() if data.dtype == object and data.ndim == 0 else None
    except (OSError, ValueError, EOFError) as err:
        raise DatasetError(f"label file {path} is not readable ({err}); {expected}") from None
    if not isinstance(table, dict):
        raise DatasetError(f"label file {path} does not hold a dict; {expected}")
    out: dict[str, np.ndarray] = {}
    for name, vector in table.items():
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape != (num_classes,):
            raise DatasetError(f"label file {path}: entry {name!r} has shape {vector.shape}; {expected}")
        out[str(name)] = vector
    return out


def derive_labels(
    names: Iterable[str],
    read_mask: Callable[[str], np.ndarray],
    num_classes: int,
    cache_path: Path,
    fallback_dir: Path | None = None,
) -> dict[str, np.ndarray]:
    """Labels derived from the masks of ``names``, cached in ``cache_path`` (merged with what it holds).

    Args:
        names: image names whose labels are needed.
        read_mask: ``name → H×W uint8`` mask reader (it checks the mask values).
        num_classes: C.
        cache_path: the cache file next to the data; when it cannot be written (read-only data),
            the cache goes to ``fallback_dir`` (default: the user cache) under a name hashed from it.
        fallback_dir: where to cache when ``cache_path``'s folder is read-only.

    Returns:
        ``{name: float32 (C,)}`` for every name.
    """
    fallback = (fallback_dir or default_cache_dir()) / "labels" / _hashed_name(cache_path)
    cached = _read_cache(cache_path, num_classes) or _read_cache(fallback, num_classes)
    missing = [n for n in dict.fromkeys(names) if n not in cached]
    if not missing:
        return cached
    cached.update({name: labels_from_mask(read_mask(name), num_classes) for name in missing})
    try:
        save_npy_atomic(cache_path, cached)
    except OSError:
        save_npy_atomic(fallback, cached)
    return cached


def _read_cache(path: Path, num_classes: int) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    try:
        return load_label_file(path, num_classes)
    except DatasetError:
        return {}  # a stale cache (other C, damaged) is simply rebuilt


def _hashed_name(path: Path) -> str:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    return f"{path.stem}-{digest}.npy"
