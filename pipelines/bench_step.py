"""Benchmark: one ToCo training step, single encoding vs the reference's re-encoding, with and without L_reg.

The reference encodes the main image for the forward, again for the teacher and the student heads, and once
more for the scale-1.0 CAM; toco-ray encodes it once. Three variants share the weights and the batch: ours,
the reference's re-encoding, and ours with the dense energy off (``loss.w_reg`` 0). Their steps are interleaved
(one step of each in turn, so load on the machine hits all alike) and the median step time of each is printed,
with the ratios, all measured in one run. Weights are random (nothing is downloaded); every loss term is on.

    python -m pipelines.bench_step                       # synthetic and voc presets, 5 timed steps each
    python -m pipelines.bench_step --presets synthetic --steps 9
    python -m pipelines.bench_step --presets voc --steps 3 --device cuda
    python -m pipelines.bench_step --smoke               # one tiny step of each variant (CI)
"""

from __future__ import annotations

import statistics
import time

import torch

from toco_ray.benchmark import random_batch, synchronize
from toco_ray.cli import command_parser
from toco_ray.config import build_config
from toco_ray.engine import build_objective, to_device, train_step
from toco_ray.optim import build_optimizer, build_scheduler

SMOKE = {"data.crop_size": 64, "train.global_batch": 2, "cam.scales": (1.0,)}  # overrides for --smoke


class StepTimer:
    """Runs training steps of one objective (its own optimiser and schedule) and records their times."""

    def __init__(self, objective, cfg, device: str):
        self.objective, self.device = objective, device
        self.optimizer = build_optimizer(objective.model.param_groups(), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.schedule.max_iters)
        self.iteration = cfg.schedule.seg_start_iter  # every term active
        self.times: list[float] = []

    def step(self, batch: dict, record: bool = True) -> None:
        synchronize(self.device)
        start = time.perf_counter()
        train_step(self.objective, self.optimizer, self.scheduler, batch, self.iteration)
        synchronize(self.device)
        self.iteration += 1
        if record:
            self.times.append(time.perf_counter() - start)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def interleave(timers: dict[str, StepTimer], batch: dict, steps: int, warmup: int) -> dict[str, float]:
    """One step of each timer in turn, ``warmup`` untimed rounds first; returns each median step time."""
    for i in range(warmup + steps):
        for timer in timers.values():
            timer.step(batch, record=i >= warmup)
    return {name: timer.median for name, timer in timers.items()}


# name: (re-encode the main image as the reference does, config overrides)
VARIANTS = {"ours": (False, {}), "reference": (True, {}), "no reg": (False, {"loss.w_reg": 0.0})}


def build_variants(preset: str, device: str, overrides: dict | None = None, names=tuple(VARIANTS)):
    """The named :data:`VARIANTS` as objectives with the same weights, and the preset's config."""
    overrides = {"model.pretrained": False, **(overrides or {})}
    variants = {}
    for name in names:
        reencode, extra = VARIANTS[name]
        torch.manual_seed(0)  # same weights in every variant
        variants[name] = build_objective(build_config(preset, {**overrides, **extra}), seed=0, reencode=reencode)
        variants[name].to(device)
    return variants, build_config(preset, overrides)


def bench_preset(
    preset: str, steps: int, warmup: int, device: str, overrides: dict | None = None, names=tuple(VARIANTS)
) -> dict:
    """Median step time of each named variant on one noise batch, steps interleaved; plus ``"cfg"``."""
    variants, cfg = build_variants(preset, device, overrides, names)
    batch = to_device(random_batch(cfg, torch.Generator().manual_seed(0)), device)
    timers = {name: StepTimer(objective, cfg, device) for name, objective in variants.items()}
    return {"cfg": cfg, **interleave(timers, batch, steps, warmup)}


def main(argv: list[str] | None = None) -> None:
    parser = command_parser("pipelines.bench_step", __doc__)
    parser.add_argument("--presets", default="synthetic,voc", help="comma-separated presets to time")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each variant first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="synthetic preset, 64-pixel crops, one timed step")
    args = parser.parse_args(argv)
    presets, overrides = args.presets.split(","), None
    if args.smoke:
        presets, overrides, args.steps, args.warmup = ["synthetic"], SMOKE, 1, 0
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, median of {args.steps} interleaved steps")
    print(f"{'preset':<10} {'batch':>5} {'crop':>5} {'ours s':>8} {'reference s':>12} {'speed-up':>9} "
          f"{'no reg s':>9} {'reg on/off':>11}")
    for preset in presets:
        r = bench_preset(preset, args.steps, args.warmup, args.device, overrides)
        cfg = r["cfg"]
        print(f"{preset:<10} {cfg.train.global_batch:>5} {cfg.data.crop_size:>5} {r['ours']:>8.3f} "
              f"{r['reference']:>12.3f} {r['reference'] / r['ours']:>8.2f}x {r['no reg']:>9.3f} "
              f"{r['ours'] / r['no reg']:>10.2f}x")


if __name__ == "__main__":
    main()
