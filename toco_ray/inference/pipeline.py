"""Sharded inference on Ray Data: the only Ray-specific part of inference.

One dataset row per image flows through three stages::

    from_items(indices) ─► infer (actor pool; GPU or CPU, fractional GPUs allowed)
                        ─► refine (CPU tasks: dense CRF, argmax)
                        ─► finish (CPU tasks: PNGs, confusion counts, the per-image record)

The network runs in long-lived actors (the weights are loaded once per actor from the object store); the CRF
and the writing run as CPU tasks, so the CPU cores refine earlier images while the accelerator infers later ones.
Each stage calls the same step function as the serial loop (:mod:`toco_ray.inference.steps`). Images are
processed one per batch at native resolution (their sizes differ).

Resources are derived from the cluster (:func:`plan_stages`): by default the inference actors reserve at most
half of the CPUs, the rest runs the CPU stages. On a 2-core machine two actors of 1 CPU each would starve the CPU
stages (Ray Data then stalls), hence fractional CPU reservations.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch

from toco_ray.data.base import SegDataset
from toco_ray.data.errors import DatasetError
from toco_ray.errors import TocoError
from toco_ray.inference.checkpoint import build_inference_model
from toco_ray.inference.steps import InferenceTask, finish_item, infer_item, read_item, refine_item

MAX_CPUS_PER_WORKER = 1.0  # default CPU reservation of an inference actor (its torch threads follow it)
SCORE_FIELDS = {"seg": ("probs",), "cam": ("cams", "aux_cams")}


class PlanError(TocoError, ValueError):
    """The requested workers do not fit the cluster; the message names the resources."""


@dataclass(frozen=True)
class StagePlan:
    """Resources of the stages.

    Attributes:
        workers: inference actors.
        cpus_per_worker: CPUs reserved per inference actor (fractional allowed).
        gpus_per_worker: GPUs per inference actor (0 = CPU inference; fractions share a GPU).
        cpu_stage_cpus: CPUs reserved per refine/finish task.
        threads: torch intra-op threads of a CPU inference actor.
    """

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    cpu_stage_cpus: float
    threads: int


def plan_stages(
    resources: dict[str, float],
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float | None = None,
    cpu_stage_cpus: float | None = None,
) -> StagePlan:
    """Sizes the stages from the cluster's resources (``ray.cluster_resources()``).

    Defaults: one GPU per actor and one actor per GPU when the cluster has GPUs, else one CPU actor; each actor
    reserves ``min(1, CPUs / (2·workers))`` CPUs; a CPU task reserves ``min(1, CPUs left)``.

    Raises:
        PlanError: more GPUs or CPUs asked for than the cluster has, or no CPU left for the CPU stages.
    """
    total_cpu, total_gpu = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    gpus = gpus_per_worker if gpus_per_worker is not None else (1.0 if total_gpu >= 1 else 0.0)
    if gpus < 0:
        raise PlanError(f"--gpus-per-worker must not be negative, got {gpus}")
    if gpus > 0 and total_gpu < gpus:
        raise PlanError(f"--gpus-per-worker {gpus} but the Ray cluster has {total_gpu:g} GPU(s)")
    if workers is None:
        workers = max(1, math.floor(total_gpu / gpus + 1e-9)) if gpus > 0 else 1
    if workers < 1:
        raise PlanError(f"--workers must be at least 1, got {workers}")
    if gpus * workers > total_gpu + 1e-9:
        raise PlanError(f"{workers} workers × {gpus:g} GPU exceed the cluster's {total_gpu:g} GPU(s)")
    cpus = cpus_per_worker if cpus_per_worker is not None else min(MAX_CPUS_PER_WORKER, total_cpu / (2 * workers))
    left = total_cpu - workers * cpus
    stage = cpu_stage_cpus if cpu_stage_cpus is not None else min(1.0, left)
    if cpus <= 0 or stage <= 0 or stage > left + 1e-9:
        raise PlanError(
            f"{workers} inference workers × {cpus:g} CPU leave {left:g} of the cluster's {total_cpu:g} CPUs for the "
            f"CRF/writing stage, which needs {stage:g}; lower --workers or --cpus-per-worker"
        )
    return StagePlan(workers, cpus, gpus, stage, threads=max(1, int(cpus)))


# --- rows: one image per batch -------------------------------------------------------------------------
def _row(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    return {key: value[0] for key, value in batch.items()}


def _batch(row: dict[str, Any]) -> dict[str, np.ndarray]:
    return {key: np.asarray(value)[None] for key, value in row.items()}


def _item(row: dict[str, Any]) -> dict[str, Any]:
    return {"name": str(row["name"]), "image": row["image"], "mask": row["mask"], "label": row["label"],
            "read_s": float(row["read_s"])}


def _failed_row(task: InferenceTask, index: int, name: str, error: str) -> dict[str, Any]:
    # same columns as a good row (empty arrays), so every block has one schema
    row = {"index": index, "name": name, "error": error, "read_s": 0.0, "infer_s": 0.0,
           "image": np.zeros((0, 0, 3), np.uint8), "mask": np.zeros((0, 0), np.uint8),
           "label": np.zeros(task.cfg.model.num_classes, np.float32)}
    row.update({field: np.zeros((0, 0, 0), np.float32) for field in SCORE_FIELDS[task.mode]})
    return row


class InferWorker:
    """Actor of the inference stage: holds the network, reads an image and runs :func:`infer_item` on it.

    Args:
        task: the run's task.
        dataset: the split's reader (images are read where they are inferred).
        weights: ``[ObjectRef]`` of the network's state dict (a list, so Ray passes the reference itself).
        use_gpu: run on this actor's GPU.
    """

    def __init__(self, task: InferenceTask, dataset: SegDataset, weights: list, use_gpu: bool):
        self.task, self.dataset = task, dataset
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        if self.device.type == "cpu":
            torch.set_num_threads(task.threads)
        model = build_inference_model(task.cfg)
        model.load_state_dict(ray.get(weights[0]))
        self.model = model.eval().to(self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        index = int(batch["index"][0])
        try:
            item = read_item(self.dataset, index)
        except DatasetError as err:  # bad input: reported to the driver, which fails or records it
            return _batch(_failed_row(self.task, index, self.dataset.names[index], str(err)))
        scores = infer_item(self.model, self.task, item, self.device)
        return _batch({"index": index, "error": "", **item, **scores})


def refine_batch(batch: dict[str, np.ndarray], task: InferenceTask) -> dict[str, np.ndarray]:
    """CPU stage: label maps (dense CRF when enabled) of one image; failed rows pass through.

    The scores (probabilities / CAMs, the bulk of a row) are dropped here unless they are to be saved."""
    row = _row(batch)
    if row["error"]:
        labels = {**{kind: np.zeros((0, 0), np.uint8) for kind in task.kinds}, "crf_s": 0.0}
    else:
        labels = refine_item(task, _item(row), row)
    if not task.save_probs:
        row = {k: v for k, v in row.items() if k not in SCORE_FIELDS[task.mode]}
    return _batch({**row, **labels})


def finish_batch(batch: dict[str, np.ndarray], task: InferenceTask) -> dict[str, np.ndarray]:
    """CPU stage: writes one image's outputs; returns only its name, error and record (JSON)."""
    row = _row(batch)
    record = "" if row["error"] else json.dumps(finish_item(task, _item(row), row, row))
    return _batch({"name": str(row["name"]), "error": str(row["error"]), "record": record})


def run_pipeline(
    task: InferenceTask,
    dataset: SegDataset,
    indices: Sequence[int],
    model: torch.nn.Module,
    plan: StagePlan,
    on_result: Callable[[str, str, dict | None], None],
) -> None:
    """Runs the Ray Data pipeline over ``dataset[indices]``.

    Args:
        task: the run's task (its ``threads`` should be ``plan.threads``).
        dataset: the split's reader.
        indices: positions in ``dataset`` to process.
        model: the network whose weights the actors load.
        plan: stage resources (:func:`plan_stages`).
        on_result: called in the driver as each image finishes: ``(name, error, record)``; ``error`` is empty
            and ``record`` the per-image record on success. It may raise to stop the run.
    """
    if not indices:
        return
    weights = ray.put({k: v.detach().cpu() for k, v in model.state_dict().items()})
    ds = dataset_of([{"index": int(i)} for i in indices])
    for row in _stages(ds, task, dataset, weights, plan).iter_rows():
        record = json.loads(row["record"]) if row["record"] else None
        on_result(str(row["name"]), str(row["error"]), record)


def _stages(ds: ray.data.Dataset, task: InferenceTask, dataset: SegDataset, weights: Any, plan: StagePlan):
    """Appends the infer, refine and finish stages to a dataset of image indices."""
    gpu_args = {"num_gpus": plan.gpus_per_worker} if plan.gpus_per_worker > 0 else {}
    ds = ds.map_batches(
        InferWorker,
        fn_constructor_kwargs={"task": task, "dataset": dataset, "weights": [weights],
                               "use_gpu": plan.gpus_per_worker > 0},
        compute=ray.data.ActorPoolStrategy(size=plan.workers),
        batch_size=1,
        num_cpus=plan.cpus_per_worker,
        **gpu_args,
    )
    ds = ds.map_batches(refine_batch, fn_kwargs={"task": task}, batch_size=1, num_cpus=plan.cpu_stage_cpus)
    return ds.map_batches(finish_batch, fn_kwargs={"task": task}, batch_size=1, num_cpus=plan.cpu_stage_cpus)


def crf_stage_input(rows: Sequence[dict[str, Any]]) -> ray.data.Dataset:
    """Puts precomputed rows in the object store, one block per image, where the inference stage leaves them.

    Args:
        rows: dicts with ``name``, ``image``, ``mask``, ``label``, ``read_s`` and the mode's scores.
    """
    return dataset_of([{**r, "error": ""} for r in rows])


def run_crf_stage(task: InferenceTask, ds: ray.data.Dataset, cpus_per_task: float = 1.0) -> list[dict[str, Any]]:
    """Runs only the refine stage (dense CRF) over :func:`crf_stage_input`; used to benchmark it against a loop.

    Args:
        task: a task with ``crf=True``.
        ds: the rows, from :func:`crf_stage_input`.
        cpus_per_task: CPUs reserved per CRF task (1 = one CRF per core).

    Returns:
        The refined rows (label maps and ``crf_s``), in completion order.
    """
    ds = ds.map_batches(refine_batch, fn_kwargs={"task": task}, batch_size=1, num_cpus=cpus_per_task)
    return list(ds.iter_rows())


def dataset_of(items: list[dict[str, Any]]) -> ray.data.Dataset:
    """A dataset of one block per item, created under our :class:`~ray.data.DataContext` settings.

    A dataset keeps a copy of the context current when it is created and runs with that copy, so the settings
    must be in place here, not around the iteration.
    """
    with _data_context():
        return ray.data.from_items(items, override_num_blocks=len(items))


@contextlib.contextmanager
def _data_context() -> Iterator[None]:
    """Ray Data settings for one run of our pipeline, restored afterwards.

    Progress bars off: Ray Data's per-operator bars would interleave with the driver's one-line bar (images/s,
    ETA). Per-operator resource reservation off: it splits the cluster between the operators ahead of time, which
    on a two-core machine leaves the CRF stage one task at a time (``backpressured:tasks(ResourceBudget)``) while
    the other core idles; our stages are sized by :func:`plan_stages`, so one shared budget is enough.
    """
    context = ray.data.DataContext.get_current()
    previous = context.enable_progress_bars, context.op_resource_reservation_enabled
    context.enable_progress_bars, context.op_resource_reservation_enabled = False, False
    try:
        yield
    finally:
        context.enable_progress_bars, context.op_resource_reservation_enabled = previous
