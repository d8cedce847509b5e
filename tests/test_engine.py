import copy
import dataclasses

import pytest
import torch

from toco_ray.config import build_config
from toco_ray.engine import active_terms, box_mask, build_objective, train_step
from toco_ray.optim import build_optimizer, build_scheduler

pytestmark = pytest.mark.unit


def random_batch(b=2, h=64, w=64, num_classes=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(b, num_classes)
    labels[torch.arange(b), torch.randint(num_classes, (b,), generator=g)] = 1
    return {
        "image": torch.randn(b, 3, h, w, generator=g),
        "global2": torch.randn(b, 3, h, w, generator=g),
        "local_view": torch.randn(b, 3, h, w, generator=g),
        "valid_box": torch.tensor([[0, h, 0, w - 8]] * b),
        "label": labels,
    }


def tiny_config(**overrides):
    base = {"schedule.seg_start_iter": 0, "ctc.local_crop_size": 16, "ctc.n_local_crops": 2,
            "model.depth": 3, "model.aux_layer": -2}
    return build_config("synthetic", {**base, **overrides})


def test_schedule_switches_terms_on():
    cfg = build_config("coco", {"loss.w_reg": 0.0})
    early, mid, late = (active_terms(cfg, it) for it in (0, 8000, 12000))
    assert (early.ptc, early.ctc, early.seg, early.needs_cam) == (False, False, False, False)
    assert (mid.seg, mid.reg, mid.ptc) == (True, False, False)
    assert (late.ptc, late.ctc, late.seg) == (True, True, True)


def test_single_encoding_matches_reference_style_reencoding():
    cfg = tiny_config()
    torch.manual_seed(0)
    ours = build_objective(cfg, seed=3)
    ref = copy.deepcopy(ours)
    ref.reencode = True
    batch = random_batch()
    losses = ours(batch, iteration=0)
    ref_losses = ref(batch, iteration=0)
    assert set(losses) == {"cls", "cls_aux", "ptc", "ctc", "seg", "reg", "total"}
    for name in losses:
        torch.testing.assert_close(losses[name], ref_losses[name], rtol=1e-5, atol=1e-6, msg=name)
    losses["total"].backward()
    ref_losses["total"].backward()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        if p.grad is None:
            assert q.grad is None, name
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_non_square_inputs_not_multiple_of_16():
    cfg = tiny_config(**{"model.patch_size": 16})
    objective = build_objective(cfg)
    batch = random_batch(h=100, w=84)
    losses = objective(batch, iteration=0)
    assert torch.isfinite(losses["total"])
    losses["total"].backward()


def test_train_step_updates_the_teacher_by_ema_and_steps_the_schedule():
    cfg = tiny_config(**{"ctc.ema_momentum": 0.5, "optim.warmup_iters": 2})
    objective = build_objective(cfg)
    model = objective.model
    with torch.no_grad():  # make student and teacher differ so the EMA is visible
        for p in model.proj_student.parameters():
            p.add_(1.0)
    teacher_before = [p.clone() for p in model.proj_teacher.parameters()]
    student_before = [p.clone() for p in model.proj_student.parameters()]
    optimizer = build_optimizer(model.param_groups(), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.schedule.max_iters)
    stats = train_step(objective, optimizer, scheduler, random_batch(), iteration=0)
    for t_new, t_old, s_old in zip(model.proj_teacher.parameters(), teacher_before, student_before):
        torch.testing.assert_close(t_new, 0.5 * t_old + 0.5 * s_old)  # EMA happens before the step
    assert stats["lr"] == pytest.approx(cfg.optim.lr * cfg.optim.warmup_ratio)
    # it=1 of a 2-iteration warm-up: 1 − (1 − 1/2)(1 − 1e-6) ≈ 0.5
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr * (1 - 0.5 * (1 - 1e-6)))


def test_compat_zero_scheduled_terms_computes_them_x0_so_adamw_state_advances():
    batch = random_batch()
    states = {}
    for compat in (False, True):
        cfg = tiny_config(**{"schedule.seg_start_iter": 5, "compat.zero_scheduled_terms": compat})
        torch.manual_seed(0)
        objective = build_objective(cfg, seed=3)
        losses = objective(batch, iteration=0)
        assert ({"seg", "reg"} <= set(losses)) == compat
        optimizer = build_optimizer(objective.model.param_groups(), cfg.optim)
        scheduler = build_scheduler(optimizer, cfg.optim, cfg.schedule.max_iters)
        train_step(objective, optimizer, scheduler, batch, iteration=0)
        decoder = next(objective.model.decoder.parameters())
        states[compat] = (losses, optimizer.state.get(decoder, {}))
    fixed, ref = states[False][0], states[True][0]
    # the switched-off terms enter the total ×0: same total, same value of every other term
    torch.testing.assert_close(ref["total"], fixed["total"])
    assert float(ref["seg"].detach()) > 0 and float(ref["reg"].detach()) != 0
    # the decoder has AdamW state (step 1, zero moments) only when the terms were computed
    assert states[False][1] == {}
    assert float(states[True][1]["step"]) == 1 and float(states[True][1]["exp_avg"].abs().max()) == 0


def test_compat_reg_energy_scale_uses_the_reference_equivalent_weight():
    assert build_objective(tiny_config()).energy.weight == pytest.approx(1e-7)
    scaled = build_objective(tiny_config(**{"compat.reg_energy_scale": True})).energy.weight
    assert scaled == pytest.approx(1e-7 * 0.57)
    assert build_objective(tiny_config(**{"compat.reference": True})).energy.weight == pytest.approx(scaled)


def test_compat_ptc_box_unscaled_changes_only_ptc():
    batch = random_batch(h=64, w=64)
    batch["valid_box"] = torch.tensor([[16, 64, 0, 64]] * 2)  # starts below the 8-row token grid
    values = {}
    for compat in (False, True):
        torch.manual_seed(0)
        objective = build_objective(tiny_config(**{"compat.ptc_box_unscaled": compat, "loss.w_reg": 0.0}), seed=3)
        values[compat] = objective(batch, iteration=0)
    # the reference's slice rows 16:64 of an 8-row grid is empty: no labelled token, PTC's pair sums are 0
    assert float(values[True]["ptc"].detach()) == pytest.approx(0.5)  # 0.5·(1 − 0/1) + 0.5·0/1
    assert float(values[False]["ptc"].detach()) != pytest.approx(0.5)
    for name in ("cls", "cls_aux", "ctc", "seg"):
        torch.testing.assert_close(values[True][name], values[False][name], msg=name)


def test_compat_reference_turns_every_switch_on():
    compat = build_config("synthetic", {"compat.reference": True}).compat
    names = [f.name for f in dataclasses.fields(compat) if f.name != "reference"]
    assert names and all(compat.on(name) for name in names)
    assert not any(build_config("synthetic").compat.on(name) for name in names)


def test_box_mask():
    mask = box_mask(torch.tensor([[1, 3, 0, 2]]), torch.Size([1, 4, 3]))
    assert mask[0].tolist() == [[0, 0, 0], [1, 1, 0], [1, 1, 0], [0, 0, 0]]
