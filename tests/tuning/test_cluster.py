"""How a cluster is split between concurrent trials (no Ray needed: totals as ray.cluster_resources() gives them)."""

import pytest

from toco_ray.tuning.cluster import TRIAL_SLOT, WAITING_CPU, ClusterError, plan_resources

pytestmark = pytest.mark.unit


def test_two_cores_run_one_trial_whose_worker_gets_both():
    plan = plan_resources({"CPU": 2.0, TRIAL_SLOT: 2.0}, workers=1)
    # automatic concurrency: 2 CPUs // (1 worker × 2 CPUs each) = 1 trial; its worker takes 2 // (1 × 1) = 2
    assert (plan.max_concurrent, plan.cpus_per_worker) == (1, 2.0)
    assert plan.trial_fn == {"CPU": 0.0, TRIAL_SLOT: 1.0}  # the trial function waits; it holds no CPU


def test_sixteen_cores_and_gpus():
    cpu = plan_resources({"CPU": 16.0, TRIAL_SLOT: 16.0}, workers=2)
    assert (cpu.max_concurrent, cpu.cpus_per_worker) == (4, 2.0)  # 16 // (2 × 2) = 4 trials, 16 // 8 = 2 CPUs
    gpu = plan_resources({"CPU": 16.0, "GPU": 4.0, TRIAL_SLOT: 16.0}, workers=2, gpus_per_worker=1)
    assert (gpu.max_concurrent, gpu.cpus_per_worker) == (2, 4.0)  # 4 GPUs // 2 = 2 trials, 16 // 4 workers = 4


def test_a_cluster_without_trial_slots_reserves_a_sliver_of_cpu_per_trial():
    plan = plan_resources({"CPU": 4.0}, workers=1, max_concurrent=2)
    # 4 − 2 × 0.01 = 3.98 CPUs for 2 workers → 1 whole CPU each
    assert plan.trial_fn == {"CPU": WAITING_CPU} and plan.cpus_per_worker == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 2, "max_concurrent": 2}, "2 concurrent trial(s) × 2 worker(s) × 1 CPUs need 4 CPUs"),
        ({"workers": 1, "gpus_per_worker": 1}, "a trial needs 1 × 1 GPUs; the Ray cluster has 0"),
        ({"workers": 0}, "--workers-per-trial must be at least 1"),
    ],
)
def test_impossible_plans_fail_before_any_trial(kwargs, message):
    with pytest.raises(ClusterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_resources({"CPU": 2.0, TRIAL_SLOT: 2.0}, **kwargs)
