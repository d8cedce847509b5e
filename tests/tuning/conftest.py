"""Tiny search spaces over the shared tiny dataset and config (tests/conftest.py), a Ray cluster with trial slots."""

import textwrap
from pathlib import Path

import pytest
import yaml


@pytest.fixture
def write_space(tmp_path, tiny_root, tiny_overrides):
    """``write_space(name, **keys)``: a search-space file over the tiny config on the generated dataset."""

    def write(name: str, body: str) -> Path:
        base = {"preset": "synthetic", "set": {**tiny_overrides, "data.root": str(tiny_root)}}
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
    from toco_ray.tuning import load_space
    from toco_ray.tuning.trial import TrialContext

    path = tmp_path / "demo.yaml"
    path.write_text("base: {preset: synthetic}\nkind: grid\nseeds: [0, 1]\ngrid: {loss.w_ptc: [0.1, 0.3]}\n")
    return TrialContext(space=load_space(path), sweep_name="demo", sweep_dir=str(tmp_path), experiment="exp",
                        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", parent_run_id="", extra={}, workers=1,
                        cpus_per_worker=1)
