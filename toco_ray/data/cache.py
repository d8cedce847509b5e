"""Where the data layer caches what it derives (image-level labels, the synthetic dataset), written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from toco_ray.atomic import atomic_write

CACHE_ENV = "TOCO_RAY_CACHE"  # overrides the cache root (default ~/.cache/toco_ray)


def default_cache_dir() -> Path:
    """``$TOCO_RAY_CACHE`` if set, else ``~/.cache/toco_ray``."""
    env = os.environ.get(CACHE_ENV, "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "toco_ray"


def save_npy_atomic(path: Path, array: np.ndarray) -> Path:
    """``np.save`` without pickle to a temporary file in the same folder, then rename: readers never see half a
    file, and the file never holds Python objects (it loads with ``allow_pickle=False``)."""
    return atomic_write(path, lambda fh: np.save(fh, np.asarray(array), allow_pickle=False))
