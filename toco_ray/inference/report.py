"""What an inference run reports: mIoU from the per-image confusion counts, the results table, overlays, MLflow.

mIoU and per-class IoU are computed from the confusion matrices summed over the per-image records (SPEC §8);
the same counts are in ``results.parquet``, so anyone can recompute them from the table. Pseudo-label kinds
(255 = no label) are scored on their labelled pixels only, with their coverage (labelled / all pixels) beside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from PIL import Image

from toco_ray.atomic import atomic_write
from toco_ray.inference.outputs import OutputLayout, write_parquet
from toco_ray.inference.steps import PARTIAL_KINDS, InferenceTask, dense_confusion
from toco_ray.metrics import iou_from_confusion
from toco_ray.tracking import (
    DEFAULT_EXPERIMENT,
    RunLogger,
    end_run,
    provenance_tags,
    resolve_experiment,
    start_run,
)
from toco_ray.visualize import colorize_mask, iou_table

STAGES = ("read", "infer", "crf", "write")
OVERLAY_ALPHA = 0.5  # prediction colours over the image


def summed_confusion(records: Sequence[dict[str, Any]], kind: str, num_classes: int) -> np.ndarray:
    """K×K int64 sum of one kind's confusion matrices over the records that have a mask."""
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    for record in records:
        if kind in record["conf"]:
            total += dense_confusion(record["conf"][kind], num_classes)
    return total


def kind_metrics(records: Sequence[dict[str, Any]], kind: str, class_names: Sequence[str]) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU (None where a class never occurs) of one label kind."""
    result = iou_from_confusion(summed_confusion(records, kind, len(class_names)))
    metrics: dict[str, Any] = {
        "miou": _finite(result.miou),
        "pixel_acc": _finite(result.pixel_acc),
        "per_class": {name: _finite(v) for name, v in zip(class_names, result.per_class)},
    }
    if kind in PARTIAL_KINDS:
        labelled = sum(r["labelled_px"][kind] for r in records)
        pixels = sum(r["height"] * r["width"] for r in records)
        metrics["coverage"] = labelled / pixels if pixels else None
    return metrics


def throughput(records: Sequence[dict[str, Any]], wall_s: float, first_s: float = math.nan) -> dict[str, float]:
    """Images/s of the run: overall (wall clock), after the first image (start-up excluded), and of one worker
    of each stage (from the per-image timings)."""
    n = len(records)
    out = {
        "images_per_s": n / wall_s if wall_s > 0 else math.nan,
        "steady_images_per_s": (n - 1) / (wall_s - first_s) if n > 1 and wall_s > first_s else math.nan,
        "first_image_s": first_s,
        "wall_s": wall_s,
    }
    for stage in STAGES:
        seconds = sum(r[f"{stage}_s"] for r in records)
        out[f"{stage}_s_per_image"] = seconds / n if n else math.nan
        out[f"{stage}_images_per_s_per_worker"] = n / seconds if seconds > 0 else math.nan
    return {key: _finite(value) for key, value in out.items()}  # None, not NaN: summary.json stays valid JSON


def build_summary(
    task: InferenceTask,
    records: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    run: dict[str, Any],
) -> dict[str, Any]:
    """The run's summary: settings and counts (``run``), metrics of every label kind (images with a mask)."""
    with_mask = [r for r in records if r["has_mask"]]
    metrics = {kind: kind_metrics(with_mask, kind, class_names) for kind in task.kinds} if with_mask else {}
    return {**run, "num_with_mask": len(with_mask), "final_kind": task.final_kind, "metrics": metrics}


def results_rows(records: Sequence[dict[str, Any]], kinds: Sequence[str]) -> list[dict[str, Any]]:
    """Flat Parquet rows: the record's scalars; per kind ``conf_<kind>_index`` / ``conf_<kind>_count`` (the
    non-zero cells of the image's K×K confusion matrix, flat index = ground truth·K + prediction; empty without a
    mask) and, for pseudo labels, ``labelled_px_<kind>``."""
    rows = []
    for r in records:
        row = {k: v for k, v in r.items() if k not in ("conf", "labelled_px")}
        for kind in kinds:
            sparse = r["conf"].get(kind, {"index": [], "count": []})
            row[f"conf_{kind}_index"] = sparse["index"]
            row[f"conf_{kind}_count"] = sparse["count"]
            if kind in PARTIAL_KINDS:
                row[f"labelled_px_{kind}"] = r["labelled_px"][kind]
        rows.append(row)
    return rows


def write_results(layout: OutputLayout, records: Sequence[dict[str, Any]], kinds: Sequence[str]) -> Path:
    return write_parquet(layout.results, results_rows(records, kinds))


def per_class_table(summary: dict[str, Any]) -> str:
    """Markdown table of per-class IoU (%), one column per label kind ("" without metrics)."""
    if not summary["metrics"]:
        return ""
    class_names = list(next(iter(summary["metrics"].values()))["per_class"])
    per_class = {
        kind: np.array([math.nan if m["per_class"][c] is None else m["per_class"][c] for c in class_names])
        for kind, m in summary["metrics"].items()
    }
    return iou_table(per_class, class_names)


def write_overlays(layout: OutputLayout, task: InferenceTask, items: Sequence[dict[str, Any]]) -> list[Path]:
    """One PNG per item: image | ground truth | final prediction blended over the image.

    Args:
        items: dicts with ``name``, ``image`` (H×W×3 uint8) and ``mask`` (H×W, or 0×0 without ground truth).
    """
    paths = []
    for item in items:
        image = item["image"].astype(np.float32)
        pred = np.asarray(Image.open(layout.label_png(task.final_kind, item["name"])))
        blended = (1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * colorize_mask(pred).astype(np.float32)
        panels = [image, blended]
        if item["mask"].size:
            panels.insert(1, colorize_mask(item["mask"]).astype(np.float32))
        strip = Image.fromarray(np.concatenate(panels, axis=1).clip(0, 255).astype(np.uint8))
        paths.append(atomic_write(layout.overlay(item["name"]), lambda fh, s=strip: s.save(fh, format="PNG")))
    return paths


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """Console lines: mIoU per kind (coverage for pseudo labels), counts, throughput."""
    lines = []
    for kind, m in summary["metrics"].items():
        coverage = f"  coverage {100 * m['coverage']:.1f}%" if m.get("coverage") is not None else ""
        lines.append(f"{kind:>10}: mIoU {_pct(m['miou'])}  pixel acc {_pct(m['pixel_acc'])}{coverage}")
    t = summary["throughput"]
    steady = t["steady_images_per_s"]
    rate = f"; {t['images_per_s']:.2f} img/s" if summary["num_processed"] else ""
    if steady is not None:
        rate += f", {steady:.2f} img/s after the first image ({t['first_image_s']:.1f} s)"
    lines.append(
        f"{summary['num_done']}/{summary['num_images']} images done ({summary['num_processed']} this run, "
        f"{summary['num_resumed']} resumed, {summary['num_skipped']} skipped){rate}"
    )
    return lines


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# --- MLflow -----------------------------------------------------------------------------------------------
def log_to_mlflow(
    tracking_uri: str,
    summary: dict[str, Any],
    layout: OutputLayout,
    overlays: Sequence[Path],
    parent_run_id: str,
    params: dict[str, Any],
    artifact_location: str | None,
    experiment: str = "",
) -> str:
    """Logs the run as an MLflow run linked to its training run; returns the new run's id.

    The run goes into ``experiment`` if given, else ``$MLFLOW_EXPERIMENT_NAME`` if set, else the training run's
    experiment when that run is in this store, else the default experiment. It is nested under the training run
    (``mlflow.parentRunId``) when both share an experiment; ``toco.training_run_id`` records the link in any case.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    tags, parent_experiment = {"toco.kind": "inference"}, ""
    if parent_run_id:
        tags["toco.training_run_id"] = parent_run_id
        try:
            parent = client.get_run(parent_run_id)
            parent_experiment = client.get_experiment(parent.info.experiment_id).name
        except MlflowException:
            pass  # the training run lives in another store: keep the id as a plain tag
    experiment = resolve_experiment(experiment, parent_experiment or DEFAULT_EXPERIMENT)
    if experiment == parent_experiment:  # the runs table nests runs within one experiment, not across two
        tags["mlflow.parentRunId"] = parent_run_id
    run_id = start_run(tracking_uri, experiment, summary["run_name"], artifact_location, tags=tags)
    logger = RunLogger(tracking_uri, run_id)
    try:
        logger.set_tags(provenance_tags())
        logger.log_params(params)
        logger.log_metrics(flat_metrics(summary), step=0)
        logger.log_dict(summary, "summary.json")
        logger.log_text(per_class_table(summary), "per_class_iou.md")
        if layout.results.is_file():
            logger.log_file(layout.results)
        for path in overlays:
            logger.log_file(path, "overlays")
    except BaseException:
        end_run(tracking_uri, run_id, "FAILED")
        raise
    end_run(tracking_uri, run_id)
    return run_id


def flat_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """``<kind>/miou``, ``<kind>/pixel_acc``, ``<kind>/coverage``, ``iou/<kind>/<class>``, ``throughput/*``."""
    out: dict[str, float] = {}
    for kind, m in summary["metrics"].items():
        for key in ("miou", "pixel_acc", "coverage"):
            if m.get(key) is not None:
                out[f"{kind}/{key}"] = m[key]
        for name, value in m["per_class"].items():
            if value is not None:
                out[f"iou/{kind}/{name}"] = value
    for key, value in summary["throughput"].items():
        if value is not None:
            out[f"throughput/{key}"] = value
    out["images/done"] = summary["num_done"]
    out["images/skipped"] = summary["num_skipped"]
    return out
