"""Shared fixtures: a generated VOC-layout tree, a tiny checkpoint in the training format, one local Ray cluster."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from toco_ray.checkpointing import TrainingState, save_checkpoint
from toco_ray.config import build_config, flatten, save_yaml
from toco_ray.data.synthetic import generate_dataset
from toco_ray.inference.checkpoint import build_inference_model

NUM_TRAIN, NUM_VAL = 4, 8
# Smaller than the synthetic preset, so that a multi-scale pass over 8 images takes a second on one core.
TINY = {"model.depth": 2, "model.aux_layer": -1, "data.val_size": 64, "eval.num_probe_images": 2}
RUN_NAME = "toco-test-run"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A read-only-by-convention tree: 4 train + 8 val images, seed 0."""
    return generate_dataset(tmp_path_factory.mktemp("synthetic"), NUM_TRAIN, NUM_VAL, seed=0)


@pytest.fixture
def private_root(synthetic_root, tmp_path) -> Path:
    """A copy of the tree that a test may damage."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "VOC2012"))


def write_checkpoint(run_dir: Path, iteration: int, cfg, model, mlflow_run_id: str = "") -> Path:
    """A checkpoint as the trainer writes it: the objective's state (network under ``model.``), meta with config."""
    state = TrainingState(
        iteration=iteration,
        model={f"model.{k}": v for k, v in model.state_dict().items()},
        optimizer={},
        scheduler={},
    )
    meta = {"run_name": RUN_NAME, "mlflow_run_id": mlflow_run_id,
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in flatten(cfg).items()}}
    folder = save_checkpoint(run_dir / f"checkpoint_{iteration:06d}", state, meta)
    save_yaml(cfg, run_dir / "config.yaml")
    return folder


@pytest.fixture(scope="session")
def tiny_cfg(synthetic_root):
    return build_config("synthetic", {**TINY, "data.root": str(synthetic_root)})


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory, tiny_cfg) -> Path:
    """A training run folder with one checkpoint of a randomly initialised tiny network (seed 0)."""
    torch.manual_seed(0)
    model = build_inference_model(tiny_cfg)
    run_dir = tmp_path_factory.mktemp("runs") / RUN_NAME
    write_checkpoint(run_dir, 2, tiny_cfg, model)
    return run_dir


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """An embedded MLflow store for the session (creating its tables takes seconds: done once)."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_experiment("toco-ray", artifact_location=str(folder / "artifacts"))
    return uri
