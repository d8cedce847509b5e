"""Stage resources derived from the cluster: defaults on CPU and GPU clusters, and refusals that would stall."""

import pytest

from toco_ray.inference.pipeline import PlanError, StagePlan, plan_stages

pytestmark = pytest.mark.unit


def test_two_cpu_machine_keeps_a_cpu_for_the_crf_stage():
    # min(1, 2 CPUs / (2 · 1 worker)) = 1 CPU for the actor; 2 − 1 = 1 left for CRF/writing tasks
    assert plan_stages({"CPU": 2.0}) == StagePlan(1, 1.0, 0.0, 1.0, threads=1)


def test_two_workers_on_two_cpus_get_fractional_cpus():
    # 2 / (2 · 2) = 0.5 CPU each (2 × 1 CPU would leave nothing for the CPU stage: Ray Data stalls)
    plan = plan_stages({"CPU": 2.0}, workers=2)
    assert (plan.cpus_per_worker, plan.cpu_stage_cpus, plan.threads) == (0.5, 1.0, 1)


def test_gpu_cluster_defaults_to_one_actor_per_gpu_and_fractions_share_a_gpu():
    assert plan_stages({"CPU": 16.0, "GPU": 2.0}).workers == 2
    shared = plan_stages({"CPU": 16.0, "GPU": 1.0}, gpus_per_worker=0.5)
    assert (shared.workers, shared.gpus_per_worker, shared.cpus_per_worker) == (2, 0.5, 1.0)


def test_requests_beyond_the_cluster_are_refused_with_the_numbers():
    with pytest.raises(PlanError, match="has 0 GPU"):
        plan_stages({"CPU": 2.0}, gpus_per_worker=1.0)
    with pytest.raises(PlanError, match=r"3 workers × 0.5 GPU exceed the cluster's 1 GPU"):
        plan_stages({"CPU": 8.0, "GPU": 1.0}, workers=3, gpus_per_worker=0.5)
    with pytest.raises(PlanError, match=r"2 inference workers × 1 CPU leave 0 of the cluster's 2 CPUs"):
        plan_stages({"CPU": 2.0}, workers=2, cpus_per_worker=1.0)
