"""Benchmark: the dense-energy loss L_reg (not a test).

Prints, measured in one run on this machine:

1. our lattice against the exact O(N²) Gaussian sum on small images: the energy ratio and the time of each
   (forward + backward), on noise and on smooth, photo-like images;
2. our lattice at the synthetic preset's size (8 × 64², the energy runs at half the 128 crop) and the voc
   preset's (4 × 224²), 21 labels, forward and backward apart, for each lattice backend;
3. a full synthetic training step with L_reg on against the same step with it off (``loss.w_reg`` 0), steps
   interleaved, and their ratio.

Inputs are normalised noise as in ``pipelines.bench_step`` (the sparsest, largest lattice; photographs give a
smaller one) unless ``--images smooth``. Times are medians of ``--repeats`` runs after one warm-up.

    python -m pipelines.bench_energy                          # all three parts, numba and torch backends
    python -m pipelines.bench_energy --backends numba --step-steps 9
    python -m pipelines.bench_energy --images smooth --skip-step
    python -m pipelines.bench_energy --smoke                  # tiny sizes, one repeat (CI)
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from pipelines.bench_step import SMOKE, bench_preset
from toco_ray.cli import command_parser
from toco_ray.data.transforms import denormalize
from toco_ray.losses import DenseEnergyLoss
from toco_ray.losses.permutohedral import BACKENDS, _numba

SIZES = {"synthetic": (8, 128), "voc": (4, 448)}  # preset: (batch, crop); the energy runs at half the crop
NUM_LABELS = 21  # VOC's 20 classes + background (the synthetic preset has as many)


def energy_inputs(batch: int, size: int, kind: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Images in 0..255, segmentation logits, full valid box and pseudo-labels (every other row unlabelled)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "noise":
        images = denormalize(torch.randn(batch, 3, size, size, generator=g)) * 255
    else:  # smooth colour fields with soft edges, a stand-in for photographs
        coarse = torch.rand(batch, 3, max(size // 16, 2), max(size // 16, 2), generator=g) * 255
        images = F.avg_pool2d(F.interpolate(coarse, size=(size, size), mode="nearest"), 9, 1, 4)
    logits = torch.randn(batch, NUM_LABELS, size, size, generator=g) * 2
    labels = torch.randint(0, NUM_LABELS, (batch, size, size), generator=g)
    labels[:, ::2] = 255
    return images, logits, torch.ones(batch, size, size), labels


def time_energy(loss_fn: DenseEnergyLoss, inputs, repeats: int) -> tuple[float, float, float]:
    """Median forward and backward seconds over ``repeats`` runs after a warm-up, and the energy."""
    images, logits, roi, labels = inputs
    forward, backward = [], []
    for i in range(repeats + 1):
        probs = logits.clone().requires_grad_(True)
        start = time.perf_counter()
        loss = loss_fn(images, probs.softmax(dim=1), roi, labels)
        middle = time.perf_counter()
        loss.backward()
        if i:
            forward.append(middle - start)
            backward.append(time.perf_counter() - middle)
    return statistics.median(forward), statistics.median(backward), loss.item()


def bench_exact(size: int, repeats: int, backend: str) -> None:
    print(f"\n1. ours ({backend}) vs the exact Gaussian sum, 2 × {size // 2}² (energy resolution), {NUM_LABELS} labels")
    print(f"{'images':<8} {'exact energy':>13} {'ours/exact':>11} {'exact s':>8} {'ours s':>8}")
    for kind in ("noise", "smooth"):
        inputs = energy_inputs(2, size, kind)
        exact = time_energy(DenseEnergyLoss(weight=1.0, kernel="exact"), inputs, repeats)
        ours = time_energy(DenseEnergyLoss(weight=1.0, backend=backend), inputs, repeats)
        print(f"{kind:<8} {exact[2]:>13.2f} {ours[2] / exact[2]:>11.4f} {exact[0] + exact[1]:>8.3f} "
              f"{ours[0] + ours[1]:>8.3f}")


def bench_sizes(sizes: dict, backends: list[str], kind: str, repeats: int) -> None:
    print(f"\n2. ours at the presets' sizes ({kind} images, {NUM_LABELS} labels, median of {repeats})")
    print(f"{'size':<10} {'batch':>5} {'energy at':>10} {'backend':>8} {'forward s':>10} {'backward s':>11} "
          f"{'total s':>8}")
    for name, (batch, crop) in sizes.items():
        inputs = energy_inputs(batch, crop, kind)
        for backend in backends:
            forward, backward, _ = time_energy(DenseEnergyLoss(backend=backend), inputs, repeats)
            print(f"{name:<10} {batch:>5} {crop // 2:>9}² {backend:>8} {forward:>10.3f} {backward:>11.3f} "
                  f"{forward + backward:>8.3f}")


def bench_reg_step(steps: int, overrides: dict | None) -> None:
    r = bench_preset("synthetic", steps, 1, "cpu", overrides, names=("ours", "no reg"))
    cfg = r["cfg"]
    print(f"\n3. synthetic training step (batch {cfg.train.global_batch}, crop {cfg.data.crop_size}), median of "
          f"{steps} interleaved steps")
    print(f"reg on {r['ours']:.3f} s, reg off {r['no reg']:.3f} s, ratio {r['ours'] / r['no reg']:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = command_parser("pipelines.bench_energy", __doc__)
    available = [b for b in BACKENDS[1:] if b == "torch" or _numba is not None]
    parser.add_argument("--backends", default=",".join(available), help="lattice backends to time in part 2")
    parser.add_argument("--images", choices=("noise", "smooth"), default="noise", help="inputs of part 2")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--exact-size", type=int, default=96, help="input size of part 1 (energy at half)")
    parser.add_argument("--step-steps", type=int, default=5, help="timed steps per variant in part 3")
    parser.add_argument("--skip-step", action="store_true", help="leave out part 3")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and one repeat")
    args = parser.parse_args(argv)
    sizes, overrides = SIZES, None
    if args.smoke:
        sizes, overrides = {"tiny": (2, 32)}, SMOKE
        args.repeats, args.exact_size, args.step_steps = 1, 24, 1
    backends = args.backends.split(",")
    print(f"torch threads {torch.get_num_threads()}, numba {'installed' if _numba is not None else 'missing'}")
    bench_exact(args.exact_size, args.repeats, backends[0])
    bench_sizes(sizes, backends, args.images, args.repeats)
    if not args.skip_step:
        bench_reg_step(args.step_steps, overrides)


if __name__ == "__main__":
    main()
