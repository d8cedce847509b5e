r"""Converts the reference's pickled label file (``cls_labels_onehot.npy``) into toco-ray's pickle-free format.

toco-ray reads label files with ``np.load(..., allow_pickle=False)``: a pickled file can run any code it names
when loaded, so the reference's dict file is refused with a pointer to this command. The conversion unpickles
NumPy arrays and nothing else (a file naming any other Python object is refused), and writes
``cls_labels.npy`` next to the input unless ``--out`` says otherwise.

Copy-paste:

    python -m pipelines.convert_labels /data/VOC2012/cls_labels_onehot.npy      # → /data/VOC2012/cls_labels.npy
    python -m pipelines.convert_labels /data/coco/cls_labels_onehot.npy --out /data/coco/cls_labels.npy

Converting in place (the input is ``cls_labels.npy`` itself) keeps the original as ``cls_labels.pickled.npy``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from toco_ray.cli import command_parser
from toco_ray.errors import EXIT_STATUS, TocoError

DEFAULT_NAME = "cls_labels.npy"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("pipelines.convert_labels", __doc__.splitlines()[0])
    parser.add_argument("labels", help="the reference's pickled label file (np.save of a dict name → multi-hot)")
    parser.add_argument("--out", default="", help=f"output file (default: {DEFAULT_NAME} next to the input)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # imported once the command line is read: the data package loads torch, which --help does not need
    from toco_ray.data.labels import read_reference_label_file, save_label_file

    src = Path(args.labels)
    dst = Path(args.out) if args.out else src.parent / DEFAULT_NAME
    if not src.is_file():
        print(f"error: label file {src} does not exist or is not a file", file=sys.stderr)
        return EXIT_STATUS
    try:
        table = read_reference_label_file(src)
        if dst.resolve() == src.resolve():
            os.replace(src, src.with_suffix(".pickled.npy"))
        save_label_file(dst, table)
    except TocoError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_STATUS
    except OSError as err:
        print(f"error: cannot write {dst}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"{len(table)} labels written to {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
