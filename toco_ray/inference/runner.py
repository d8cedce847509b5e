"""An inference run from end to end: checkpoint → split → per-image outputs → metrics → MLflow.

:func:`run_inference` resolves the checkpoint and the split, skips the images a previous run already finished,
processes the others with the Ray Data pipeline (or the serial loop: same steps, one process), then builds the
results table, the summary (mIoU from the summed confusion counts) and the overlays, and logs them to MLflow as a
run linked to the training run.

Example:
    >>> summary = run_inference(InferenceOptions(checkpoint="outputs/runs/toco-voc-...", split="val", crf=True))
    >>> summary["metrics"]["seg_crf"]["miou"]
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch

from toco_ray.config import ToCoConfig, apply_overrides, build_config, flatten
from toco_ray.config_checks import check_config
from toco_ray.data import DatasetError, build_dataset, class_names, generate_dataset
from toco_ray.data.base import SegDataset
from toco_ray.errors import TocoError
from toco_ray.inference.checkpoint import CheckpointInfo, build_inference_model, load_model, resolve_checkpoint
from toco_ray.inference.outputs import (
    OutputError,
    OutputLayout,
    os_reason,
    prepare_output,
    write_json,
    write_jsonl,
)
from toco_ray.inference.pipeline import StagePlan, plan_stages, run_pipeline
from toco_ray.inference.progress import ProgressBar
from toco_ray.inference.report import (
    build_summary,
    log_to_mlflow,
    per_class_table,
    summary_lines,
    throughput,
    write_overlays,
    write_results,
)
from toco_ray.inference.steps import InferenceTask, process_item, read_item
from toco_ray.names import check_name
from toco_ray.ray_cluster import init_ray
from toco_ray.tracking import artifact_root, check_tracking_uri, is_local_store, resolve_tracking_uri
from toco_ray.visualize import class_names_or_default

RANDOM_CHECKPOINT = "random"  # with --smoke only: a randomly initialised synthetic-preset network
SMOKE_PRESET = "synthetic"
SMOKE_IMAGES = 4  # images per split in --smoke mode
SMOKE_SEED = 0  # seeds the random network and the generated smoke data
LOGGED_SETTINGS = ("checkpoint", "split", "mode", "scales", "crf", "engine")  # MLflow params infer.<key>


class InferenceError(TocoError, RuntimeError):
    """The run cannot go on (bad input without --skip-bad, bad options); the message says what and where."""


@dataclass
class InferenceOptions:
    """The command line of ``pipelines.infer`` (see its ``--help``); ``None`` = derived from config/cluster."""

    checkpoint: str
    split: str = "val"
    data_root: str = ""
    mode: str = "seg"
    scales: tuple[float, ...] = ()
    crf: bool = False
    out: str = ""
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float | None = None
    cpu_stage_cpus: float | None = None
    skip_bad: bool = False
    resume: bool = True
    save_probs: bool = False
    probs_scale: float = 0.25
    limit: int = 0
    serial: bool = False
    mlflow: bool = True
    tracking_uri: str = ""
    experiment: str = ""  # MLflow experiment of the run (default: $MLFLOW_EXPERIMENT_NAME, else the training run's)
    output_dir: str = "outputs"
    ray_address: str = ""
    overlays: int | None = None
    smoke: bool = False
    progress: bool = True


def run_inference(options: InferenceOptions) -> dict[str, Any]:
    """Runs inference over one split and returns the summary (also written to ``summary.json``).

    Raises:
        InferenceError: bad options, or a bad image without ``skip_bad`` (the message names the file).
        CheckpointError, DatasetError, OutputError, PlanError, TrackingError: the checkpoint, data, output folder,
            cluster or MLflow store cannot be used.
    """
    options = checked_options(options)
    tracking_uri = resolve_tracking(options)
    model, cfg, info = open_network(options, tracking_uri)
    cfg, dataset = open_split(cfg, options)
    names = dataset.names[: options.limit] if options.limit else list(dataset.names)
    out_dir = Path(options.out) if options.out else default_out_dir(options, info)
    scales = tuple(options.scales) or (cfg.eval.scales if options.mode == "seg" else cfg.cam.scales)
    task = InferenceTask(cfg, options.mode, scales, options.crf, str(out_dir), options.save_probs,
                         options.probs_scale)
    done = prepare_output(OutputLayout(out_dir), run_settings(task, info, dataset), options.resume)
    pending = [i for i, name in enumerate(names) if name not in done]
    with compute_session(options, needed=bool(pending)) as plan:
        task = dataclasses.replace(task, threads=plan.threads if plan else max(1, int(options.cpus_per_worker or 1)))
        bar = ProgressBar(f"{options.mode} {options.split}", len(pending)) if options.progress else None
        collector = ResultCollector(dataset, options.skip_bad, bar)
        try:
            if plan is None:
                run_serial(task, dataset, pending, model, _serial_device(options), collector)
            else:
                run_pipeline(task, dataset, pending, model, plan, collector)
        except OSError as err:  # a full or read-only disk; every file written so far is complete (atomic writes)
            raise OutputError(
                f"cannot write to output folder {out_dir}: {os_reason(err)} ({_free_space(out_dir)}); free space or "
                "choose another --out (finished images are kept: the same command continues)"
            ) from None
        wall_s = time.perf_counter() - collector.start
    return finish_run(options, task, dataset, names, info, collector, wall_s, plan, tracking_uri)


@contextlib.contextmanager
def compute_session(options: InferenceOptions, needed: bool = True) -> Iterator[StagePlan | None]:
    """Yields the Ray Data stage plan (joining or starting Ray; a cluster started here is shut down after), or
    None for the serial loop (or when nothing is left to process)."""
    if options.serial or not needed:
        yield None
        return
    started = init_ray(options.ray_address)
    try:
        yield plan_stages(ray.cluster_resources(), options.workers, options.gpus_per_worker,
                          options.cpus_per_worker, options.cpu_stage_cpus)
    finally:
        if started:
            ray.shutdown()


# --- the serial loop ------------------------------------------------------------------------------------
def run_serial(
    task: InferenceTask, dataset: SegDataset, indices: list[int], model: torch.nn.Module, device: str, on_result
) -> None:
    """The same steps as the Ray pipeline, one image after the other in this process."""
    previous_threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(task.threads)  # the actors' thread count: identical numbers on both paths
    model = model.to(device).eval()
    try:
        for index in indices:
            try:
                record = process_item(model, task, dataset, index, device)
            except DatasetError as err:
                on_result(dataset.names[index], str(err), None)
                continue
            on_result(record["name"], "", record)
    finally:
        torch.set_num_threads(previous_threads)


class ResultCollector:
    """Receives each finished image: updates the progress bar, fails or records bad images.

    Args:
        dataset: the split's reader (names the image file of a failure).
        skip_bad: record bad images and go on; otherwise the first one stops the run.
        progress: the progress bar, or None.
    """

    def __init__(self, dataset: SegDataset, skip_bad: bool, progress: ProgressBar | None):
        self.dataset, self.skip_bad, self.progress = dataset, skip_bad, progress
        self.timings: list[dict[str, float]] = []  # per processed image: the step times (records stay on disk)
        self.failures: list[dict[str, str]] = []
        self.start = time.perf_counter()
        self.first_s = math.nan  # until the first image comes back: worker start-up and pipeline fill

    def __call__(self, name: str, error: str, record: dict[str, Any] | None) -> None:
        if math.isnan(self.first_s):
            self.first_s = time.perf_counter() - self.start
        if error:
            if not self.skip_bad:
                raise InferenceError(f"{error} — rerun with --skip-bad to record bad images and go on")
            self.failures.append({"name": name, "file": str(self.dataset.image_path(name)), "error": error})
        else:
            self.timings.append({k: v for k, v in record.items() if k.endswith("_s")})
        if self.progress is not None:
            self.progress.update(skipped=bool(error))


# --- before the run ---------------------------------------------------------------------------------------
def open_network(
    options: InferenceOptions, tracking_uri: str
) -> tuple[torch.nn.Module, ToCoConfig, CheckpointInfo | None]:
    """The network and its config: from the checkpoint, or random (``--checkpoint random --smoke``)."""
    if options.checkpoint == RANDOM_CHECKPOINT:
        cfg = build_config(SMOKE_PRESET)
        torch.manual_seed(SMOKE_SEED)
        return build_inference_model(cfg).eval(), cfg, None
    info = resolve_checkpoint(options.checkpoint, tracking_uri)
    model, cfg = load_model(info)
    return model, cfg, info


def open_split(cfg: ToCoConfig, options: InferenceOptions) -> tuple[ToCoConfig, SegDataset]:
    """The config with ``--data-root`` applied and the split's reader (a tiny generated tree in smoke mode)."""
    root = options.data_root
    if options.smoke and not root and cfg.data.dataset == "synthetic":
        root = str(generate_dataset(Path(options.out or options.output_dir) / "smoke-data",
                                    SMOKE_IMAGES, SMOKE_IMAGES, SMOKE_SEED))
    if root:
        cfg = apply_overrides(cfg, {"data.root": str(Path(root).resolve())})
    check_config(cfg)
    dataset = build_dataset(cfg.data, options.split, cfg.model.num_classes)
    if options.mode == "cam" and not any(label.any() for label in dataset.labels.values()):
        raise InferenceError(
            f"--mode cam needs image-level labels, but split {options.split!r} of {dataset.root} has none "
            "(expected cls_labels.npy or masks to derive them from)"
        )
    return cfg, dataset


def run_settings(task: InferenceTask, info: CheckpointInfo | None, dataset: SegDataset) -> dict[str, Any]:
    """What determines the outputs; a resumed run must have the same."""
    return {
        "checkpoint": str(info.folder) if info else RANDOM_CHECKPOINT,
        "iteration": info.iteration if info else 0,
        "dataset": task.cfg.data.dataset,
        "data_root": str(dataset.root),
        "split": dataset.split,
        "mode": task.mode,
        "scales": list(task.scales),
        "crf": task.crf,
        "save_probs": task.save_probs,
        "probs_scale": task.probs_scale,
    }


def default_out_dir(options: InferenceOptions, info: CheckpointInfo | None) -> Path:
    """``<output_dir>/inference/<run>-<checkpoint>/<split>-<mode>[-crf]``."""
    if info is None:
        source = "random-smoke"
    else:
        run = info.meta.get("run_name") or info.folder.parent.name
        source = check_name(f"run name of checkpoint {info.folder}", f"{run}-{info.folder.name}")
    leaf = f"{options.split}-{options.mode}" + ("-crf" if options.crf else "")
    return Path(options.output_dir) / "inference" / source / leaf


def _free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free there"
    except OSError:
        return "free space unknown"


def checked_options(options: InferenceOptions) -> InferenceOptions:
    """Validates the options; in smoke mode the run is cut to ``SMOKE_IMAGES`` images."""
    if options.checkpoint == RANDOM_CHECKPOINT and not options.smoke:
        raise InferenceError("--checkpoint random is a pipeline check and needs --smoke (its numbers mean nothing)")
    check_name("--split", options.split)
    if options.limit < 0:
        raise InferenceError(f"--limit must not be negative, got {options.limit}")
    if not 0 < options.probs_scale <= 1:
        raise InferenceError(f"--probs-scale must be in (0, 1], got {options.probs_scale}")
    if options.smoke:
        return dataclasses.replace(options, limit=min(options.limit or SMOKE_IMAGES, SMOKE_IMAGES))
    return options


def resolve_tracking(options: InferenceOptions) -> str:
    """The MLflow tracking URI (checked now, before any work, when results will be logged)."""
    uri = options.tracking_uri or resolve_tracking_uri(options.output_dir)
    if options.mlflow:
        check_tracking_uri(uri)
    return uri


def _serial_device(options: InferenceOptions) -> str:
    use_gpu = torch.cuda.is_available() and (options.gpus_per_worker is None or options.gpus_per_worker > 0)
    return "cuda" if use_gpu else "cpu"


# --- after the run ----------------------------------------------------------------------------------------
def finish_run(
    options: InferenceOptions,
    task: InferenceTask,
    dataset: SegDataset,
    names: list[str],
    info: CheckpointInfo | None,
    collector: ResultCollector,
    wall_s: float,
    plan: StagePlan | None,
    tracking_uri: str,
) -> dict[str, Any]:
    """Results table, failures file, summary, overlays, console report and MLflow run (every finished image of
    the split counts, also those of earlier, interrupted runs)."""
    layout = OutputLayout(task.out_dir)
    done = layout.done_names()
    finished = [n for n in names if n in done]
    records = layout.read_records(finished)
    write_results(layout, records, task.kinds)
    if options.skip_bad or collector.failures:
        write_jsonl(layout.failures, collector.failures)
    classes = class_names_or_default(class_names(task.cfg.data, task.cfg.model.num_classes), task.cfg.model.num_classes)
    run = run_description(options, task, dataset, names, info, plan)
    run.update({
        "num_done": len(records),
        "num_processed": len(collector.timings),
        "num_resumed": len(records) - len(collector.timings),
        "num_skipped": len(collector.failures),
        "skipped": [f["name"] for f in collector.failures],
        "throughput": throughput(collector.timings, wall_s, collector.first_s),
    })
    summary = build_summary(task, records, classes, run)
    write_json(layout.summary, summary)
    count = task.cfg.eval.num_probe_images if options.overlays is None else options.overlays
    overlays = write_overlays(layout, task, [read_item(dataset, dataset.names.index(n)) for n in finished[:count]])
    print("\n".join(summary_lines(summary)) + "\n" + per_class_table(summary), file=sys.stdout)
    if options.mlflow:
        location = artifact_root(options.output_dir) if is_local_store(tracking_uri) else None
        params = {**flatten(task.cfg), **{f"infer.{k}": v for k, v in run.items() if k in LOGGED_SETTINGS}}
        summary["mlflow_run_id"] = log_to_mlflow(tracking_uri, summary, layout, overlays, run["training_run_id"],
                                                 params, location, options.experiment)
        write_json(layout.summary, summary)
    return summary


def run_description(
    options: InferenceOptions,
    task: InferenceTask,
    dataset: SegDataset,
    names: list[str],
    info: CheckpointInfo | None,
    plan: StagePlan | None,
) -> dict[str, Any]:
    """Name, source and settings of the run (the head of ``summary.json``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return {
        "run_name": f"infer-{options.split}-{options.mode}{'-crf' if options.crf else ''}-{stamp}-"
                    f"{secrets.token_hex(2)}",
        "checkpoint": str(info.folder) if info else RANDOM_CHECKPOINT,
        "iteration": info.iteration if info else 0,
        "training_run_id": info.mlflow_run_id if info else "",
        "split": options.split,
        "mode": task.mode,
        "scales": list(task.scales),
        "crf": task.crf,
        "data_root": str(dataset.root),
        "out_dir": str(task.out_dir),
        "engine": "serial" if options.serial else "ray-data",
        "plan": dataclasses.asdict(plan) if plan is not None else {"threads": task.threads},
        "num_images": len(names),
        "smoke": options.smoke,
    }

