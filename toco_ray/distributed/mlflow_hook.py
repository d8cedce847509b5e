"""MLflow logging of a training run, as a worker-loop hook: rank 0 logs, every other rank does nothing.

What a run records: its devices and backbone weights as tags (and the iteration it resumed from), every log
period's loss terms, lr and throughput, every evaluation's mIoUs, baselines and over-smoothing curves as metrics,
and as artifacts the CAM overlays of the probe images, the over-smoothing figure (Figure 2), the confusion
matrices and, at the end, the per-class IoU table. :class:`~toco_ray.tracking.RunLogger` never logs a metric twice
for a step, so a run restarted from a checkpoint replays its iterations without duplicates or gaps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from toco_ray.data import denormalize
from toco_ray.distributed import progress
from toco_ray.distributed.hooks import TrainHook
from toco_ray.distributed.loop import Evaluation, WorkerLoop
from toco_ray.evaluation import eval_mode, predict
from toco_ray.metric_names import KINDS, oversmoothing_key
from toco_ray.models import PAIR_KINDS, weights_tags
from toco_ray.tracking import RunLogger, device_tags
from toco_ray.visualize import cam_overlay_figure, confusion_figure, iou_table, oversmoothing_figure

CAM_OVERLAY_IMAGE = "cam_overlay"  # MLflow image keys: the UI's image grid, a step slider per key
CONFUSION_IMAGE = "confusion"
RESTORED_TAG = "restored_from_iteration"  # the checkpoint iteration a restarted or resumed run continued from


class MLflowHook(TrainHook):
    """Logs into one MLflow run from rank 0.

    Args:
        tracking_uri: the MLflow store.
        run_id: the run to log into (created by the launcher).
        print_per_class: also print the final per-class IoU table (a run's summary; a sweep's trials leave it to
            MLflow).
    """

    def __init__(self, tracking_uri: str, run_id: str, print_per_class: bool = True):
        self.tracking_uri, self.run_id, self.print_per_class = tracking_uri, run_id, print_per_class
        self.logger: RunLogger | None = None

    def __getstate__(self) -> dict[str, Any]:  # travels to the workers without its client
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id, "print_per_class": self.print_per_class,
                "logger": None}

    def before_train(self, loop: WorkerLoop, start: int) -> None:
        if not loop.worker.is_chief:
            return
        self.logger = RunLogger(self.tracking_uri, self.run_id)
        self.logger.set_tags({**device_tags(loop.device_names), **weights_tags(loop.objective.model.backbone)})
        if loop.restored_from is not None:
            self.logger.set_tags({RESTORED_TAG: loop.restored_from})

    def after_log(self, loop: WorkerLoop, done: int, metrics: dict[str, float]) -> None:
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=done)

    def after_eval(self, loop: WorkerLoop, evaluation: Evaluation) -> None:
        """Metrics, CAM overlays of the probe images, the over-smoothing curves, the confusion matrices."""
        if self.logger is None:
            return
        done = evaluation.done
        self.logger.log_metrics(evaluation.metrics, step=done)
        if evaluation.probes is not None:
            self.logger.log_figure(probe_figure(loop, evaluation), f"cam_overlays/iter_{done:06d}.png",
                                   key=CAM_OVERLAY_IMAGE, step=done)
            cross_class = {kind: loop.history.get(oversmoothing_key(kind), {}) for kind in PAIR_KINDS}
            figure = oversmoothing_figure(loop.history[oversmoothing_key("all")], cross_class)
            self.logger.log_figure(figure, "figures/oversmoothing.png")
        conf = {name: evaluation.counts.matrices[name] for name in KINDS}
        self.logger.log_figure(confusion_figure(conf, loop.names), f"confusion/iter_{done:06d}.png",
                               key=CONFUSION_IMAGE, step=done)
        if done == loop.cfg.schedule.max_iters:
            self.log_final_tables(loop, evaluation)

    def log_final_tables(self, loop: WorkerLoop, evaluation: Evaluation) -> None:
        results, counts = evaluation.results, evaluation.counts
        table = iou_table({name: results[name].per_class for name in KINDS}, loop.names)
        self.logger.log_text(table, "final/per_class_iou.md")
        per_class = {name: {cls: _finite_or_none(v) for cls, v in zip(loop.names, results[name].per_class)}
                     for name in KINDS}
        self.logger.log_dict(per_class, "final/per_class_iou.json")
        self.logger.log_dict({name: counts.matrices[name].tolist() for name in KINDS}, "final/confusion.json")
        if self.print_per_class:
            progress.say("per-class IoU (%):\n" + table)


def probe_figure(loop: WorkerLoop, evaluation: Evaluation):
    """CAM, aux CAM and seg predictions of the probe images over the images and their ground truth."""
    probes, model, cfg = evaluation.probes, evaluation.model, loop.cfg
    images = probes["image"].to(loop.worker.device)
    labels = probes["label"].to(loop.worker.device)
    masks = probes["mask"]
    with eval_mode(model):
        sizes = [m.shape[-2:] for m in masks]
        preds = predict(model, images, labels, sizes, cfg.cam.eval_bkg, cfg.cam.scales, loop.autocast)
    seg_ran = cfg.loss.w_seg > 0 and evaluation.done > cfg.schedule.seg_start_iter  # else its panel is noise
    return cam_overlay_figure(denormalize(images.cpu()), preds.cams.cpu(), preds.aux_cams.cpu(), labels.cpu(), masks,
                              preds.seg if seg_ran else None, probes["name"], title=f"iteration {evaluation.done}",
                              class_names=loop.names)


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
