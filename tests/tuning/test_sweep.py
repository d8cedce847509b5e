"""The driver's Tune callback closes the MLflow runs of trials that Tune stopped early or that failed."""

from types import SimpleNamespace

import pytest
from mlflow import MlflowClient

from toco_ray.tracking import end_run, start_run
from toco_ray.tuning.sweep import ChildRunCloser
from toco_ray.tuning.trial import STOPPED_TAG, grid_config, plan_trial

pytestmark = pytest.mark.unit

def test_a_stopped_trial_is_finished_and_tagged_even_if_its_launcher_fails_it_late(context):
    client = MlflowClient(tracking_uri=context.tracking_uri)
    points = context.space.grid_points()
    runs = [start_run(context.tracking_uri, "exp", plan_trial(context.space, "demo", grid_config(p)).run_name)
            for p in points[:2]]
    end_run(context.tracking_uri, runs[1], "FINISHED")  # trial 1 ended by itself
    closer = ChildRunCloser(context)
    stopped = SimpleNamespace(config=grid_config(points[0]), last_result={"iteration": 3})
    closer.on_trial_complete(0, [], stopped)
    closer.on_trial_complete(0, [], SimpleNamespace(config=grid_config(points[1]), last_result={"iteration": 6}))
    first = client.get_run(runs[0])
    assert first.info.status == "FINISHED" and first.data.tags[STOPPED_TAG] == "true (at iteration 3)"
    assert client.get_run(runs[1]).data.tags[STOPPED_TAG] == "false"

    end_run(context.tracking_uri, runs[0], "FAILED")  # the killed launcher's last word arrives after Tune's
    closer.on_step_begin(1, [])
    assert client.get_run(runs[0]).info.status == "FINISHED"
    end_run(context.tracking_uri, runs[0], "FAILED")
    closer.on_experiment_end([])
    assert client.get_run(runs[0]).info.status == "FINISHED" and not closer.stopped


def test_a_failed_trial_that_is_still_running_is_marked_failed(context):
    client = MlflowClient(tracking_uri=context.tracking_uri)
    point = context.space.grid_points()[0]
    run_id = start_run(context.tracking_uri, "exp", plan_trial(context.space, "demo", grid_config(point)).run_name)
    ChildRunCloser(context).on_trial_error(0, [], SimpleNamespace(config=grid_config(point), last_result={}))
    assert client.get_run(run_id).info.status == "FAILED"
