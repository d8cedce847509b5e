"""The demo sweep's console, as a user sees it: ``pipelines.sweep search_spaces/quick_demo.yaml --smoke``, two trials
at a time, in its own process with its own Ray cluster, every line of its output sorted by the program that wrote
it; then the finished sweep as ``pipelines.sweep_status`` shows it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import sweep_status

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 600  # the smoke demo takes about 1.5 minutes on two cores
# What each program's lines look like. The project's trial lines reach the console through Ray's log forwarding,
# behind Ray's prefix naming the function that printed them (run_trial, the project's trial).
SOURCES = {
    "toco-ray": [r"^(starting|continuing) sweep \S+: ", r"^  (MLflow|status|Ray dashboard|Optuna): ",
                 r"^trial .+ (started|ended: iteration \d+|failed \()", r"^sweep \S+: \d+ trial\(s\), ",
                 r"^  MLflow experiment '", r"^  report: python -m pipelines\.report ",
                 r"^\(run_trial pid=\d+\) (run \S+: |it \d+/\d+ \| loss |eval @ \d+ \| )"],
    "Ray": [r"^\(\w+ pid=\d+", r"\.(py|cc):\d+", r"^\[?\d{4}-\d\d-\d\d"],
    "MLflow": [r"mlflow", r"MLflow"],
}
SILENCED = ["Token authentication is enabled", "PreemptionWatcher", "Creating initial MLflow database tables",
            "tensorboard", "Trial status", "│", "across cluster"]


def source(line: str) -> str:
    return next((name for name, patterns in SOURCES.items() if any(re.search(p, line) for p in patterns)), "other")


def test_the_demo_console_is_the_projects_own_and_its_status_reads_back(tmp_path, capsys):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    # two trials at a time, as README's demo command runs them: their progress lines alike but for the numbers
    done = subprocess.run([sys.executable, "-m", "pipelines.sweep", "search_spaces/quick_demo.yaml", "--smoke",
                           "--max-concurrent", "2", "--output-dir", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=DEADLINE_S)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 0, "\n".join(lines[-40:])
    by_source: dict[str, list[str]] = {}
    for line in lines:
        by_source.setdefault(source(line), []).append(line)
    counts = {name: len(found) for name, found in by_source.items()}
    with capsys.disabled():
        print(f"\ndemo console: {len(lines)} lines by source: {counts}")
    own = counts.get("toco-ray", 0)
    assert own / len(lines) >= 0.7, by_source
    assert not [line for line in lines if any(noise in line for noise in SILENCED)]
    # the start says where to follow the sweep; two trials start and end; the progress lines come from rank 0 only
    assert sum(line.startswith("  Ray dashboard: http://127.0.0.1:") for line in lines) == 1
    assert sum(line.startswith("  status: python -m pipelines.sweep_status quick_demo") for line in lines) == 1
    assert sum(re.match(r"trial .+ (started|ended)", line) is not None for line in lines) == 4
    assert len([line for line in lines if " it 6/6 | " in line]) == 2

    capsys.readouterr()
    assert sweep_status.main(["quick_demo", "--output-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    cells = sorted(re.split(r"\s{2,}", row)[:3] for row in table[2:4])  # rows by start time: concurrent, any order
    assert cells == [["+L_cls^m s0 · p00", "finished", "6/6"], ["+PTC s0 · p01", "finished", "6/6"]]
    assert table[4] == "2 trial(s): 2 finished"
