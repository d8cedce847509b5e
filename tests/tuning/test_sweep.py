"""The driver's Tune callback ends the MLflow runs of trials that Tune stopped early, that failed, or that an
interruption cut off."""

import os
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient

from toco_ray.tracking import end_run, start_run
from toco_ray.tuning.runs import STOPPED_TAG
from toco_ray.tuning.trial import grid_config, plan_trial
from toco_ray.tuning.tuner import ChildRunCloser, TrialLines, trial_summary, tune_console

pytestmark = pytest.mark.unit

def test_a_stopped_trial_is_finished_and_tagged_and_a_finished_one_keeps_its_end(context):
    client = MlflowClient(tracking_uri=context.tracking_uri)
    points = context.space.grid_points()
    runs = [start_run(context.tracking_uri, "exp", plan_trial(context.space, "demo", grid_config(p)).run_name)
            for p in points[:2]]
    end_run(context.tracking_uri, runs[1], "FINISHED")  # trial 1 ended by itself
    ended = client.get_run(runs[1]).info.end_time
    closer = ChildRunCloser(context)
    closer.on_trial_complete(0, [], SimpleNamespace(config=grid_config(points[0]), last_result={"iteration": 3}))
    closer.on_trial_complete(0, [], SimpleNamespace(config=grid_config(points[1]), last_result={"iteration": 6}))
    first, second = (client.get_run(r) for r in runs)
    assert first.info.status == "FINISHED" and first.data.tags[STOPPED_TAG] == "true (at iteration 3)"
    assert second.data.tags[STOPPED_TAG] == "false" and second.info.end_time == ended


def test_runs_still_running_when_the_sweep_ends_are_killed_and_ended_ones_are_left_alone(context):
    client = MlflowClient(tracking_uri=context.tracking_uri)
    trials = [SimpleNamespace(config=grid_config(p), last_result={}) for p in context.space.grid_points()[:2]]
    runs = [start_run(context.tracking_uri, "exp", plan_trial(context.space, "demo", t.config).run_name)
            for t in trials]
    end_run(context.tracking_uri, runs[1], "FINISHED")
    ended = client.get_run(runs[1]).info.end_time
    ChildRunCloser(context).on_experiment_end(trials)  # an interrupted sweep: trial 0 was cut off mid-training
    interrupted, finished = (client.get_run(r) for r in runs)
    assert interrupted.info.status == "KILLED"
    assert finished.info.status == "FINISHED" and finished.info.end_time == ended


def test_a_failed_trial_that_is_still_running_is_marked_failed(context):
    client = MlflowClient(tracking_uri=context.tracking_uri)
    point = context.space.grid_points()[0]
    run_id = start_run(context.tracking_uri, "exp", plan_trial(context.space, "demo", grid_config(point)).run_name)
    ChildRunCloser(context).on_trial_error(0, [], SimpleNamespace(config=grid_config(point), last_result={}))
    assert client.get_run(run_id).info.status == "FAILED"


def test_a_trial_is_one_line_when_it_starts_and_one_when_it_ends(context, capsys):
    trial = SimpleNamespace(config=grid_config(context.space.grid_points()[3]), path="/sweeps/demo/tune/trial_3",
                            last_result={"iteration": 6, "cam_miou": 0.3641, "aux_cam_miou": 0.391, "loss": 1.2})
    lines = TrialLines(context)
    lines.on_trial_start(0, [], trial)
    lines.on_trial_complete(0, [], trial)
    lines.on_trial_error(0, [], trial)
    assert capsys.readouterr().out.splitlines() == [
        "trial 0.3 s1 · p03 started",
        "trial 0.3 s1 · p03 ended: iteration 6, M 36.4, M^m 39.1 (mIoU %)",  # the preset trains all three
        "trial 0.3 s1 · p03 failed (its error: /sweeps/demo/tune/trial_3/error.txt)",
    ]
    assert trial_summary({}) == "iteration 0"
    result = {"iteration": 200, "cam_miou": 0.3, "aux_cam_miou": 0.4, "seg_miou": 0.002}
    no_seg = {"cam": True, "aux_cam": True, "seg": False}
    assert trial_summary(result, no_seg) == "iteration 200, M 30.0, M^m 40.0 (mIoU %)"


def test_a_quiet_sweep_runs_tune_on_its_silent_console_engine_and_leaves_the_environment_as_it_was(monkeypatch):
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    with tune_console(verbose=False):
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "1")
    with tune_console(verbose=False):
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "1"
    with tune_console(verbose=True):  # verbose: Tune's own choice
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "1"
