"""Sweeps end to end on a real local Ray cluster with a generated dataset and a real MLflow store.

Each trial is one Ray Train run of the tiny config (6 iterations, evaluations at 3 and 6). Covered: an Optuna sweep
with ASHA (study persisted, paper point first, parent/children in MLflow, a finished sweep re-run runs nothing), a
grid × seeds sweep and its report, a sweep killed mid-trial then resumed (no finished trial trains again), and a
sweep stopped by Ctrl-C (sweep and cut-off trial marked killed).
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from train_hooks import HOLD_MARKER

from pipelines import report as report_cli
from toco_ray.tracking import (
    COMMAND_TAG,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    RUN_NAME_TAG,
    command_line,
    resolve_tracking_uri,
)
from toco_ray.tuning.runs import (
    OPTUNA_NUMBER_TAG,
    OPTUNA_RUN_ID_ATTR,
    ROLE_TAG,
    ROW_TAG,
    SEED_TAG,
    STOPPED_TAG,
    TRIAL_ID_TAG,
    VARIANT_PARAM,
    VARIED_TAG,
)
from toco_ray.tuning.status import status_lines, sweep_status
from toco_ray.tuning.sweep import SweepRequest, SweepSettings, read_state, run_sweep

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_ITERS = 6
TWO_POINT_GRID = """
    kind: grid
    seeds: [0]
    grid:
      loss.w_ptc: [0.1, 0.2]
"""
KILL_DEADLINE_S = 600  # bounded polling while the sweep to be killed runs
REPO = Path(__file__).resolve().parents[2]
# pipelines.sweep with a hold hook: the second grid point's training waits before iteration 4 (after its checkpoint
# at 3) until the sweep is killed
HELD_SWEEP = ("import sys; from train_hooks import HoldBefore; from pipelines.sweep import main; "
              "sys.exit(main(sys.argv[1:], hooks=(HoldBefore('-p01-', 3),)))")


def sweep(space: Path, out: Path, **settings):
    return run_sweep(SweepRequest(space_path=str(space), output_dir=out, settings=SweepSettings(**settings)))


def trial_runs(client, parent_id: str) -> list:
    experiment_id = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'",
                              order_by=["attributes.start_time ASC"])


def steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_optuna_sweep_with_asha_tracks_every_trial_and_a_rerun_runs_nothing(sweep_ray, write_space, tmp_path,
                                                                           monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = write_space("hpo", """
        kind: optuna
        num_samples: 2
        metric: seg_miou
        search:
          cam.low_thre: {type: float, low: 0.1, high: 0.45}
          cam.high_thre: {type: float, low: 0.4, high: 0.85}
          loss.w_ptc: {type: loguniform, low: 0.05, high: 1.0}
        points_to_evaluate:
          - {cam.low_thre: 0.25, cam.high_thre: 0.7, loss.w_ptc: 0.2}
        asha: {grace_iters: 0, reduction_factor: 4}  # decides at iteration 3: the seg loss starts there
    """)
    outcome = sweep(space, tmp_path)
    assert (outcome.trials, outcome.errors) == (2, 0)

    client = MlflowClient(tracking_uri=resolve_tracking_uri(tmp_path))
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags[ROLE_TAG] == "parent"
    assert parent.data.params["sweep.trials"] == "2" and parent.data.params["sweep.max_concurrent"] == "1"
    runs = trial_runs(client, outcome.parent_run_id)
    study = optuna.load_study(study_name="hpo", storage=f"sqlite:///{tmp_path / 'sweeps' / 'hpo' / 'optuna.db'}")
    assert len(runs) == len(study.trials) == 2 and study.metric_names == ["seg_miou"]
    assert study.trials[0].params == {"cam.low_thre": 0.25, "cam.high_thre": 0.7, "loss.w_ptc": 0.2}  # paper first
    for run in runs:
        tags, params = run.data.tags, run.data.params
        number = int(tags[OPTUNA_NUMBER_TAG])
        assert run.info.status == "FINISHED" and tags[ROLE_TAG] == "trial" and tags[SEED_TAG] == "0"
        assert tags[TRIAL_ID_TAG] and run.info.run_name == f"t{number:03d}"
        assert tags[RUN_NAME_TAG] == f"hpo-t{number:03d}"  # the name it is found again by
        sampled = study.trials[number].params
        assert float(params["cam.low_thre"]) == sampled["cam.low_thre"] < sampled["cam.high_thre"]
        assert float(params["loss.w_ptc"]) == sampled["loss.w_ptc"] and params["train.global_batch"] == "4"
        stopped = tags[STOPPED_TAG].startswith("true")
        # ASHA decides at iteration 3 (grace = seg start 3 + 0); a stopped trial has one evaluation, at 3
        evals = [3] if stopped else [3, MAX_ITERS]
        assert steps(client, run.info.run_id, "eval/seg_miou") == evals, run.info.run_name
        assert steps(client, run.info.run_id, "loss/total")[:3] == [1, 2, 3]
        assert study.trials[number].state == optuna.trial.TrialState.COMPLETE
        # Optuna's trial leads to its run, and its intermediate values are stepped by training iteration
        assert study.trials[number].user_attrs[OPTUNA_RUN_ID_ATTR] == run.info.run_id
        assert sorted(study.trials[number].intermediate_values) == evals
    # the first trial sets the rung alone (a later one below it would be stopped at iteration 3)
    assert not runs[0].data.tags[STOPPED_TAG].startswith("true")

    again = sweep(space, tmp_path)  # resume is the default: a finished sweep has nothing left to run
    assert again.parent_run_id == outcome.parent_run_id and again.trials == 2
    assert len(trial_runs(client, outcome.parent_run_id)) == 2
    assert len(optuna.load_study(study_name="hpo", storage=study._storage).trials) == 2
    assert [r.info.end_time for r in trial_runs(client, outcome.parent_run_id)] == [r.info.end_time for r in runs]


def test_grid_with_seeds_runs_every_point_and_the_report_lists_them(sweep_ray, write_space, tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = write_space("grid", """
        kind: grid
        metric: cam_miou
        seeds: [0, 1]
        grid:
          loss.w_ptc: [0.1, 0.3]
    """)
    outcome = sweep(space, tmp_path)
    assert (outcome.trials, outcome.errors) == (4, 0)
    client = MlflowClient(tracking_uri=resolve_tracking_uri(tmp_path))
    runs = trial_runs(client, outcome.parent_run_id)
    assert sorted((r.data.tags[ROW_TAG], r.data.tags[SEED_TAG]) for r in runs) == [
        ("0.1", "0"), ("0.1", "1"), ("0.3", "0"), ("0.3", "1")]
    for run in runs:
        tags, params = run.data.tags, run.data.params
        assert run.info.status == "FINISHED" and params["loss.w_ptc"] == tags[ROW_TAG] == params[VARIANT_PARAM]
        assert params["train.seed"] == tags[SEED_TAG] and tags[VARIED_TAG] == "loss.w_ptc,train.seed"
        # the name leads with what differs; the run is found again by its own name, the command is the driver's
        assert run.info.run_name.startswith(f"{tags[ROW_TAG]} s{tags[SEED_TAG]} · p0")
        assert tags[RUN_NAME_TAG].startswith("grid-p0") and tags[COMMAND_TAG] == command_line()
        assert steps(client, run.info.run_id, "loss/total") == list(range(1, MAX_ITERS + 1))
        assert steps(client, run.info.run_id, "eval/cam_miou") == [3, MAX_ITERS]

    # the parent carries the result: the best M, and the mean M of each row
    parent = client.get_run(outcome.parent_run_id)
    by_row = {}
    for run in runs:
        by_row.setdefault(run.data.tags[ROW_TAG], []).append(run.data.metrics["eval/cam_miou"])
    assert parent.data.metrics["sweep/best/cam_miou"] == max(v for values in by_row.values() for v in values)
    for row, values in by_row.items():
        assert parent.data.metrics[f"sweep/mean/cam_miou/{row.replace('.', '_')}"] == pytest.approx(sum(values) / 2)
    assert client.get_experiment(parent.info.experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND

    # the console: one line per trial start and end, with its numbers; no Tune status tables by default
    console = capsys.readouterr()
    for run in runs:
        m = 100 * run.data.metrics["eval/cam_miou"]
        assert f"trial {run.info.run_name} started" in console.out
        assert f"trial {run.info.run_name} ended: iteration {MAX_ITERS}, M {m:.1f}, " in console.out
    assert "Trial status" not in console.out + console.err and "│" not in console.out + console.err

    assert report_cli.main(["grid", "--output-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    folder = tmp_path / "sweeps" / "grid" / "report"
    assert {"report.md", "table.csv", "trials.csv", "ablation.png"} <= {p.name for p in folder.iterdir()}
    for run in runs:  # every trial and its final M (%) are listed
        m = 100 * run.data.metrics["eval/cam_miou"]
        assert f"| {run.info.run_name} | {run.data.tags[ROW_TAG]} | {run.data.tags[SEED_TAG]} | {m:.1f} |" in printed
    by_row = {}
    for run in runs:
        by_row.setdefault(run.data.tags[ROW_TAG], []).append(100 * run.data.metrics["eval/cam_miou"])
    table = (folder / "table.csv").read_text().splitlines()
    assert table[0].startswith("setting (loss.w_ptc),seeds,M,M^m,Seg")
    for line, (label, values) in zip(table[1:], by_row.items()):
        mean = sum(values) / 2
        std = abs(values[0] - values[1]) / 2 ** 0.5  # sample std of two values: |a − b| / √2
        assert line.startswith(f"{label},2,{mean:.1f} ± {std:.1f},")
    logged = {a.path for a in client.list_artifacts(outcome.parent_run_id, "report")}
    assert {"report/report.md", "report/table.csv", "report/ablation.png"} <= logged


def test_killed_sweep_resumes_without_rerunning_a_finished_trial(sweep_ray, write_space, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = write_space("killed", TWO_POINT_GRID)
    first = start_sweep_holding_its_second_trial(space, tmp_path)
    client = MlflowClient(tracking_uri=resolve_tracking_uri(tmp_path))
    try:
        finished, interrupted = wait_for_one_finished_and_one_held(client, first, tmp_path / "sweeps" / "killed")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the cluster it started, mid-trial
        first.wait()
    before = client.get_run(finished.info.run_id)

    outcome = sweep(space, tmp_path)
    state = read_state(tmp_path / "sweeps" / "killed")
    assert outcome.parent_run_id == state.parent_run_id == before.data.tags["mlflow.parentRunId"]
    runs = {r.data.tags[RUN_NAME_TAG]: r for r in trial_runs(client, outcome.parent_run_id)}
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs.values())
    after = runs[finished.data.tags[RUN_NAME_TAG]]
    assert after.info.end_time == before.info.end_time and after.data.tags["resumed"] == "false"  # not trained again
    resumed = runs[interrupted]
    assert resumed.data.tags["resumed"] == "true" and resumed.data.tags["restored_from_iteration"] == "3"
    for run in runs.values():  # every step exactly once, although the interrupted trial ran iterations 4.. twice
        assert steps(client, run.info.run_id, "loss/total") == list(range(1, MAX_ITERS + 1))
        assert steps(client, run.info.run_id, "eval/cam_miou") == [3, MAX_ITERS]
    assert client.get_run(outcome.parent_run_id).info.status == "FINISHED"
    killed, resumed_session = state.sessions  # the killed driver's session counts up to its last trial event
    assert killed.status == "KILLED" and killed.end > killed.start and killed.pid == first.pid
    assert resumed_session.status == "FINISHED" and resumed_session.start >= killed.end
    assert outcome.wall_s == pytest.approx(sum(s.end - s.start for s in state.sessions))


def test_ctrl_c_marks_the_sweep_and_the_cut_off_trial_killed_and_says_so(sweep_ray, write_space, tmp_path,
                                                                       monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = write_space("interrupted", TWO_POINT_GRID)
    first = start_sweep_holding_its_second_trial(space, tmp_path)
    client = MlflowClient(tracking_uri=resolve_tracking_uri(tmp_path))
    try:
        finished, held = wait_for_one_finished_and_one_held(client, first, tmp_path / "sweeps" / "interrupted")
        live = sweep_status(client, "interrupted")  # what pipelines.sweep_status shows while the sweep runs
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
        code = first.wait(timeout=KILL_DEADLINE_S)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    printed = (tmp_path / "first.log").read_text()
    assert code == 130 and "interrupted: 1 trial(s) not finished" in printed, printed[-3000:]
    parent = client.get_run(finished.data.tags["mlflow.parentRunId"])
    runs = {r.data.tags[RUN_NAME_TAG]: r for r in trial_runs(client, parent.info.run_id)}
    assert parent.info.status == "KILLED"
    assert runs[held].info.status == "KILLED" and runs[finished.data.tags[RUN_NAME_TAG]].info.status == "FINISHED"

    # the live status, taken while the second trial was held before iteration 4
    m_first = 100 * finished.data.metrics["eval/cam_miou"]
    m_held = 100 * client.get_metric_history(runs[held].info.run_id, "eval/cam_miou")[0].value  # its eval at 3
    assert live.state == "RUNNING" and [(t.state, t.iteration, t.max_iters) for t in live.trials] == [
        ("finished", MAX_ITERS, MAX_ITERS), ("running", 3, MAX_ITERS)]
    table = status_lines(live)
    cells = [re.split(r"\s{2,}", row)[:4] for row in table[2:4]]
    assert cells == [[finished.info.run_name, "finished", "6/6", f"{m_first:.1f}"],
                     [runs[held].info.run_name, "running", "3/6", f"{m_held:.1f}"]]
    assert table[4].startswith("2 trial(s): 1 finished, 1 running; about ")


def start_sweep_holding_its_second_trial(space: Path, out: Path) -> subprocess.Popen:
    """``pipelines.sweep`` in its own process group (log in ``out/first.log``); the hold hook stops its second
    trial before iteration 4, after the checkpoint at 3, until the sweep is killed."""
    command = [sys.executable, "-c", HELD_SWEEP, str(space), "--output-dir", str(out)]
    tests = str(REPO / "tests")  # where train_hooks is
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get(
        "PYTHONPATH")]))}
    with (out / "first.log").open("w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env)


def wait_for_one_finished_and_one_held(client, process, sweep_dir: Path) -> tuple:
    """Polls until one trial has finished and the next is held by the hold hook (its ``held`` marker exists)."""
    deadline = time.monotonic() + KILL_DEADLINE_S
    while time.monotonic() < deadline:
        assert process.poll() is None, "the sweep ended before it could be killed"
        held = sorted(sweep_dir.glob(f"runs/*/{HOLD_MARKER}"))
        experiment = client.get_experiment_by_name(f"toco-sweep-{sweep_dir.name}")
        runs = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'") if experiment else []
        finished = [r for r in runs if r.info.status == "FINISHED"]
        if finished and held:
            return finished[0], held[0].parent.name
        time.sleep(1)
    raise AssertionError(f"no finished and held trials within {KILL_DEADLINE_S} s")
