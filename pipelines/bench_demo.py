"""Benchmark: where a quick-demo trial's CPU time goes, and how to spend two cores on a sweep.

For each row of a grid space (default ``search_spaces/quick_demo.yaml``) it times training steps at one and at two
torch threads, the rows' steps interleaved (one step of each in turn, so load on the machine hits all alike), and
the row's step with the CAM at one scale beside it; then one evaluation of the val images the space evaluates, and
rendering the figures a trial logs. From those medians it projects the sweep's time two ways: one trial at a time
with two threads (the default), or two trials at once with one thread each (``--max-concurrent 2``). Everything is
measured in this one run; weights are random and batches noise, the evaluation reads the embedded synthetic set.

    python -m pipelines.bench_demo                                      # the quick demo, 5 timed steps per row
    python -m pipelines.bench_demo search_spaces/synthetic_table4.yaml --steps 3
    python -m pipelines.bench_demo --smoke                              # tiny batches, one step (CI)
"""

from __future__ import annotations

import io
import time
from contextlib import contextmanager

import torch

from pipelines.bench_step import StepTimer
from toco_ray.benchmark import random_batch
from toco_ray.cli import command_parser
from toco_ray.data.build import class_names
from toco_ray.distributed.loaders import val_loader, val_views
from toco_ray.engine import build_objective
from toco_ray.evaluation import evaluate, summarize
from toco_ray.tuning import load_space
from toco_ray.tuning.space import GridSpace
from toco_ray.visualize import confusion_figure

SMOKE = {"train.global_batch": 2, "data.val_limit": 4, "data.num_workers": 0}


@contextmanager
def threads(count: int):
    """torch's intra-op threads set to ``count`` inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def rows(space: GridSpace) -> dict[str, dict]:
    """``{row label: its overrides}`` in sweep order."""
    return {point.label: point.overrides for point in space.grid_points()}


def row_timers(space: GridSpace, extra: dict) -> tuple[dict[str, StepTimer], object]:
    """A step timer per row and per row with the CAM at scale 1.0 alone; and the first row's config."""
    timers, first = {}, None
    for label, overrides in rows(space).items():
        for suffix, more in (("", {}), (" [CAM 1.0]", {"cam.scales": (1.0,)})):
            cfg = space.config({**overrides, **more}, seed=0, extra={"model.pretrained": False, **extra})
            torch.manual_seed(0)
            timers[label + suffix] = StepTimer(build_objective(cfg, seed=0), cfg, "cpu")
            first = first or cfg
    return timers, first


def step_medians(space: GridSpace, extra: dict, steps: int, warmup: int, count: int) -> dict[str, float]:
    """Median step time of every timer at ``count`` torch threads, steps interleaved across the timers."""
    timers, cfg = row_timers(space, extra)
    batch = random_batch(cfg, torch.Generator().manual_seed(0))
    with threads(count):
        for i in range(warmup + steps):
            for timer in timers.values():
                timer.step(batch, record=i >= warmup)
    return {name: timer.median for name, timer in timers.items()}


def evaluation_seconds(space: GridSpace, extra: dict, count: int) -> tuple[float, int, float]:
    """Seconds of one evaluation (images, CAM at the space's scales) at ``count`` threads; its image count; and
    the seconds to render the confusion figure a trial logs with it."""
    cfg = space.config(next(iter(rows(space).values())), seed=0, extra={"model.pretrained": False, **extra})
    views = val_views(cfg)
    model = build_objective(cfg, seed=0).model
    with threads(count):
        started = time.perf_counter()
        counts = evaluate(model, val_loader(views, cfg, 0, 1), cfg.model.num_classes, cfg.cam.eval_bkg,
                          cfg.cam.scales)
        seconds = time.perf_counter() - started
    started = time.perf_counter()
    summarize(counts)
    names = class_names(cfg.data, cfg.model.num_classes) or [str(i) for i in range(cfg.model.num_classes + 1)]
    confusion_figure(dict(counts.matrices), names).savefig(io.BytesIO(), format="png")
    return seconds, len(views), time.perf_counter() - started


def projection(space: GridSpace, one: dict[str, float], two: dict[str, float], eval_s: tuple[float, float],
               iters: int) -> tuple[float, float]:
    """The sweep's training and evaluation time: serial at two threads, and two at once at one thread each."""
    seeds = len(space.seeds)
    serial = sum(seeds * (iters * two[label] + eval_s[1]) for label in space.row_labels())
    paired = sum(seeds * (iters * one[label] + eval_s[0]) for label in space.row_labels()) / 2
    return serial, paired


def main(argv: list[str] | None = None) -> None:
    parser = command_parser("pipelines.bench_demo", __doc__)
    parser.add_argument("space", nargs="?", default="search_spaces/quick_demo.yaml", help="a grid search space")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row and thread count (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each row first")
    parser.add_argument("--data-root", default="", help="synthetic dataset root (default: the embedded one)")
    parser.add_argument("--smoke", action="store_true", help="batch 2, 4 val images, one timed step (CI)")
    args = parser.parse_args(argv)
    space = load_space(args.space)
    extra = {"data.root": args.data_root} if args.data_root else {}
    if args.smoke:
        extra, args.steps, args.warmup = {**SMOKE, **extra}, 1, 0
    cfg = space.config(next(iter(rows(space).values())), extra=extra)
    print(f"{space.name}: batch {cfg.train.global_batch}, crop {cfg.data.crop_size}, {cfg.schedule.max_iters} "
          f"iterations, CAM scales {list(cfg.cam.scales)}; median of {args.steps} interleaved steps")
    one = step_medians(space, extra, args.steps, args.warmup, 1)
    two = step_medians(space, extra, args.steps, args.warmup, 2)
    print(f"{'row':<22} {'1 thread s':>10} {'2 threads s':>11} {'speed-up':>9}")
    for name in one:
        print(f"{name:<22} {one[name]:>10.3f} {two[name]:>11.3f} {one[name] / two[name]:>8.2f}x")
    eval_one, images, figure_s = evaluation_seconds(space, extra, 1)
    eval_two = evaluation_seconds(space, extra, 2)[0]
    print(f"evaluation of {images} val images: {eval_one:.1f} s at 1 thread, {eval_two:.1f} s at 2 threads; "
          f"confusion figure {figure_s:.1f} s")
    serial, paired = projection(space, one, two, (eval_one, eval_two), cfg.schedule.max_iters)
    faster = "two at once" if paired < serial else "one at a time"
    print(f"sweep of {space.trial_count()} trials, steps and evaluation only: one at a time with 2 threads "
          f"{serial:.0f} s, two at once with 1 thread each {paired:.0f} s: {faster} is faster by "
          f"{abs(serial - paired) / max(serial, paired):.0%}")


if __name__ == "__main__":
    main()
