"""Optuna's define-by-run space: the paper point first, and β_l < β_h in every sample by construction."""

import optuna
import pytest
from space_files import SPACES, write

from toco_ray.config import flatten
from toco_ray.tuning import load_space
from toco_ray.tuning.sampling import ConstrainedSpace

pytestmark = pytest.mark.unit


def test_hpo_paper_point_is_enqueued_first_and_every_sample_keeps_beta_l_below_beta_h():
    space = load_space(SPACES / "toco_hpo.yaml")
    sampler = ConstrainedSpace(space, flatten(space.config()))
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0), direction="maximize")
    for point in space.points_to_evaluate:
        study.enqueue_trial(point)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for _ in range(30):
        trial = study.ask()
        extra = sampler(trial)
        assert extra == {ConstrainedSpace.TRIAL_NUMBER_KEY: trial.number}
        assert trial.params["cam.low_thre"] < trial.params["cam.high_thre"], trial.params
        assert trial.params["ctc.local_crop_size"] in (64, 80, 96, 112)
        study.tell(trial, trial.params["loss.w_ptc"])
    first = study.trials[0].params
    assert first == space.points_to_evaluate[0] and first["model.aux_layer"] == 9


def test_constraint_clips_the_lower_key_below_the_upper_one(tmp_path):
    space_text = """
        base: {preset: synthetic}
        kind: optuna
        search:
          cam.low_thre: {type: float, low: 0.1, high: 0.6}
          cam.high_thre: {type: float, low: 0.3, high: 0.9}
    """
    space = load_space(write(tmp_path, space_text))
    sampler = ConstrainedSpace(space, flatten(space.config()))
    low, high = sampler.bounds(space.search["cam.low_thre"], {"cam.high_thre": 0.35})
    # the upper key is drawn first; the lower one's range [0.1, 0.6] is cut just below 0.35
    assert low == 0.1 and 0.3499999 < high < 0.35
    assert sampler.order == ["cam.high_thre", "cam.low_thre"]
