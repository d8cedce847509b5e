"""A procedurally generated VOC-layout dataset with non-trivial weak supervision, for tests and demos.

Twenty classes = 5 shape families × 4 texture patterns, each instance in random colours, so a class is told
apart by silhouette and texture, never by colour. An image holds 1–4 classes (some pairs tend to co-occur,
as in real data), one or two instances per class drawn in sequence (later ones occlude earlier ones), on a
cluttered background (smooth colour field, soft blobs, faint stripes, noise). Sizes are 150–260 px per side,
never square nor a multiple of 16. Masks carry a 1–3 px void (255) band on object borders, as VOC does.

Everything is a pure function of the seed: image ``i`` of a split is drawn from ``default_rng([seed, split,
i])``, so the same seed writes byte-identical files and a larger dataset extends a smaller one.

Example:
    >>> root = generate_dataset("/tmp/syn", num_train=8, num_val=4, seed=0)  # doctest: +SKIP
    >>> VOCDataset(root, "train")[0]["label"].shape  # doctest: +SKIP
    (20,)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from toco_ray.data.cache import default_cache_dir, save_npy_atomic
from toco_ray.data.errors import DatasetError
from toco_ray.data.labels import IGNORE_INDEX, labels_from_mask
from toco_ray.data.palette import voc_palette
from toco_ray.data.voc import VOCDataset

SHAPES = ("ellipse", "rectangle", "triangle", "cross", "star")
TEXTURES = ("stripes", "checker", "dots", "speckle")
CLASS_NAMES = tuple(f"{s}-{t}" for s in SHAPES for t in TEXTURES)  # class k+1 in masks = CLASS_NAMES[k]
NUM_CLASSES = len(CLASS_NAMES)

DEFAULT_NUM_TRAIN = 400  # enough for the synthetic preset to learn CAMs in a few hundred iterations
DEFAULT_NUM_VAL = 100
SIDE_RANGE = (120, 190)  # image side in pixels, drawn per axis; close to the 128 crop so a crop sees most objects
CLASS_COUNT_P = (0.5, 0.3, 0.15, 0.05)  # P(1..4 classes per image) before co-occurring partners are added
MAX_CLASSES = 4
SECOND_INSTANCE_P = 0.3  # probability that a class appears twice
MAX_INSTANCES = 5  # objects per image at most (every chosen class keeps at least one)
CO_OCCUR_PAIRS = ((0, 13), (2, 9), (4, 17), (6, 11), (15, 18))  # class index pairs that tend to co-occur
CO_OCCUR_P = 0.6  # probability of adding the partner of a paired class
OBJECT_SIDE = (0.35, 0.75)  # diameter of the circle around an object, fraction of the shorter side
MIN_VISIBLE = 0.015  # each class must show this fraction of the image after occlusion, else redraw the layout
MAX_LAYOUT_TRIES = 10
PERIOD_RANGE = (8.0, 13.0)  # texture period in pixels (≥ 4 px even at the 0.5 rescale)
SPECKLE_DENSITY = 0.35  # fraction of speckle pixels in colour B
# Colour is a weak cue, as in real data (skies tend to be blue): with probability CLASS_HUE_P an instance's main
# colour takes its class hue ± CLASS_HUE_SPREAD (hues 18° apart, ordered so hue neighbours differ in shape and
# texture); otherwise it is uniformly random. Training hue jitter (±36°) blurs neighbours further, so shape and
# texture are needed to tell classes apart.
CLASS_HUE_P = 0.7
CLASS_HUE_SPREAD = 0.04  # in turns (±14°)
CLASS_HUES = tuple(((7 * k) % 20) / 20 for k in range(20))  # class k's hue in turns
MIN_COLOR_DISTANCE = 110.0  # the two colours of a texture differ by at least this (RGB Euclidean)
VOID_WIDTH = (1, 3)  # void band width in pixels on object borders (inclusive range)
NOISE_STD = 6.0  # per-pixel Gaussian noise over the whole image (0..255 scale)
JPEG_QUALITY = 90
_SPLIT_CODES = {"train": 0, "val": 1}


# --- one image ----------------------------------------------------------------------------------
def render_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draws one image and its mask.

    Returns:
        image ``H×W×3`` uint8 RGB and mask ``H×W`` uint8 (0 background, 1..20 classes, 255 void).
    """
    height, width = _image_size(rng)
    image = _background(rng, height, width)
    classes = _pick_classes(rng)
    for _ in range(MAX_LAYOUT_TRIES):
        layer, label = _draw_objects(rng, classes, height, width)
        if _all_visible(label, classes):
            break
    mask_fg = label > 0
    image[mask_fg] = layer[mask_fg]
    image += rng.normal(0.0, NOISE_STD, size=image.shape).astype(np.float32)
    width_px = int(rng.integers(VOID_WIDTH[0], VOID_WIDTH[1] + 1))
    return np.clip(image, 0, 255).astype(np.uint8), _void_borders(label, width_px)


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    while True:
        h, w = (int(v) for v in rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1, size=2))
        if h != w and h % 16 and w % 16:
            return h, w


def _pick_classes(rng: np.random.Generator) -> list[int]:
    count = int(rng.choice(len(CLASS_COUNT_P), p=CLASS_COUNT_P)) + 1
    chosen = [int(c) for c in rng.permutation(NUM_CLASSES)[:count]]
    partner_of = {a: b for pair in CO_OCCUR_PAIRS for a, b in (pair, pair[::-1])}
    for c in list(chosen):
        partner = partner_of.get(c)
        add = rng.random() < CO_OCCUR_P  # drawn for every class so the stream does not depend on pairing
        if partner is not None and add and partner not in chosen and len(chosen) < MAX_CLASSES:
            chosen.append(partner)
    return chosen


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    grid = rng.uniform(0, 255, size=(int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3)).astype(np.uint8)
    field = np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(rng.integers(3, 9))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        sy, sx = rng.uniform(0.04, 0.18, size=2) * min(h, w)
        alpha = rng.uniform(0.3, 0.8) * np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))
        field += alpha[..., None] * (rng.uniform(0, 255, size=3).astype(np.float32) - field)
    amplitude, period, theta = rng.uniform(0, 14), rng.uniform(4, 16), rng.uniform(0, np.pi)
    stripes = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    return field + amplitude * stripes[..., None]


def _draw_objects(rng: np.random.Generator, classes: list[int], h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    seconds = [c for c, again in zip(classes, rng.random(len(classes)) < SECOND_INSTANCE_P) if again]
    instances = (classes + seconds)[:MAX_INSTANCES]
    instances = [instances[i] for i in rng.permutation(len(instances))]
    layer = np.zeros((h, w, 3), dtype=np.float32)
    label = np.zeros((h, w), dtype=np.uint8)
    # many objects share the image, so each is smaller
    top = max(OBJECT_SIDE[0] + 0.1, OBJECT_SIDE[1] - 0.05 * (len(instances) - 1))
    for cls in instances:
        extent = rng.uniform(OBJECT_SIDE[0], top) * min(h, w)
        _draw_instance(rng, cls, extent, layer, label)
    return layer, label


def _draw_instance(rng: np.random.Generator, cls: int, extent: float, layer: np.ndarray, label: np.ndarray):
    h, w = label.shape
    radius = extent / 2
    cy, cx = rng.uniform(0.15 * h, 0.85 * h), rng.uniform(0.15 * w, 0.85 * w)
    theta, aspect = rng.uniform(0, 2 * np.pi), rng.uniform(0.65, 1.0)
    y0, y1 = max(0, int(cy - radius) - 1), min(h, int(cy + radius) + 2)
    x0, x1 = max(0, int(cx - radius) - 1), min(w, int(cx + radius) + 2)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    # object frame, in pixels: u along the rotated x axis, v across it
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    shape, texture = divmod(cls, len(TEXTURES))
    inside = _SHAPE_FNS[shape](u / radius, v / radius, aspect)
    pattern = _TEXTURE_FNS[texture](u, v, rng)
    color_a, color_b = _two_colors(rng, cls)
    pixels = np.where(pattern[..., None], color_b, color_a)
    layer[y0:y1, x0:x1][inside] = pixels[inside]
    label[y0:y1, x0:x1][inside] = cls + 1


def _ellipse(u: np.ndarray, v: np.ndarray, aspect: float) -> np.ndarray:
    return u**2 + (v / aspect) ** 2 <= 1.0


def _rectangle(u: np.ndarray, v: np.ndarray, aspect: float) -> np.ndarray:
    return (np.abs(u) <= 0.7) & (np.abs(v) <= 0.7 * aspect)


def _triangle(u: np.ndarray, v: np.ndarray, aspect: float) -> np.ndarray:
    inside = np.ones(u.shape, dtype=bool)
    for k in range(3):  # equilateral, inscribed in the unit circle: three half-planes at inradius 0.5
        phi = -np.pi / 2 + 2 * np.pi * k / 3
        inside &= u * np.cos(phi) + v * np.sin(phi) <= 0.5
    return inside


def _cross(u: np.ndarray, v: np.ndarray, aspect: float) -> np.ndarray:
    arm, half_width = 0.95, 0.3 * aspect
    return ((np.abs(u) <= arm) & (np.abs(v) <= half_width)) | ((np.abs(u) <= half_width) & (np.abs(v) <= arm))


def _star(u: np.ndarray, v: np.ndarray, aspect: float) -> np.ndarray:
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    return rho <= 0.42 + 0.58 * np.abs(np.cos(2.5 * phi)) ** 2  # five points, inner radius 0.42


def _stripes(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    period = rng.uniform(*PERIOD_RANGE)
    return np.mod(u, period) < period / 2


def _checker(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cell = rng.uniform(*PERIOD_RANGE) * 0.7
    return (np.floor(u / cell) + np.floor(v / cell)) % 2 == 0


def _dots(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    period = rng.uniform(*PERIOD_RANGE) + 1.0
    du, dv = np.mod(u, period) - period / 2, np.mod(v, period) - period / 2
    return du**2 + dv**2 <= (0.32 * period) ** 2


def _speckle(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.random(u.shape, dtype=np.float32) < SPECKLE_DENSITY


_SHAPE_FNS = (_ellipse, _rectangle, _triangle, _cross, _star)
_TEXTURE_FNS = (_stripes, _checker, _dots, _speckle)


def _two_colors(rng: np.random.Generator, cls: int) -> tuple[np.ndarray, np.ndarray]:
    candidates = rng.uniform(0, 255, size=(8, 3)).astype(np.float32)
    tinted = rng.random() < CLASS_HUE_P
    hue = CLASS_HUES[cls] + rng.uniform(-CLASS_HUE_SPREAD, CLASS_HUE_SPREAD)
    saturation, value = rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0)
    color_a = _hsv_to_rgb(hue, saturation, value) if tinted else candidates[0]
    far = np.linalg.norm(candidates[1:] - color_a, axis=1) >= MIN_COLOR_DISTANCE
    color_b = candidates[1:][np.argmax(far)] if far.any() else 255.0 - color_a
    return color_a, color_b


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    rgb = value - value * saturation * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return (255.0 * rgb).astype(np.float32)


def _all_visible(label: np.ndarray, classes: list[int]) -> bool:
    counts = np.bincount(label.ravel(), minlength=NUM_CLASSES + 1)
    return all(counts[c + 1] >= MIN_VISIBLE * label.size for c in classes)


def _void_borders(label: np.ndarray, width: int) -> np.ndarray:
    """Marks void every pixel within a ``width``-px band straddling a label change (VOC-style borders)."""
    lo, hi = -(width // 2), (width + 1) // 2
    pad = max(-lo, hi)
    padded = np.pad(label, pad, mode="edge")
    h, w = label.shape
    border = np.zeros(label.shape, dtype=bool)
    for dy in range(lo, hi + 1):
        for dx in range(lo, hi + 1):
            border |= padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w] != label
    mask = label.copy()
    mask[border] = IGNORE_INDEX
    return mask


# --- a whole tree ---------------------------------------------------------------------------------
def generate_dataset(
    out: str | Path,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Writes a complete VOC-layout tree into ``out`` and returns it.

    Writes ``JPEGImages/*.jpg``, ``SegmentationClassAug/*.png`` (palette PNG, VOC colours),
    ``ImageSets/Segmentation/{train,train_aug,val}.txt`` (``train_aug`` = ``train``, so the VOC preset's split
    name works) and ``cls_labels.npy`` (dict name → (20,) multi-hot, derived from the written masks).

    Args:
        out: target folder (created; existing files with the same names are overwritten).
        num_train, num_val: number of images per split.
        seed: generator seed; the same seed gives byte-identical files.
        progress: called as ``progress(done, total)`` after every image.
    """
    out = Path(out)
    image_dir, mask_dir = out / "JPEGImages", out / "SegmentationClassAug"
    list_dir = out / "ImageSets" / "Segmentation"
    for folder in (image_dir, mask_dir, list_dir):
        folder.mkdir(parents=True, exist_ok=True)
    palette = voc_palette().ravel().tolist()
    labels: dict[str, np.ndarray] = {}
    total, done = num_train + num_val, 0
    for split, count in (("train", num_train), ("val", num_val)):
        names = [f"{split}_{i:05d}" for i in range(count)]
        for i, name in enumerate(names):
            image, mask = render_sample(np.random.default_rng([seed, _SPLIT_CODES[split], i]))
            Image.fromarray(image).save(image_dir / f"{name}.jpg", quality=JPEG_QUALITY)
            png = Image.fromarray(mask, mode="P")
            png.putpalette(palette)
            png.save(mask_dir / f"{name}.png")
            labels[name] = labels_from_mask(mask, NUM_CLASSES).astype(np.uint8)
            done += 1
            if progress is not None:
                progress(done, total)
        text = "".join(f"{n}\n" for n in names)
        (list_dir / f"{split}.txt").write_text(text)
        if split == "train":
            (list_dir / "train_aug.txt").write_text(text)
    save_npy_atomic(out / "cls_labels.npy", labels)
    return out


def default_dataset_dir(seed: int, num_train: int, num_val: int, cache_dir: str | Path | None = None) -> Path:
    """``<cache>/synthetic-<seed>-<num_train>-<num_val>`` (cache: ``$TOCO_RAY_CACHE`` or ``~/.cache/toco_ray``)."""
    base = Path(cache_dir) if cache_dir else default_cache_dir()
    return base / f"synthetic-{seed}-{num_train}-{num_val}"


def ensure_default_dataset(
    seed: int = 0, num_train: int = 0, num_val: int = 0, cache_dir: str | Path | None = None
) -> Path:
    """Generates the synthetic dataset once into the cache and returns its root (0 counts = defaults).

    Generation goes to a temporary sibling folder renamed into place when complete, so concurrent
    callers (several training workers) never see a partial tree; the loser of a race discards its copy.
    """
    num_train = num_train or DEFAULT_NUM_TRAIN
    num_val = num_val or DEFAULT_NUM_VAL
    target = default_dataset_dir(seed, num_train, num_val, cache_dir)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        generate_dataset(tmp, num_train, num_val, seed)
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class SyntheticDataset(VOCDataset):
    """The synthetic tree read as VOC; ``root=None`` uses (and if needed generates) the cached default.

    Args:
        root: a tree written by :func:`generate_dataset`, or None for the cached default.
        split: ``train`` (= ``train_aug``) or ``val``.
        num_classes: must be 20.
        seed, num_train, num_val: select the default tree when ``root`` is None (0 = defaults).
        cache_dir: cache root for the default tree and derived labels.
        Other arguments as :class:`~toco_ray.data.voc.VOCDataset`.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        num_classes: int = NUM_CLASSES,
        *,
        seed: int = 0,
        num_train: int = 0,
        num_val: int = 0,
        need_masks: bool = True,
        need_labels: bool = True,
        limit: int = 0,
        cache_dir: str | Path | None = None,
    ) -> None:
        if num_classes != NUM_CLASSES:
            raise DatasetError(f"the synthetic dataset has {NUM_CLASSES} classes; got num_classes={num_classes}")
        if root is None:
            root = ensure_default_dataset(seed, num_train, num_val, cache_dir)
        super().__init__(
            root,
            split,
            num_classes,
            need_masks=need_masks,
            need_labels=need_labels,
            limit=limit,
            cache_dir=cache_dir,
        )
