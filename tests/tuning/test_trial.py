"""A trial's identity comes from its Tune config alone; a finished trial is reported from MLflow, not retrained."""

import pytest
from mlflow import MlflowClient

from toco_ray.tracking import start_run
from toco_ray.tuning.runs import final_report
from toco_ray.tuning.trial import grid_config, plan_trial

pytestmark = pytest.mark.unit

def test_a_trial_plan_depends_on_its_config_alone(context):
    point = context.space.grid_points()[3]  # row 0.3, seed 1
    plan = plan_trial(context.space, "demo", grid_config(point))
    assert plan.run_name == "demo-p03-0_3-s1" and plan.overrides == {"loss.w_ptc": 0.3} and plan.seed == 1
    tags = plan.tags("demo", "abc_00003", context.space.varied_keys())
    assert tags["toco.sweep.row"] == "0.3" and tags["toco.sweep.varied"] == "loss.w_ptc,train.seed"
    assert plan.title == "0.3 s1 · p03"  # what MLflow's runs table shows: what differs first


def test_a_finished_trial_is_reported_to_tune_from_mlflow(context):
    # a trial Tune starts again after an interruption but whose run had finished: its last evaluation, no training
    run_id = start_run(context.tracking_uri, "exp", "demo-p00-0_1-s0")
    client = MlflowClient(tracking_uri=context.tracking_uri)
    for step, value in ((3, 0.1), (6, 0.25)):
        client.log_metric(run_id, "eval/cam_miou", value, step=step)
        client.log_metric(run_id, "eval/seg_miou", value / 2, step=step)
    client.log_metric(run_id, "loss/total", 1.5, step=6)
    assert final_report(client, run_id) == {"cam_miou": 0.25, "seg_miou": 0.125, "loss": 1.5, "iteration": 6}
