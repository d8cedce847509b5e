"""Where the data layer caches what it derives (image-level labels, the synthetic dataset), written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "TOCO_RAY_CACHE"  # overrides the cache root (default ~/.cache/toco_ray)


def default_cache_dir() -> Path:
    """``$TOCO_RAY_CACHE`` if set, else ``~/.cache/toco_ray``."""
    env = os.environ.get(CACHE_ENV, "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "toco_ray"


def save_npy_atomic(path: Path, obj: Any) -> Path:
    """``np.save`` to a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            # a dict is stored as a 0-d object array, the format of the reference's cls_labels files
            np.save(fh, np.asarray(obj, dtype=object) if isinstance(obj, dict) else obj, allow_pickle=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def is_writable_dir(path: Path) -> bool:
    """True when files can be created in ``path`` (it exists and permissions allow it)."""
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)
