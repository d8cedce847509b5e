"""Fixtures shared by every test directory."""

import logging
import os
import sys

import pytest

from toco_ray.data.synthetic import generate_dataset
from toco_ray.tracking_names import EXPERIMENT_ENV

NUM_TRAIN, NUM_VAL = 16, 8

# Small enough for a few seconds per iteration on two cores, yet every stage runs: the seg branch switches on at
# iteration 3, two evaluations (3 and 6) write two checkpoints.
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


@pytest.fixture(autouse=True)
def no_experiment_from_the_shell(monkeypatch):
    """The tests name the experiments they look in; a researcher's $MLFLOW_EXPERIMENT_NAME would move runs elsewhere."""
    monkeypatch.delenv(EXPERIMENT_ENV, raising=False)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("synthetic"), NUM_TRAIN, NUM_VAL, seed=0)


@pytest.fixture
def tiny_overrides():
    return dict(TINY)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local two-CPU Ray cluster on loopback for the session (joined if a sweep fixture started one)."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    # address="local": without it ray.init joins whatever cluster /tmp/ray/ray_current_cluster names (any earlier
    # `ray start` on this machine, even a stopped one)
    ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=True,
             logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


# --- leaving the test process --------------------------------------------------------------------------------------
# The session's exit status, kept for the exit below.
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Ends the process once pytest has reported everything, with pytest's exit status.

    The suite starts and stops several in-process Ray sessions, and imports numba's threading layer, torch's
    OpenMP runtime and gRPC; the interpreter's teardown of those native libraries after the last test can crash
    (Ray's core worker threads outliving a shut-down session, ray-project/ray#31145), turning a green run into a
    segmentation fault after the summary. Every fixture has already stopped what it started by now, so nothing is
    lost by leaving without that teardown.
    """
    if not _EXIT_STATUS:
        return  # collection only, --help, or a run that never started a session: exit as usual
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(_EXIT_STATUS[-1])
