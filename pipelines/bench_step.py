"""Benchmark: one ToCo training step, single encoding vs the reference's re-encoding.

The reference encodes the main image for the forward, again for the teacher and the student heads, and once
more for the scale-1.0 CAM; toco-ray encodes it once. This prints the mean step time of both on this machine,
measured in one run, and their ratio. Weights are random (nothing is downloaded); all loss terms are on.

    python -m pipelines.bench_step                       # synthetic and voc presets, 3 timed steps each
    python -m pipelines.bench_step --presets voc --steps 2 --device cuda
"""

from __future__ import annotations

import argparse
import copy

import torch

from toco_ray.benchmark import random_batch, time_train_steps
from toco_ray.config import build_config
from toco_ray.engine import build_objective, to_device


def time_steps(objective, cfg, batch, steps: int, warmup: int, device: str) -> float:
    return time_train_steps(objective, cfg, batch, steps, warmup).seconds_per_step


def bench_preset(preset: str, steps: int, warmup: int, device: str) -> tuple[float, float]:
    cfg = build_config(preset, {"model.pretrained": False})
    torch.manual_seed(0)
    ours = build_objective(cfg, seed=0).to(device)
    reference = copy.deepcopy(ours)
    reference.reencode = True
    batch = to_device(random_batch(cfg, torch.Generator().manual_seed(0)), device)
    t_ours = time_steps(ours, cfg, batch, steps, warmup, device)
    t_ref = time_steps(reference, cfg, batch, steps, warmup, device)
    return t_ours, t_ref


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="synthetic,voc", help="comma-separated presets to time")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"{'preset':<10} {'batch':>5} {'crop':>5} {'ours s/step':>12} {'reference s/step':>17} {'speed-up':>9}")
    for preset in args.presets.split(","):
        cfg = build_config(preset)
        ours, ref = bench_preset(preset, args.steps, args.warmup, args.device)
        print(f"{preset:<10} {cfg.train.global_batch:>5} {cfg.data.crop_size:>5} {ours:>12.3f} {ref:>17.3f} "
              f"{ref / ours:>8.2f}x")


if __name__ == "__main__":
    main()
