"""Shared fixtures: a tiny generated dataset, tiny search spaces, one local Ray cluster with trial slots."""

import textwrap
from pathlib import Path

import pytest
import yaml

from toco_ray.data.synthetic import generate_dataset

NUM_TRAIN, NUM_VAL = 16, 8

# A few seconds per trial on two cores, yet every stage runs: seg switches on at iteration 3, two evaluations
# (3 and 6), each with a checkpoint.
TINY = {
    "data.crop_size": 64,
    "data.val_size": 64,
    "data.num_workers": 0,
    "ctc.local_crop_size": 24,
    "ctc.n_local_crops": 2,
    "model.depth": 2,
    "model.aux_layer": -1,
    "train.global_batch": 4,
    "schedule.max_iters": 6,
    "schedule.eval_every": 3,
    "schedule.log_every": 1,
    "schedule.seg_start_iter": 3,
    "optim.warmup_iters": 2,
    "eval.num_probe_images": 2,
}


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synthetic"), NUM_TRAIN, NUM_VAL, seed=0)


@pytest.fixture
def write_space(tmp_path, tiny_root):
    """``write_space(name, **keys)``: a search-space file over the tiny config on the generated dataset."""

    def write(name: str, body: str) -> Path:
        base = {"preset": "synthetic", "set": {**TINY, "data.root": str(tiny_root)}}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"base": base}, sort_keys=False) + textwrap.dedent(body))
        return path

    return write


@pytest.fixture(scope="session")
def sweep_ray():
    """One local Ray cluster for the session, started as a sweep starts it (trial slots, pinned dashboard).

    A cluster another fixture started without trial slots is replaced: sweeps on it would reserve CPU for every
    trial function, and its Train placement-group cleaner may not find its dashboard.
    """
    import ray

    from toco_ray.tuning.cluster import TRIAL_SLOT, start_ray

    if ray.is_initialized() and ray.cluster_resources().get(TRIAL_SLOT, 0) < 1:
        ray.shutdown()
    start_ray(slots=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def context(tmp_path):
    """A trial context for a 2 × 2 grid (``loss.w_ptc`` × seeds) with an MLflow store in ``tmp_path``."""
    from toco_ray.tuning.space import load_space
    from toco_ray.tuning.trial import TrialContext

    path = tmp_path / "demo.yaml"
    path.write_text("base: {preset: synthetic}\nkind: grid\nseeds: [0, 1]\ngrid: {loss.w_ptc: [0.1, 0.3]}\n")
    return TrialContext(space=load_space(path), sweep_name="demo", sweep_dir=str(tmp_path), experiment="exp",
                        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", parent_run_id="", extra={}, workers=1,
                        cpus_per_worker=1)
