"""data.num_workers = -1: the loader processes of a training worker come from its CPUs."""

import pytest
import torch

from toco_ray.config import build_config
from toco_ray.distributed.loaders import CPU_LOADER_WORKERS, loader_workers, with_loader_workers

pytestmark = pytest.mark.unit

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")


def test_a_gpu_worker_loads_on_every_cpu_but_the_training_loops():
    assert build_config("voc").data.num_workers == -1
    assert loader_workers(-1, 8, CUDA) == 7  # g5.2xlarge: 8 vCPU per GPU
    assert loader_workers(-1, 1, CUDA) == 1
    assert loader_workers(-1, 8, CPU) == CPU_LOADER_WORKERS  # CPU training threads hold the CPUs


def test_an_explicit_count_wins_and_the_resolved_count_is_what_the_config_records():
    assert loader_workers(0, 8, CUDA) == 0 and loader_workers(3, 8, CUDA) == 3
    cfg = with_loader_workers(build_config("voc"), 16, CUDA)
    assert cfg.data.num_workers == 15
