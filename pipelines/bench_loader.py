"""Benchmark: training-view throughput per CPU core at the voc preset, and the loader cores one GPU needs.

Each training image becomes three 448×448 views (main, local, second global: rescale, flip, crop, colour jitter,
greyscale, blur, solarisation; ``toco_ray/data/views.py``), decoded from a VOC-sized JPEG. This times that work in
one process with one torch thread, as in one DataLoader worker, and counts CPU time so that other load on the
machine does not inflate the figure; then a DataLoader with several workers checks that it scales. The images are
synthetic ones (``toco_ray.data.synthetic``) written at VOC's typical 500×375; nothing is downloaded.

The GPU side: images/s of the bf16 training step from a ``pipelines.gpu_check`` JSON, or ``--gpu-images-per-s``,
or the stated assumption below. A GPU node needs ``GPU img/s ÷ img/s per core`` loader cores, next to the one
core of the training loop (``data.num_workers: -1`` gives the loaders every other CPU of the worker).

Copy-paste:

    python -m pipelines.bench_loader                                 # 64 images, 448 crops, all three views
    python -m pipelines.bench_loader --gpu-check gpu_check.json      # the GPU rate measured by pipelines.gpu_check
    python -m pipelines.bench_loader --gpu-images-per-s 25 --cpus-per-gpu 8
    python -m pipelines.bench_loader --smoke                         # CI: 4 images, one loader worker
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from PIL import Image

from toco_ray.benchmark import time_loader, time_views
from toco_ray.cli import command_parser
from toco_ray.config import build_config
from toco_ray.data import TrainViews, ViewDataset, build_dataset, generate_dataset

VOC_SIZE = (500, 375)  # (W, H) of a typical VOC image
# Without a gpu_check JSON: the reference trained 20k iterations × 4 images in 3.7 h on 2 A100s (SPEC §9), about
# 3 img/s per A100 with re-encoding in fp32; the bf16 fast path targets ≥ 3× that. A g5's A10G is slower than an
# A100, so 9 img/s per GPU is a generous rate to feed.
ASSUMED_GPU_IMAGES_PER_S = 9.0
G5_CPUS_PER_GPU = 8  # g5.2xlarge (cluster.yaml worker_gpu): 8 vCPU, 1 A10G
TRAINING_LOOP_CPUS = 1  # the training process itself: launches GPU work, copies batches


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("pipelines.bench_loader", __doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="images to time")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="DataLoader workers of the scaling check (default: this machine's CPUs)")
    parser.add_argument("--gpu-check", default="", help="a pipelines.gpu_check JSON: its bf16 step rate")
    parser.add_argument("--gpu-images-per-s", type=float, default=0.0, help="GPU training rate to feed")
    parser.add_argument("--cpus-per-gpu", type=int, default=G5_CPUS_PER_GPU,
                        help="CPUs per GPU on the training nodes (default: g5.2xlarge, %(default)s)")
    parser.add_argument("--json", default="", help="also write the figures here")
    parser.add_argument("--smoke", action="store_true", help="4 images and one worker (CI)")
    return parser.parse_args(argv)


def voc_sized_dataset(folder: Path, images: int) -> Path:
    """Synthetic VOC-layout tree with images and masks resized to 500×375 (JPEG decode costs what VOC's does)."""
    root = generate_dataset(folder, num_train=images, num_val=0, seed=0)
    for path in (root / "JPEGImages").glob("*.jpg"):
        Image.open(path).convert("RGB").resize(VOC_SIZE, Image.BILINEAR).save(path, quality=90)
    for path in (root / "SegmentationClassAug").glob("*.png"):
        mask = Image.open(path)
        mask.resize(VOC_SIZE, Image.NEAREST).save(path)
    return root


def gpu_rate(args: argparse.Namespace) -> tuple[float, str]:
    """The GPU's training images/s and where the number comes from."""
    if args.gpu_check:
        results = json.loads(Path(args.gpu_check).read_text())
        device = results["environment"]["device"]
        return results["training"]["bf16_images_per_s"], f"bf16 step measured by gpu_check on {device}"
    if args.gpu_images_per_s:
        return args.gpu_images_per_s, "given with --gpu-images-per-s"
    return ASSUMED_GPU_IMAGES_PER_S, "assumption without a gpu_check JSON: an A100 at 3x the reference step"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    images, workers = (4, 1) if args.smoke else (args.images, args.workers)
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as folder:
        root = voc_sized_dataset(Path(folder), images)
        cfg = build_config("voc", {"data.root": str(root)})
        dataset = build_dataset(cfg.data, cfg.data.train_split, cfg.model.num_classes)
        views = ViewDataset(dataset, TrainViews(cfg.data), seed=cfg.train.seed)
        batch = cfg.train.global_batch
        single = time_views(views, images, batch)
        loader_rate = time_loader(views, images, batch, workers)
    per_core = single.images_per_core_s
    rate, source = gpu_rate(args)
    cores_needed = rate / per_core
    loader_cpus = args.cpus_per_gpu - TRAINING_LOOP_CPUS
    figures = {
        "crop_size": cfg.data.crop_size,
        "image_size": f"{VOC_SIZE[0]}x{VOC_SIZE[1]}",
        "images": images,
        "images_per_core_s": per_core,
        "images_per_s_one_process_wall": single.images / single.wall_s,
        "loader_workers": workers,
        "loader_images_per_s": loader_rate,
        "gpu_images_per_s": rate,
        "gpu_rate_source": source,
        "loader_cores_per_gpu": cores_needed,
        "cpus_per_gpu": args.cpus_per_gpu,
        "loader_cpus_per_gpu": loader_cpus,
        "max_gpu_images_per_s_fed": per_core * loader_cpus,
        "gpu_fed": cores_needed <= loader_cpus,
    }
    report(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


def report(f: dict) -> None:
    print(f"training views ({f['crop_size']}×{f['crop_size']}, three views) from {f['image_size']} JPEGs, "
          f"{f['images']} images")
    print(f"  one core:        {f['images_per_core_s']:.1f} img/s of CPU time "
          f"({f['images_per_s_one_process_wall']:.1f} img/s wall, one process, one thread)")
    print(f"  DataLoader:      {f['loader_images_per_s']:.1f} img/s with {f['loader_workers']} worker(s) on "
          f"{os.cpu_count()} CPU(s)")
    print(f"  GPU step:        {f['gpu_images_per_s']:.1f} img/s ({f['gpu_rate_source']})")
    print(f"  loader cores:    {f['loader_cores_per_gpu']:.2f} per GPU at that rate")
    verdict = "keep one GPU fed" if f["gpu_fed"] else "do NOT keep one GPU fed"
    print(f"  {f['cpus_per_gpu']} CPUs per GPU ({f['loader_cpus_per_gpu']} for loaders) feed up to "
          f"{f['max_gpu_images_per_s_fed']:.0f} img/s: they {verdict}")


if __name__ == "__main__":
    main()
