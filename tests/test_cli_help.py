"""The command lines: ``--help`` answers without loading the training stack and names the command as it is typed,
each option's default is shown once, and the MLflow experiment follows ``--experiment``, then
``$MLFLOW_EXPERIMENT_NAME``, then the command's own default."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import infer, sweep, train
from pipelines.bench_help import COMMANDS
from toco_ray.cli import command_parser
from toco_ray.tracking_names import DEFAULT_EXPERIMENT, EXPERIMENT_ENV, resolve_experiment

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


# --- the MLflow experiment -------------------------------------------------------------------------------------------
def test_experiment_is_the_commands_default_without_flag_or_environment(monkeypatch):
    monkeypatch.delenv(EXPERIMENT_ENV, raising=False)
    assert resolve_experiment("", DEFAULT_EXPERIMENT) == "toco-ray"
    assert resolve_experiment("", "toco-sweep-quick_demo") == "toco-sweep-quick_demo"


def test_experiment_from_the_environment_when_no_flag(monkeypatch):
    monkeypatch.setenv(EXPERIMENT_ENV, "ablations")
    assert resolve_experiment("", DEFAULT_EXPERIMENT) == "ablations"
    monkeypatch.setenv(EXPERIMENT_ENV, "  ")  # set but blank: as if unset
    assert resolve_experiment("", DEFAULT_EXPERIMENT) == "toco-ray"


def test_an_explicit_experiment_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(EXPERIMENT_ENV, "ablations")
    assert resolve_experiment("mine", DEFAULT_EXPERIMENT) == "mine"


def test_command_lines_leave_the_experiment_to_the_resolution(monkeypatch):
    # an argparse default would hide $MLFLOW_EXPERIMENT_NAME: "" means "not given" and is resolved after parsing
    monkeypatch.setenv(EXPERIMENT_ENV, "ablations")
    assert train.parse_args([]).experiment == ""
    assert sweep.parse_args(["space.yaml"]).experiment == ""
    assert infer.parse_args(["--checkpoint", "c"]).experiment == ""
    assert train.parse_args(["--experiment", "mine"]).experiment == "mine"


def test_a_training_job_goes_to_the_environments_experiment(monkeypatch, tmp_path):
    monkeypatch.setenv(EXPERIMENT_ENV, "ablations")
    assert train.build_job(train.parse_args(["--output-dir", str(tmp_path)])).experiment == "ablations"
    flagged = train.parse_args(["--output-dir", str(tmp_path), "--experiment", "mine"])
    assert train.build_job(flagged).experiment == "mine"


def test_a_sweep_goes_to_the_environments_experiment(monkeypatch, tmp_path, tiny_root):
    from toco_ray.tuning.sweep import prepare_sweep

    space = tmp_path / "one.yaml"
    space.write_text(f"base: {{preset: synthetic, set: {{data.root: {tiny_root}}}}}\nkind: grid\n"
                     "grid: {loss.w_ptc: [0.1]}\n")
    argv = [str(space), "--output-dir", str(tmp_path / "out")]
    assert prepare_sweep(sweep.build_request(sweep.parse_args(argv))).experiment == "toco-sweep-one"
    monkeypatch.setenv(EXPERIMENT_ENV, "ablations")
    assert prepare_sweep(sweep.build_request(sweep.parse_args(argv))).experiment == "ablations"
