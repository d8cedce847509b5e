"""Writes the synthetic VOC-layout dataset (20 shape×texture classes) used by tests and the demo preset.

Copy-paste:

    python -m pipelines.make_synthetic --out data/synthetic                      # 400 train + 100 val, seed 0
    python -m pipelines.make_synthetic --out /tmp/syn --num-train 1000 --num-val 200 --seed 1
    python -m pipelines.train --preset synthetic --data-root data/synthetic      # train on it

Without ``data.root`` the synthetic preset generates the default tree once into ``$TOCO_RAY_CACHE``
(default ``~/.cache/toco_ray``); this command is for a tree you want to keep or inspect.
"""

from __future__ import annotations

import argparse
import sys
import time

from toco_ray.data.synthetic import DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, generate_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (VOC layout is written inside)")
    parser.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN, help="training images")
    parser.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL, help="validation images")
    parser.add_argument("--seed", type=int, default=0, help="same seed → byte-identical files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            rate = done / max(time.perf_counter() - start, 1e-9)
            print(f"\rgenerated {done}/{total} images ({rate:.0f} img/s)", end="", file=sys.stderr, flush=True)

    root = generate_dataset(args.out, args.num_train, args.num_val, args.seed, progress=progress)
    print(f"\nwrote {root} in {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
