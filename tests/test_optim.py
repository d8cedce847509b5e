import math

import pytest
import torch

from toco_ray.config import OptimConfig
from toco_ray.optim import build_optimizer, build_scheduler, lr_multiplier

pytestmark = pytest.mark.unit

VOC = OptimConfig()  # warm-up 1500 from ratio 1e-6, power 0.9
MAX = 20000


def test_lr_multiplier_at_paper_checkpoints():
    # it=0: 1 − (1 − 0/1500)·(1 − 1e-6) = 1e-6
    assert lr_multiplier(0, VOC, MAX) == pytest.approx(1e-6, rel=1e-9)
    # it=1499: 1 − (1/1500)·(1 − 1e-6) = 1 − 6.66666e-4 + 6.7e-10 = 0.99933333400
    assert lr_multiplier(1499, VOC, MAX) == pytest.approx(1 - (1 / 1500) * (1 - 1e-6), rel=1e-12)
    assert lr_multiplier(1499, VOC, MAX) == pytest.approx(0.999333334, abs=1e-9)
    # it=1500: poly takes over, (1 − 1500/20000)^0.9 = 0.925^0.9 = exp(0.9·(−0.0779615)) = exp(−0.0701654) = 0.932240
    assert lr_multiplier(1500, VOC, MAX) == pytest.approx(0.932240, abs=1e-6)
    # it=9999: (1 − 9999/20000)^0.9 = 0.50005^0.9 = exp(0.9·(−0.693047)) = exp(−0.623742) = 0.535935
    assert lr_multiplier(9999, VOC, MAX) == pytest.approx(math.exp(0.9 * math.log(0.50005)), rel=1e-12)
    assert lr_multiplier(9999, VOC, MAX) == pytest.approx(0.535935, abs=1e-6)


def test_scheduler_drives_both_groups_with_tenfold_head():
    backbone, head = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer({"backbone": [backbone], "head": [head]}, VOC)
    sched = build_scheduler(opt, VOC, MAX)
    lrs = []
    for _ in range(3):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    # it=1: 1 − (1 − 1/1500)·(1 − 1e-6) ≈ 6.6767e-4 → backbone 6e-5·6.6767e-4, head ×10
    assert lrs[0] == pytest.approx([6e-5 * 1e-6, 6e-4 * 1e-6])
    assert lrs[1][0] == pytest.approx(6e-5 * lr_multiplier(1, VOC, MAX))
    assert lrs[1][1] == pytest.approx(10 * lrs[1][0])
    assert opt.param_groups[0]["weight_decay"] == 0.01 and opt.param_groups[0]["betas"] == (0.9, 0.999)
