"""Writes the synthetic VOC-layout dataset (20 shape×texture classes) used by tests and the demo preset.

Copy-paste:

    python -m pipelines.make_synthetic --out data/synthetic                      # 400 train + 100 val, seed 0
    python -m pipelines.make_synthetic --out /tmp/syn --num-train 1000 --num-val 200 --seed 1
    python -m pipelines.make_synthetic --out /tmp/big --object-side 0.6 1.0 --clutter 0.5   # larger objects
    python -m pipelines.train --preset synthetic --data-root data/synthetic      # train on it

Without ``data.root`` the synthetic preset generates the default tree once into ``$TOCO_RAY_CACHE``
(default ``~/.cache/toco_ray``); this command is for a tree you want to keep or inspect.
"""

from __future__ import annotations

import argparse
import sys
import time

from toco_ray.cli import command_parser
from toco_ray.config import SYNTHETIC_NUM_TRAIN, SYNTHETIC_NUM_VAL, SYNTHETIC_OBJECT_SIDE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("pipelines.make_synthetic", __doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (VOC layout is written inside)")
    parser.add_argument("--num-train", type=int, default=SYNTHETIC_NUM_TRAIN, help="training images")
    parser.add_argument("--num-val", type=int, default=SYNTHETIC_NUM_VAL, help="validation images")
    parser.add_argument("--seed", type=int, default=0, help="same seed → byte-identical files")
    parser.add_argument("--object-side", type=float, nargs=2, default=SYNTHETIC_OBJECT_SIDE, metavar=("LOW", "HIGH"),
                        help="object diameter range, fraction of the shorter image side")
    parser.add_argument("--clutter", type=float, default=1.0,
                        help="background clutter strength, 0 = smooth colour field")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # imported once the command line is read: the data package loads torch, which --help does not need
    from toco_ray.data.errors import DatasetError
    from toco_ray.data.synthetic import SyntheticStyle, generate_dataset

    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            rate = done / max(time.perf_counter() - start, 1e-9)
            print(f"\rgenerated {done}/{total} images ({rate:.0f} img/s)", end="", file=sys.stderr, flush=True)

    try:
        style = SyntheticStyle(tuple(args.object_side), args.clutter)
    except DatasetError as exc:
        print(f"make_synthetic: {exc}", file=sys.stderr)
        return 2
    root = generate_dataset(args.out, args.num_train, args.num_val, args.seed, progress=progress, style=style)
    print(f"\nwrote {root} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
