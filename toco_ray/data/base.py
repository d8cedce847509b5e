"""The common interface of every dataset: a list of names, each read as one checked item dict.

An item is ``{"name": str, "image": uint8 H×W×3 RGB, "mask": uint8 H×W (255 = void) or None,
"label": float32 (C,) multi-hot}``. Cheap checks (folders, files named by the split list) run at
construction; content checks (decodable image, mask size and values) run when an item is read.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from toco_ray.data.errors import DatasetError
from toco_ray.data.labels import DERIVED_LABELS_FILE, IGNORE_INDEX, derive_labels, load_label_file

IMAGE_SUFFIX = ".jpg"
MASK_SUFFIX = ".png"
_STRIPPED_SUFFIXES = (".jpg", ".jpeg", ".png")


class SegDataset(Dataset):
    """Base reader. Subclasses locate folders and split lists; this class checks and reads them.

    Args:
        root: dataset root.
        split: split name (a list file ``{split}.txt`` found by the subclass).
        num_classes: C, foreground classes.
        need_masks: every name must have a mask (checked at construction).
        need_labels: every name must have an image-level label (from a label file or its mask); when
            False, names without one get an all-zero label (e.g. the VOC test split).
        limit: keep only the first ``limit`` names (0 = all).
        cache_dir: where derived labels are cached when the root is read-only (default: user cache).
    """

    # set by subclasses before SegDataset.__init__ runs
    image_dir: Path
    mask_dir: Path | None

    def __init__(
        self,
        root: str | Path,
        split: str,
        num_classes: int,
        *,
        need_masks: bool = True,
        need_labels: bool = True,
        limit: int = 0,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.num_classes = num_classes
        self.cache_dir = Path(cache_dir) if cache_dir else None
        names = self.read_split()
        self.names: list[str] = names[:limit] if limit > 0 else names
        self._check_files_exist(need_masks)
        self.labels = self._load_labels(need_labels)

    # --- hooks for subclasses -------------------------------------------------------------------
    def read_split(self) -> list[str]:
        """Returns the split's image names (no extension), in list order."""
        raise NotImplementedError

    def label_files(self) -> list[Path]:
        """Candidate multi-hot label files, first existing one wins."""
        return [self.root / "cls_labels.npy", self.root / "cls_labels_onehot.npy"]

    # --- paths ----------------------------------------------------------------------------------
    def image_path(self, name: str) -> Path:
        """``<image_dir>/<name>.jpg``."""
        return self.image_dir / f"{name}{IMAGE_SUFFIX}"

    def mask_path(self, name: str) -> Path | None:
        """``<mask_dir>/<name>.png``, or None when the dataset has no mask folder."""
        return self.mask_dir / f"{name}{MASK_SUFFIX}" if self.mask_dir is not None else None

    # --- reading --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Reads and checks item ``index`` → ``{"name", "image", "mask", "label"}`` (module docstring)."""
        name = self.names[index]
        image = self.read_image(name)
        mask = self.read_mask(name) if self.has_mask(name) else None
        if mask is not None and mask.shape != image.shape[:2]:
            raise DatasetError(
                f"mask {self.mask_path(name)} is {mask.shape[1]}×{mask.shape[0]} (W×H) but image "
                f"{self.image_path(name)} is {image.shape[1]}×{image.shape[0]}; expected the same size"
            )
        return {"name": name, "image": image, "mask": mask, "label": self.labels[name].copy()}

    def has_mask(self, name: str) -> bool:
        """Whether ``name``'s mask file exists."""
        path = self.mask_path(name)
        return path is not None and path.is_file()

    def read_image(self, name: str) -> np.ndarray:
        """Decodes ``name``'s image → uint8 ``H×W×3`` RGB; a corrupt file raises naming it."""
        path = self.image_path(name)
        try:
            with Image.open(path) as img:
                img.load()
                return np.asarray(img.convert("RGB"))
        except FileNotFoundError:
            raise DatasetError(f"image {path} does not exist (listed in split {self.split!r})") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise DatasetError(f"image {path} cannot be decoded ({err}); expected a valid JPEG") from None

    def read_mask(self, name: str) -> np.ndarray:
        """Decodes ``name``'s index PNG → uint8 ``H×W``; checks values lie in {0..C, 255}."""
        path = self.mask_path(name)
        if path is None:
            raise DatasetError(f"dataset {self.root} has no mask folder; cannot read the mask of {name!r}")
        try:
            with Image.open(path) as img:
                img.load()
                mode = img.mode
                mask = np.asarray(img)
        except FileNotFoundError:
            raise DatasetError(f"mask {path} does not exist (image {name!r} in split {self.split!r})") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise DatasetError(f"mask {path} cannot be decoded ({err}); expected an index PNG") from None
        if mode not in ("P", "L") or mask.ndim != 2:
            raise DatasetError(
                f"mask {path} has PIL mode {mode!r}; expected an index PNG (mode 'P' or 'L') holding class ids"
            )
        bad = np.unique(mask[(mask > self.num_classes) & (mask != IGNORE_INDEX)])
        if bad.size:
            raise DatasetError(
                f"mask {path} holds values {bad[:10].tolist()}; expected 0..{self.num_classes} "
                f"(background and classes) or {IGNORE_INDEX} (void)"
            )
        return mask.astype(np.uint8, copy=False)

    # --- construction-time checks ---------------------------------------------------------------
    def _check_files_exist(self, need_masks: bool) -> None:
        present = _stems(self.image_dir, IMAGE_SUFFIX)
        missing = [n for n in self.names if n not in present]
        if missing:
            raise DatasetError(
                f"split {self.split!r} lists {len(missing)} image(s) missing from {self.image_dir}, "
                f"first: {self.image_path(missing[0])} (expected <name>{IMAGE_SUFFIX} for every listed name)"
            )
        if not need_masks:
            return
        if self.mask_dir is None:
            raise DatasetError(f"dataset {self.root} has no mask folder; masks are needed for split {self.split!r}")
        masks = _stems(self.mask_dir, MASK_SUFFIX)
        missing = [n for n in self.names if n not in masks]
        if missing:
            raise DatasetError(
                f"split {self.split!r} lists {len(missing)} image(s) without a mask in {self.mask_dir}, "
                f"first: {self.mask_path(missing[0])} (expected <name>{MASK_SUFFIX} for every listed name)"
            )

    def _load_labels(self, need_labels: bool) -> dict[str, np.ndarray]:
        files = [p for p in self.label_files() if p.is_file()]
        labels = load_label_file(files[0], self.num_classes) if files else {}
        unlabelled = [n for n in self.names if n not in labels]
        derivable = [n for n in unlabelled if self.has_mask(n)]
        if derivable:
            cache = self._label_cache_path()
            derived = derive_labels(derivable, self.read_mask, self.num_classes, cache, self.cache_dir)
            labels.update({n: derived[n] for n in derivable})
        orphans = [n for n in unlabelled if n not in labels]
        if orphans and need_labels:
            source = f"label file {files[0]}" if files else f"a label file ({', '.join(map(str, self.label_files()))})"
            raise DatasetError(
                f"image {self.image_path(orphans[0])} has no image-level label: it is not in {source} and has "
                f"no mask to derive one from ({len(orphans)} such image(s) in split {self.split!r})"
            )
        for name in orphans:
            labels[name] = np.zeros(self.num_classes, dtype=np.float32)
        return labels

    def _label_cache_path(self) -> Path:
        return self.root / DERIVED_LABELS_FILE


def find_split_file(candidates: list[Path], split: str, root: Path) -> Path:
    """First existing split list among ``candidates``; raises naming them all."""
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise DatasetError(f"split {split!r} of {root} has no list file; looked for {tried}")


def read_name_list(path: Path) -> list[str]:
    """Names in a split list: one per line, ``name`` or SBD-style ``/JPEGImages/x.jpg /Seg.../x.png``.

    A bare name is read whole, spaces included; a name listed again is dropped (with a warning naming the file),
    so no image is processed or counted twice.
    """
    names: dict[str, int] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(f"split list {path} is not UTF-8 text (byte {err.start}: {err.reason})") from None
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        token = parts[0] if len(parts) == 2 and all("/" in p for p in parts) else line.strip()
        token = token.rsplit("/", 1)[-1]
        stem, dot, suffix = token.rpartition(".")
        name = stem if dot and f".{suffix.lower()}" in _STRIPPED_SUFFIXES else token
        names[name] = names.get(name, 0) + 1
    if not names:
        raise DatasetError(f"split list {path} is empty; expected one image name per line")
    repeated = {n: c for n, c in names.items() if c > 1}
    if repeated:
        first, count = next(iter(repeated.items()))
        print(f"warning: split list {path} lists {len(repeated)} name(s) more than once (first: {first!r}, "
              f"{count} times); each image is used once", file=sys.stderr, flush=True)
    return list(names)


def require_dir(path: Path, what: str, hint: str) -> Path:
    """Returns ``path`` if it is a folder, else raises ``<what> has no <path.name>/ (<hint>)``."""
    if not path.is_dir():
        raise DatasetError(f"{what} has no {path.name}/ ({hint})")
    return path


def _stems(folder: Path, suffix: str) -> set[str]:
    try:
        return {f[: -len(suffix)] for f in os.listdir(folder) if f.endswith(suffix)}
    except FileNotFoundError:
        return set()
