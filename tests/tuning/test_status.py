"""A sweep's live status: each trial's row read back from a real MLflow store, the sweep's time left, the table."""

import pytest
from mlflow import MlflowClient

from toco_ray.metric_names import LOSS_TOTAL, THROUGHPUT, eval_miou
from toco_ray.tuning.status import (
    SweepStatus,
    TrialStatus,
    live_view_lines,
    status_lines,
    time_left,
    trial_status,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def client(tmp_path):
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def logged_run(client, params: dict, metrics: dict[str, list[tuple[int, float]]]):
    experiment = client.create_experiment("status")
    run = client.create_run(experiment, run_name="+PTC s0 · p01")
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    for key, points in metrics.items():
        for step, value in points:
            client.log_metric(run.info.run_id, key, value, step=step)
    return run.info.run_id


def test_a_running_trial_shows_its_last_iteration_latest_numbers_and_time_left(client):
    run_id = logged_run(
        client, {"schedule.max_iters": 100, "train.global_batch": 8, "loss.w_seg": 0.0},
        {LOSS_TOTAL: [(20, 1.0), (40, 0.8)], THROUGHPUT: [(20, 2.0), (40, 4.0)],
         eval_miou("cam"): [(20, 0.1), (40, 0.25)], eval_miou("aux_cam"): [(40, 0.3)]},
    )
    row = trial_status(client, client.get_run(run_id))
    # 60 iterations left × 8 images / 4 images per second (the last log period's pace)
    assert row == TrialStatus("+PTC s0 · p01", "running", 40, 100, (0.25, 0.3, None), eta_s=120.0)


def test_an_ended_trial_shows_its_state_and_duration(client):
    run_id = logged_run(client, {"schedule.max_iters": 6}, {LOSS_TOTAL: [(6, 0.5)], eval_miou("cam"): [(6, 0.2)]})
    client.set_terminated(run_id, "KILLED")
    run = client.get_run(run_id)
    row = trial_status(client, run)
    assert (row.state, row.iteration, row.eta_s) == ("killed", 6, None)
    assert row.duration_s == (run.info.end_time - run.info.start_time) / 1000
    assert row.miou[0] == 0.2 and row.miou[2] is None  # not evaluated yet: no Seg


def status(*trials: TrialStatus, unsampled: int = 0, state: str = "RUNNING") -> SweepStatus:
    return SweepStatus("demo", "abc123", state, list(trials), unsampled, concurrency=2, ui="MLflow: http://x")


def test_the_sweeps_time_left_spreads_the_remaining_work_over_its_slots():
    done = [TrialStatus(f"p0{i}", "finished", 6, 6, duration_s=d) for i, d in enumerate([100.0, 200.0])]
    running = [TrialStatus("p02", "running", 3, 6, eta_s=30.0), TrialStatus("p03", "running", 1, 6, eta_s=50.0)]
    pending = [TrialStatus("p04", "pending"), TrialStatus("p05", "pending")]
    # (30 + 50 s running, + 3 unstarted × the finished mean 150 s) over 2 slots
    assert status(*done, *running, *pending, unsampled=1).eta_s == (80 + 3 * 150) / 2
    assert status(*running, *pending).eta_s is None  # nothing finished: nothing to estimate from


def test_the_table_has_a_row_per_trial_and_a_summary():
    rows = [TrialStatus("+L_cls^m s0 · p00", "finished", 6, 6, (0.196, 0.2, None), duration_s=41.0),
            TrialStatus("+PTC s0 · p01", "running", 3, 6, (0.165, 0.221, None), eta_s=75.0),
            TrialStatus("+PTC s1 · p02", "pending")]
    assert status_lines(status(*rows)) == [
        "sweep demo (running, parent run abc123)",
        "trial              state     iteration  M     M^m   Seg  time left",
        "+L_cls^m s0 · p00  finished  6/6        19.6  20.0  –    –",
        "+PTC s0 · p01      running   3/6        16.5  22.1  –    1m15s",
        "+PTC s1 · p02      pending   –          –     –     –    –",
        "3 trial(s): 1 finished, 1 running, 1 pending; about 58s left",  # (75 + 41) / 2
        "MLflow: http://x",
    ]
    assert status_lines(status(*rows[:1], state="FINISHED"))[-2] == "1 trial(s): 1 finished"


@pytest.mark.parametrize("seconds, text", [(None, "–"), (42.4, "42s"), (200, "3m20s"), (7500, "2h05m")])
def test_time_left_reads_as_the_progress_lines_write_it(seconds, text):
    assert time_left(seconds) == text


def test_a_sweep_says_at_its_start_how_to_follow_it():
    assert live_view_lines("demo", "outputs", "http://127.0.0.1:8265", "sqlite:////o/optuna.db") == [
        "status: python -m pipelines.sweep_status demo --output-dir outputs --watch 30",
        "Ray dashboard: http://127.0.0.1:8265",
        "Optuna: optuna-dashboard sqlite:////o/optuna.db  (pip install optuna-dashboard)",
    ]
    assert live_view_lines("demo", "outputs", "") == [
        "status: python -m pipelines.sweep_status demo --output-dir outputs --watch 30"]
