r"""Shows a sweep's trials while it runs: state, iteration, latest M / M^m / Seg (mIoU %) and time left, from MLflow.

Copy-paste:

    python -m pipelines.sweep_status quick_demo                   # once
    python -m pipelines.sweep_status quick_demo --watch 30        # again every 30 s until the sweep ends (Ctrl-C)
    MLFLOW_TRACKING_URI=http://head:5000 python -m pipelines.sweep_status toco_hpo   # a cluster's tracking server

It reads only the MLflow store (``--output-dir``'s ``mlflow.db`` unless ``MLFLOW_TRACKING_URI`` is set), so it runs
beside the sweep, on any machine that reaches the store, and loads neither torch nor Ray. A trial's time left is its
remaining iterations at its latest images per second; the sweep's adds the unstarted trials at the mean duration of
the finished ones.
"""

from __future__ import annotations

import argparse
import sys
import time

from toco_ray.cli import command_parser
from toco_ray.errors import EXIT_STATUS, TocoError
from toco_ray.tracking_names import missing_store, resolve_tracking_uri

CLEAR = "\033[H\033[J"  # cursor home, clear the screen: --watch redraws in place on a terminal


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("pipelines.sweep_status", __doc__.splitlines()[0])
    parser.add_argument("target", metavar="SWEEP", help="a sweep name, its MLflow experiment, or a parent/trial run id")
    parser.add_argument("--output-dir", default="outputs", help="where the embedded MLflow store is")
    parser.add_argument("--watch", type=float, default=0.0, metavar="SECONDS",
                        help="print the table again every SECONDS until the sweep ends; 0 prints it once")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mlflow import MlflowClient  # after parsing: --help stays instant

    from toco_ray.tuning.status import status_lines, sweep_status

    uri = resolve_tracking_uri(args.output_dir)
    try:
        missing = missing_store(uri, args.output_dir)
        if missing:
            raise TocoError(missing)
        client = MlflowClient(tracking_uri=uri)
        while True:
            status = sweep_status(client, args.target)
            redraw = args.watch and sys.stdout.isatty()
            print((CLEAR if redraw else "") + "\n".join(status_lines(status, now=time.time())), flush=True)
            if not args.watch or status.state != "RUNNING":
                return 0
            time.sleep(args.watch)  # a polling interval the user chose, not a synchronisation
    except TocoError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_STATUS
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
