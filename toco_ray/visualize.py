"""Figures and tables logged at each evaluation: CAM overlays, the over-smoothing curve, confusion, per-class IoU.

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot, no global backend), so this module is safe
to import anywhere and to call from worker processes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from toco_ray.data.palette import voc_palette
from toco_ray.metric_names import PAIR_TITLES

HEATMAP = "jet"
OVERLAY_ALPHA = 0.5  # heat-map weight over the image
PANEL_INCHES = 2.2


def class_names_or_default(names: Sequence[str] | None, num_classes: int) -> list[str]:
    """``["background", *names]``, or generic ``class1..classC`` names when none are known."""
    fg = list(names) if names else [f"class{k}" for k in range(1, num_classes + 1)]
    if len(fg) != num_classes:
        raise ValueError(f"{len(fg)} class names given for {num_classes} classes")
    return ["background", *fg]


def colorize_mask(mask: np.ndarray) -> np.ndarray:
    """``H×W`` class ids (255 = void) → ``H×W×3`` uint8 in VOC colours."""
    return voc_palette()[np.asarray(mask, dtype=np.uint8)]


def heat_overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """``H×W×3`` float image in [0,1] and ``H×W`` heat in [0,1] → blended ``H×W×3`` float RGB."""
    colored = matplotlib.colormaps[HEATMAP](np.clip(heat, 0.0, 1.0))[..., :3]
    return (1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * colored


def cam_overlay_figure(
    images: torch.Tensor,
    cams: torch.Tensor,
    aux_cams: torch.Tensor,
    labels: torch.Tensor,
    masks: Sequence[torch.Tensor],
    seg_preds: Sequence[torch.Tensor] | None,
    names: Sequence[str],
    title: str = "",
    class_names: Sequence[str] | None = None,
) -> Figure:
    """One row per probe image: image, ground truth, CAM, aux CAM (max over the image's classes), seg prediction.

    Each row names the classes its heat maps show; a legend gives the palette colour of every class in the ground
    truth and seg panels.

    Args:
        images: B×3×H×W in [0, 1].
        cams, aux_cams: B×C×H×W in [0, 1] at the image size.
        labels: B×C multi-hot image-level labels (which classes the heat map shows).
        masks: B ground-truth masks of class ids (any size; 255 = void).
        seg_preds: B seg predictions, or None before the seg branch has trained (no seg column then).
        names: B image names.
        class_names: ``["background", *classes]`` (default: generic names).
    """
    b = images.shape[0]
    classes = list(class_names) if class_names else class_names_or_default(None, labels.shape[1])
    columns = ("image", "ground truth", "CAM", "aux CAM") + (("seg",) if seg_preds is not None else ())
    fig = Figure(figsize=(PANEL_INCHES * len(columns), PANEL_INCHES * b + 0.6), layout="constrained")
    axes = fig.subplots(b, len(columns), squeeze=False)
    shown: set[int] = set()
    for i in range(b):
        image = images[i].permute(1, 2, 0).float().cpu().numpy()
        present = labels[i].bool().cpu()
        panels = [image, colorize_mask(masks[i].cpu().numpy()), heat_overlay(image, _present_max(cams[i], present)),
                  heat_overlay(image, _present_max(aux_cams[i], present))]
        shown |= set(np.unique(masks[i].cpu().numpy()).tolist())
        if seg_preds is not None:
            panels.append(colorize_mask(seg_preds[i].cpu().numpy()))
            shown |= set(np.unique(seg_preds[i].cpu().numpy()).tolist())
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=9)
        heat_classes = ", ".join(classes[k + 1] for k in np.flatnonzero(present.numpy())) or "no class"
        axes[i, 0].set_ylabel(f"{names[i]}\n({heat_classes})", fontsize=8)
    _palette_legend(fig, sorted(k for k in shown if k < len(classes)), classes)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _palette_legend(fig: Figure, ids: Sequence[int], classes: Sequence[str]) -> None:
    """A legend of the palette colours of the class ids drawn in the mask panels."""
    palette = voc_palette()
    handles = [Patch(facecolor=palette[k] / 255.0, edgecolor="grey", label=classes[k]) for k in ids]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8,
                   frameon=False)


def _present_max(cam: torch.Tensor, present: torch.Tensor) -> np.ndarray:
    if not present.any():
        return np.zeros(cam.shape[-2:], dtype=np.float32)
    return cam[present].amax(dim=0).float().cpu().numpy()


def oversmoothing_figure(
    curves: Mapping[int, Sequence[float]],
    cross_class: Mapping[str, Mapping[int, Sequence[float]]] | None = None,
) -> Figure:
    """Figure 2 of the paper: mean pairwise cosine similarity of patch tokens per block, one line per iteration.

    The first panel averages over all token pairs; each entry of ``cross_class`` adds a panel, on the same y
    axis, averaged over the pairs of that kind only (NaN blocks, where the images hold no such pair, are gaps).

    Args:
        curves: ``{iteration: [similarity at block 1, ..., block L]}`` over all token pairs.
        cross_class: ``{kind: {iteration: [similarity per block]}}``, e.g. ``"fg_bg"`` and ``"fg_fg"``.
    """
    panels = {"all": curves, **(cross_class or {})}
    fig = Figure(figsize=(4.5 * len(panels), 3.5), layout="constrained")  # room for the suptitle and labels
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    # one colour per iteration across panels, so the first panel's legend reads for all (a history restored from
    # an older checkpoint may lack the cross-class curves of its first evaluations)
    colors = {it: f"C{i % 10}" for i, it in enumerate(sorted(set().union(*panels.values())))}
    for ax, (kind, kind_curves) in zip(axes, panels.items()):
        _similarity_panel(ax, kind_curves, colors, PAIR_TITLES.get(kind, kind))
    axes[0].set_ylabel("mean pairwise cosine similarity")
    # cosines of cross-class pairs may go below 0 once classes separate; all-pairs curves rarely do
    lowest = _lowest(panels.values())
    axes[0].set_ylim(0.0 if lowest >= 0 else lowest - 0.05, 1.0)
    if curves:
        axes[0].legend(fontsize=8)
    fig.suptitle("patch-token over-smoothing (Figure 2)", fontsize=10)
    return fig


def _similarity_panel(ax, curves: Mapping[int, Sequence[float]], colors: Mapping[int, str], title: str) -> None:
    depth = 0
    for iteration in sorted(curves):
        values = list(curves[iteration])
        depth = max(depth, len(values))
        ax.plot(range(1, len(values) + 1), values, marker="o", color=colors[iteration], label=f"it {iteration}")
    ax.set_xticks(range(1, depth + 1))
    ax.set_xlabel("block")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)


def _lowest(panels) -> float:
    finite = [v for curves in panels for curve in curves.values() for v in curve if math.isfinite(v)]
    return min(finite, default=0.0)


def confusion_figure(confusions: Mapping[str, np.ndarray | torch.Tensor], class_names: Sequence[str]) -> Figure:
    """Row-normalised confusion matrices (rows = ground truth), one panel per prediction kind, with a colour bar."""
    k = len(class_names)
    n = len(confusions)
    side = max(4.5, 0.3 * k + 2.0)  # 9-point labels fit one per row
    fig = Figure(figsize=(side * n + 1.0, side), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    image = None
    for index, (ax, (kind, conf)) in enumerate(zip(axes, confusions.items())):
        conf = np.asarray(conf.cpu() if isinstance(conf, torch.Tensor) else conf, dtype=np.float64)
        rows = conf.sum(axis=1, keepdims=True)
        norm = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
        image = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(kind, fontsize=10)
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(class_names, rotation=90, fontsize=9)
        ax.set_yticklabels(class_names if index == 0 else [], fontsize=9)
        ax.set_xlabel("prediction")
        if index == 0:
            ax.set_ylabel("ground truth")
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="share of the row's pixels")
    fig.suptitle("confusion, normalised per ground-truth class (each row sums to 1)", fontsize=10)
    return fig


def iou_table(per_class: Mapping[str, np.ndarray], class_names: Sequence[str]) -> str:
    """Markdown table, one row per class and a final mean row, one column per prediction kind (IoU in %).

    Classes absent from both ground truth and prediction (NaN IoU) show "–" and are left out of the mean.
    """
    kinds = list(per_class)
    lines = ["| class | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for c, name in enumerate(class_names):
        cells = [_percent(per_class[kind][c]) for kind in kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    means = [
        _percent(float(np.nanmean(per_class[kind])) if not np.all(np.isnan(per_class[kind])) else math.nan)
        for kind in kinds
    ]
    lines.append("| **mean** | " + " | ".join(means) + " |")
    return "\n".join(lines) + "\n"


def _percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f}"
