"""The command lines: ``--help`` answers without loading the training stack and names the command as it is typed,
and each option's default is shown once."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import infer
from pipelines.bench_help import COMMANDS
from toco_ray.cli import command_parser

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "ray", "mlflow")  # seconds to import each on two cores; a --help needs none of them
# What `python -m pipelines.<name> --help` does, in a fresh interpreter, then the heavy packages it loaded (last line)
PROBE = """
import json, runpy, sys
sys.argv = [{module!r}, "--help"]
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
    status = "returned"
except SystemExit as exit_:
    status = exit_.code
loaded = sorted(name for name in {heavy!r} if name in sys.modules)
print(json.dumps({{"status": status, "loaded": loaded, "toco_ray": sys.modules["toco_ray"].__file__}}))
"""


@functools.cache
def help_of(command: str) -> tuple[str, dict]:
    """(help text, {"status", "loaded", "toco_ray"}) of ``python -m pipelines.<command> --help``."""
    module = f"pipelines.{command}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    *text, last = proc.stdout.rstrip("\n").split("\n")
    return "\n".join(text), json.loads(last)


def test_every_command_line_is_covered():
    # the bench_* scripts are developers' tools that load torch at import; every other module is a command
    modules = {p.stem for p in (REPO / "pipelines").glob("*.py")} - {"__init__"}
    assert set(COMMANDS) == {m for m in modules if not m.startswith("bench_")}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_loads_no_training_stack(command):
    _, probe = help_of(command)
    assert probe["status"] == 0
    assert probe["loaded"] == []
    assert probe["toco_ray"].startswith(str(REPO))  # this checkout, not the installed copy


@pytest.mark.parametrize("command", COMMANDS)
def test_usage_names_the_command_as_it_is_typed(command):
    text, _ = help_of(command)
    assert text.startswith(f"usage: python -m pipelines.{command} ")


def test_help_shows_each_default_once():
    parser = command_parser("pipelines.example", "An example.")
    parser.add_argument("--port", type=int, default=5000, help="TCP port")
    parser.add_argument("--gpus", type=float, default=0.0, help="0 = CPU")  # 0 is a setting, so it is shown
    parser.add_argument("--name", default="", help="run name (default: a new one)")  # explained: nothing added
    parser.add_argument("--smoke", action="store_true", help="CI run")  # a switch: no "(default: False)"
    parser.add_argument("--workers", type=int, default=None, help="actors")  # None says nothing
    text = " ".join(parser.format_help().split())
    assert "TCP port (default: 5000)" in text and "0 = CPU (default: 0.0)" in text
    assert "run name (default: a new one) --smoke" in text and "CI run --workers" in text
    assert text.endswith("actors")


def test_infer_reads_the_former_output_root_option():
    assert infer.parse_args(["--checkpoint", "c", "--output-root", "old"]).output_dir == "old"
    assert infer.parse_args(["--checkpoint", "c", "--output-dir", "new"]).output_dir == "new"
    assert infer.parse_args(["--checkpoint", "c"]).output_dir == "outputs"
