"""What every ``python -m pipelines.<name>`` command line shares: its usage line, each option's default in its help,
and how a duration reads on its console (progress lines, a sweep's status).

This module imports argparse only: the GPU check's bare box has no pydantic, and ``--help`` should not wait for
torch, Ray or MLflow.

Example:
    >>> parser = command_parser("pipelines.report", "Writes a sweep's report.")
    >>> parser.format_usage()
    'usage: python -m pipelines.report [-h]\\n'
"""

from __future__ import annotations

import argparse
import math


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps a description's line breaks and appends ``(default: X)`` to an option's help, except where the help
    already speaks of its default (a value that stands for something, "0 = one per GPU") or there is nothing to show:
    a switch (``--smoke``), an empty string or list, None."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.nargs == 0 or _says_nothing(action.default):
            return text
        return super()._get_help_string(action)


def _says_nothing(default: object) -> bool:
    # 0 and 0.0 are shown: they are real settings ("--gpus-per-worker 0" trains on CPU); False is a switch's "off"
    return default is None or default is False or isinstance(default, (str, list, tuple)) and not default


def command_parser(module: str, description: str) -> argparse.ArgumentParser:
    """The parser of ``python -m <module>``: usage names the command as it is typed, not ``<module>.py``."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=description, formatter_class=HelpFormatter)


def format_duration(seconds: float) -> str:
    """``3m10s``, ``1h02m``, ``45s``; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
