"""Benchmark: how long ``python -m pipelines.<command> --help`` takes, interpreter start included (median of runs).

A command line loads only what its argument parser needs; the training stack (torch, timm, Ray, MLflow) loads once
the command line is read. This times what a researcher waits for when asking a command what it takes. Each run is
a fresh process; with ``--compare`` the same commands of another checkout run in alternation with this one's, so
load on the machine hits both alike.

    python -m pipelines.bench_help                              # every command, median of 3 runs each
    python -m pipelines.bench_help train sweep --repeats 5
    python -m pipelines.bench_help --compare /tmp/toco-ray-main   # beside another checkout's times
    python -m pipelines.bench_help --smoke                      # one run of two commands (CI)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from toco_ray.cli import command_parser

REPO = Path(__file__).resolve().parents[1]
# the command lines a researcher types (the bench_* scripts are for developers and load torch at import)
COMMANDS = ("train", "sweep", "sweep_status", "infer", "report", "make_synthetic", "convert_labels", "tracking_server",
            "gpu_check", "check_mlflow_ui")
SMOKE_COMMANDS = ("report", "make_synthetic")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("pipelines.bench_help", __doc__)
    parser.add_argument("commands", nargs="*", metavar="COMMAND",
                        help=f"commands to time (default: all of {', '.join(COMMANDS)})")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command (median reported)")
    parser.add_argument("--compare", default="", metavar="DIR",
                        help="another checkout whose commands run in alternation with this one's")
    parser.add_argument("--smoke", action="store_true", help=f"one run of {' and '.join(SMOKE_COMMANDS)} (CI)")
    args = parser.parse_args(argv)
    unknown = [c for c in args.commands if c not in COMMANDS]
    if unknown:  # checked here, not with choices=: argparse 3.11 refuses an empty nargs="*" list there
        parser.error(f"unknown command(s) {', '.join(unknown)}: choose from {', '.join(COMMANDS)}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    return args


def time_help(command: str, checkout: Path) -> float:
    """Seconds until ``python -m pipelines.<command> --help`` exits, run in ``checkout`` (its own code first on the
    path, not the installed package's)."""
    path = os.pathsep.join(p for p in (str(checkout), os.environ.get("PYTHONPATH", "")) if p)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", f"pipelines.{command}", "--help"], cwd=checkout,
                          env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"python -m pipelines.{command} --help in {checkout} exited {proc.returncode}:\n"
                         f"{proc.stderr.strip()}")
    return seconds


def measure(commands: tuple[str, ...], checkouts: list[Path], repeats: int) -> dict[str, list[float]]:
    """``{command: [median seconds per checkout]}``; each round runs every command once in every checkout."""
    times = {(command, checkout): [] for command in commands for checkout in checkouts}
    for _ in range(repeats):
        for command in commands:
            for checkout in checkouts:
                times[command, checkout].append(time_help(command, checkout))
    return {command: [statistics.median(times[command, c]) for c in checkouts] for command in commands}


def table(medians: dict[str, list[float]], checkouts: list[Path]) -> list[str]:
    heads = ["this checkout (s)"] + [f"{c} (s)" for c in checkouts[1:]]
    lines = ["command          " + "  ".join(heads)]
    for command, seconds in medians.items():
        lines.append(f"{command:<16} " + "  ".join(f"{s:>{len(h)}.2f}" for s, h in zip(seconds, heads)))
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    commands = SMOKE_COMMANDS if args.smoke else tuple(args.commands) or COMMANDS
    repeats = 1 if args.smoke else args.repeats
    checkouts = [REPO] + ([Path(args.compare).resolve()] if args.compare else [])
    print(f"python -m pipelines.<command> --help, median of {repeats} run(s), {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    print("\n".join(table(measure(commands, checkouts, repeats), checkouts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
