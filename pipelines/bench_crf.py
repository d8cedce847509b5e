"""Benchmark: dense-CRF throughput of the Ray Data stage vs a serial loop, and inference images/s (not a test).

Both CRF paths refine the same images with the same probabilities on the same machine, and must produce the same
labels; the Ray stage runs one CRF task per reserved CPU and is timed from its input in the object store, where
the inference stage leaves it (the driver's copy of the rows into the store is printed apart). A last serial run
in a fresh process with glibc's malloc defaults shows what :func:`toco_ray.crf.keep_freed_memory` saves. By
default the images are synthetic ones resized to VOC's typical 500×375 with 21 classes, so a CRF costs what it
costs on VOC val.

Copy-paste:

    python -m pipelines.bench_crf                               # 24 images, 500×375, tiny network, 1 scale
    python -m pipelines.bench_crf --scales 1.0,1.25,1.5         # inference at VOC's three scales + flip
    python -m pipelines.bench_crf --images 24 --size 0          # synthetic images at their own sizes
    python -m pipelines.bench_crf --data-root /data/VOC2012 --preset voc --images 8   # real images, ViT-B
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipelines.infer import parse_scales
from toco_ray import crf
from toco_ray.cli import command_parser
from toco_ray.config import apply_overrides, build_config
from toco_ray.data import build_dataset, generate_dataset
from toco_ray.data.transforms import resize_image
from toco_ray.inference.checkpoint import build_inference_model
from toco_ray.inference.steps import InferenceTask, infer_item, read_item, refine_item
from toco_ray.ray_cluster import init_ray

VOC_SIZE = (375, 500)  # (H, W) of a typical VOC image
SEED = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("pipelines.bench_crf", __doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24, help="images to refine")
    parser.add_argument("--size", type=int, default=VOC_SIZE[1],
                        help="resize images to this width at 4:3 (500 → 500×375, VOC's size; 0 = keep)")
    parser.add_argument("--preset", default="synthetic", help="network preset for the inference figure")
    parser.add_argument("--data-root", default="", help="dataset root (default: generated synthetic images)")
    parser.add_argument("--split", default="val", help="split to take the images from")
    parser.add_argument("--crf-cpus", type=float, default=1.0, help="CPUs reserved per Ray CRF task")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path (median reported)")
    parser.add_argument("--scales", type=parse_scales, default=(), help="inference scales (default: eval.scales)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for inference (0 = all cores)")
    return parser.parse_args(argv)


def load_items(args: argparse.Namespace, cfg) -> list[dict]:
    root = args.data_root or str(generate_dataset(Path(tempfile.mkdtemp(prefix="bench-crf-")), 0, args.images, SEED))
    cfg = apply_overrides(cfg, {"data.root": root})
    dataset = build_dataset(cfg.data, args.split, cfg.model.num_classes)
    items = [read_item(dataset, i) for i in range(min(args.images, len(dataset)))]
    if args.size:
        size = (args.size * VOC_SIZE[0] // VOC_SIZE[1], args.size)
        for item in items:
            item["image"] = resize_image(item["image"], size)
            item["mask"] = np.zeros((0, 0), np.uint8)
    return items


def bench_inference(task: InferenceTask, items: list[dict]) -> list[dict]:
    torch.manual_seed(SEED)
    model = build_inference_model(task.cfg).eval()
    infer_item(model, task, items[0], "cpu")  # warm-up (allocator, kernels)
    start = time.perf_counter()
    scores = [infer_item(model, task, item, "cpu") for item in items]
    seconds = time.perf_counter() - start
    h, w = items[0]["image"].shape[:2]
    print(f"inference ({task.cfg.model.backbone}, depth {task.cfg.model.depth or 'default'}, scales "
          f"{list(task.scales)} + flip, {h}×{w}, {torch.get_num_threads()} threads): "
          f"{len(items) / seconds:.2f} img/s ({seconds / len(items):.3f} s/img)")
    return scores


def time_serial(task: InferenceTask, rows: list[dict]) -> tuple[float, dict]:
    start = time.perf_counter()
    labels = {row["name"]: refine_item(task, row, row)["seg_crf"] for row in rows}
    return time.perf_counter() - start, labels


def crf_labels(task: InferenceTask, row: dict) -> np.ndarray:
    return refine_item(task, row, row)["seg_crf"]


def time_pool(task: InferenceTask, rows: list[dict], pool) -> float:
    start = time.perf_counter()
    pool.starmap(crf_labels, [(task, row) for row in rows])
    return time.perf_counter() - start


def time_ray(task: InferenceTask, rows: list[dict], cpus: float) -> tuple[float, float, dict]:
    """Seconds to put the rows in the object store, seconds of the CRF stage over them, and its labels.

    In the pipeline the inference actors leave their rows in the object store, so the stage is timed from there;
    the driver's copy of the rows into the store is timed apart."""
    from toco_ray.inference.pipeline import crf_stage_input, run_crf_stage

    start = time.perf_counter()
    ds = crf_stage_input(rows)
    put_s = time.perf_counter() - start
    start = time.perf_counter()
    out = run_crf_stage(task, ds, cpus)
    return put_s, time.perf_counter() - start, {str(r["name"]): r["seg_crf"] for r in out}


def time_serial_glibc_defaults(task: InferenceTask, rows: list[dict]) -> float:
    """The serial loop in a fresh process whose malloc keeps glibc's defaults (see :func:`keep_freed_memory`)."""
    with multiprocessing.get_context("spawn").Pool(1, initializer=_glibc_defaults) as pool:
        pool.apply(crf_labels, (task, rows[0]))  # same warm-up as the other paths
        return pool.apply(_time_serial_seconds, (task, rows))


def _glibc_defaults() -> None:
    crf.KEEP_FREED_MEMORY = False


def _time_serial_seconds(task: InferenceTask, rows: list[dict]) -> float:
    return time_serial(task, rows)[0]


def main(argv: list[str] | None = None) -> None:
    import ray

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = build_config(args.preset)
    items = load_items(args, cfg)
    task = InferenceTask(cfg, "seg", args.scales or cfg.eval.scales, crf=True, out_dir="")
    scores = bench_inference(task, items)
    rows = [{**item, **score} for item, score in zip(items, scores)]
    # a plain process pool of the same size: what the machine allows in parallel, without Ray
    pool = multiprocessing.get_context("spawn").Pool(int(os.cpu_count() // args.crf_cpus))
    init_ray("local")
    try:
        start = time.perf_counter()
        time_ray(task, rows[:2], args.crf_cpus)  # starts the task workers and imports the code there
        cold_s = time.perf_counter() - start
        time_pool(task, rows[:2], pool)
        serial, parallel, puts, pooled = [], [], [], []
        for _ in range(args.repeats):  # interleaved, so a burst of load elsewhere hits every path alike
            serial_s, serial_labels = time_serial(task, rows)
            put_s, ray_s, ray_labels = time_ray(task, rows, args.crf_cpus)
            serial.append(serial_s)
            parallel.append(ray_s)
            puts.append(put_s)
            pooled.append(time_pool(task, rows, pool))
        untuned_s = time_serial_glibc_defaults(task, rows)
    finally:
        ray.shutdown()
        pool.close()
    same = all(np.array_equal(serial_labels[k], ray_labels[k]) for k in serial_labels)
    n, (h, w) = len(rows), rows[0]["image"].shape[:2]
    serial_s, ray_s, put_s, pool_s = (float(np.median(v)) for v in (serial, parallel, puts, pooled))
    print(f"dense CRF, {n} images {h}×{w}, {task.num_classes} labels, {cfg.eval.crf_iters} iterations, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, median of {args.repeats}:")
    print(f"  serial loop : {serial_s:7.2f} s  {n / serial_s:.3f} img/s   (runs: {_seconds(serial)})")
    print(f"  Ray Data    : {ray_s:7.2f} s  {n / ray_s:.3f} img/s   (runs: {_seconds(parallel)}; from the object "
          f"store; putting the rows there took {put_s:.2f} s more; first call {cold_s:.1f} s for 2 images, worker "
          "start-up)")
    print(f"  process pool: {pool_s:7.2f} s  {n / pool_s:.3f} img/s   (runs: {_seconds(pooled)}; no Ray, same "
          "number of processes: the machine's own parallel speed-up)")
    print(f"  serial loop with glibc's malloc defaults: {untuned_s:7.2f} s  {n / untuned_s:.3f} img/s   (one run, "
          "fresh process: what keeping freed CRF buffers saves)")
    print(f"  speed-up    : Ray Data {serial_s / ray_s:.2f}×, process pool {serial_s / pool_s:.2f}×   "
          f"identical labels: {same}")


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
