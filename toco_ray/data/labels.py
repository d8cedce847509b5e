"""Image-level labels: C-dim multi-hot vectors, read from a label file or derived from the masks and cached.

A label file is a ``.npy`` holding a structured array with fields ``name`` (unicode) and ``label`` (``(C,)``
0/1), one record per image; it loads with ``np.load(path, allow_pickle=False)``, so reading it never runs code.

The reference's ``cls_labels_onehot.npy`` is instead a pickled dict ``name → (C,) array``: unpickling a file can
run any code it names, so it is not read directly. Convert it once with ``python -m pipelines.convert_labels
<file>`` (:func:`read_reference_label_file`, which unpickles NumPy arrays and nothing else).
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Callable, Iterable, Mapping
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


CONVERT_HINT = "python -m pipelines.convert_labels"


def labels_to_array(table: Mapping[str, np.ndarray]) -> np.ndarray:
    """``{name: (C,) multi-hot}`` → the label file's structured array (fields ``name``, ``label`` uint8 ``(C,)``)."""
    names = list(table)
    width = max((len(n) for n in names), default=1)
    size = len(np.asarray(next(iter(table.values()))).reshape(-1)) if names else 0
    out = np.zeros(len(names), dtype=[("name", f"U{max(width, 1)}"), ("label", "u1", (size,))])
    for i, name in enumerate(names):
        out[i] = (name, np.asarray(table[name]).reshape(-1).astype(np.uint8))
    return out


def save_label_file(path: Path, table: Mapping[str, np.ndarray]) -> Path:
    """Writes ``{name: (C,) multi-hot}`` as a label file (atomically, no pickle)."""
    return save_npy_atomic(path, labels_to_array(table))


def load_label_file(path: Path, num_classes: int) -> dict[str, np.ndarray]:
    """Reads a multi-hot label file → ``{name: float32 (C,)}``; raises :class:`DatasetError` if malformed.

    Never unpickles: a file holding Python objects (the reference's dict format) is refused with the command that
    converts it.
    """
    expected = f"expected a label file of ({num_classes},) multi-hot rows (see {CONVERT_HINT} --help)"
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise DatasetError(
                f"label file {path} holds pickled Python objects (the reference's dict format), which are not "
                f"loaded because unpickling can run code; if you trust the file, convert it once: "
                f"{CONVERT_HINT} {path}"
            ) from None
        raise DatasetError(f"label file {path} is not readable ({err}); {expected}") from None
    except (OSError, EOFError) as err:
        raise DatasetError(f"label file {path} is not readable ({err}); {expected}") from None
    if not isinstance(data, np.ndarray) or data.dtype.names is None or {"name", "label"} - set(data.dtype.names):
        raise DatasetError(f"label file {path} does not hold records with fields name and label; {expected}")
    out: dict[str, np.ndarray] = {}
    for record in data.reshape(-1):
        name, vector = str(record["name"]), np.asarray(record["label"], dtype=np.float32).reshape(-1)
        if vector.shape != (num_classes,):
            raise DatasetError(f"label file {path}: entry {name!r} has shape {vector.shape}; {expected}")
        out[name] = vector
    return out


# NumPy's own array reconstruction: all a pickled dict of arrays needs (numpy 1.x and 2.x module names).
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are accepted")
        return super().find_class(module, name)


def read_reference_label_file(path: Path) -> dict[str, np.ndarray]:
    """Reads the reference's pickled ``{name: (C,) array}`` label file, unpickling NumPy arrays only.

    Raises:
        DatasetError: the file is not a pickled dict of arrays, or it names anything else (code it would run).
    """
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = header(fh)
            if not dtype.hasobject or shape != ():
                raise DatasetError(f"label file {path} is not a pickled dict (it holds a {dtype} array {shape})")
            array = _NumpyOnlyUnpickler(io.BytesIO(fh.read()), encoding="latin1").load()
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise DatasetError(f"label file {path} cannot be converted: {err}") from None
    table = array.item() if isinstance(array, np.ndarray) and array.shape == () else array
    if not isinstance(table, dict):
        raise DatasetError(f"label file {path} does not hold a dict name → multi-hot array")
    return {str(k): np.asarray(v).reshape(-1) for k, v in table.items()}


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
        save_label_file(cache_path, cached)
    except OSError:
        save_label_file(fallback, cached)
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
