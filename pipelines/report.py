r"""Writes a sweep's report: the paper's Table 4/5 layout (M, M^m, Seg; mean ± std over seeds), plots, time account.

Copy-paste:

    python -m pipelines.report quick_demo                     # a sweep by name (outputs/mlflow.db)
    python -m pipelines.report toco-sweep-table5b_crop_size   # an MLflow experiment: its latest sweep
    python -m pipelines.report 3f2a...c9                      # a parent (or trial) run id
    python -m pipelines.report quick_demo --out reports/demo  # somewhere else than the sweep folder

Reads everything from MLflow (``MLFLOW_TRACKING_URI``, else ``<output-dir>/mlflow.db``), writes ``report.md``,
``table.csv``, ``trials.csv`` and the plots into the sweep's ``report/`` folder (or ``--out``), logs them as
``report/`` artifacts of the sweep's parent run and prints the Markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from toco_ray.cli import command_parser
from toco_ray.errors import EXIT_STATUS, TocoError
from toco_ray.tracking_names import missing_store, resolve_tracking_uri


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("pipelines.report", __doc__.splitlines()[0])
    parser.add_argument("target", metavar="EXPERIMENT_OR_PARENT_RUN",
                        help="a sweep name, an MLflow experiment (its latest sweep), or a parent/trial run id")
    parser.add_argument("--output-dir", default="outputs", help="where the embedded MLflow store is")
    parser.add_argument("--out", default="", help="report folder (default: <sweep folder>/report)")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to the parent run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # imported once the command line is read: MLflow's client and matplotlib take seconds, --help needs neither
    from mlflow import MlflowClient

    from toco_ray.tuning.report import REPORT_DIR, build_report, log_report, markdown, write_report

    uri = resolve_tracking_uri(args.output_dir)
    missing = missing_store(uri, args.output_dir)
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return EXIT_STATUS
    client = MlflowClient(tracking_uri=uri)
    try:
        report = build_report(client, args.target)
    except TocoError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_STATUS
    default = Path(report.sweep_dir) / REPORT_DIR if report.sweep_dir else Path(args.output_dir) / "reports"
    folder = Path(args.out) if args.out else default
    paths = write_report(report, folder)
    if not args.no_log:
        log_report(client, report, folder)
    print(markdown(report))
    print("written: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
