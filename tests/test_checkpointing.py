import random

import numpy as np
import pytest
import torch

from toco_ray.checkpointing import (
    META_FILE,
    STATE_FILE,
    CheckpointError,
    TrainingState,
    capture_rng,
    load_checkpoint,
    read_meta,
    restore_rng,
    save_checkpoint,
    seed_everything,
)

pytestmark = pytest.mark.unit


def _draws(generator: torch.Generator) -> tuple:
    return (random.random(), float(np.random.rand()), float(torch.rand(1)), float(torch.rand(1, generator=generator)))


def test_rng_states_replay_the_same_draws():
    seed_everything(3)
    generator = torch.Generator().manual_seed(7)
    state = capture_rng(generator)
    first = _draws(generator)
    _draws(generator)  # move every stream on
    restore_rng(state, generator)
    assert _draws(generator) == first


def test_round_trip_restores_model_optimizer_scheduler_and_iteration(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0 / (it + 1))
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    state = TrainingState(
        iteration=1,
        model=model.state_dict(),
        optimizer=opt.state_dict(),
        scheduler=sched.state_dict(),
        rng=[capture_rng()],
        history={"oversmoothing": {1: [0.5, 0.6]}},
        world_size=1,
    )
    folder = save_checkpoint(tmp_path / "ckpt", state, meta={"run_name": "r"})
    assert sorted(p.name for p in folder.iterdir()) == [META_FILE, STATE_FILE]  # no temporary files left
    assert read_meta(folder) == {
        "iteration": 1, "world_size": 1, "version": 2, "run_name": "r",
        "files": {STATE_FILE: (folder / STATE_FILE).stat().st_size},
    }

    loaded = load_checkpoint(folder)
    model2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda it: 1.0 / (it + 1))
    model2.load_state_dict(loaded.model)
    opt2.load_state_dict(loaded.optimizer)
    sched2.load_state_dict(loaded.scheduler)
    assert loaded.iteration == 1 and loaded.history == {"oversmoothing": {1: [0.5, 0.6]}}
    assert torch.equal(model2.weight, model.weight)
    # lr at iteration 1 is 0.1 · 1/(1+1) = 0.05 in both
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.05) == opt.param_groups[0]["lr"]
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_missing_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        load_checkpoint(tmp_path)
