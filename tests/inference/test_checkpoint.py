"""Finding the network: checkpoint folder, run folder (latest checkpoint), MLflow run id; clear errors otherwise."""

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import write_checkpoint

from toco_ray.checkpointing import META_FILE, TrainingState, save_checkpoint
from toco_ray.inference.checkpoint import (
    CheckpointError,
    build_inference_model,
    load_for_inference,
    network_state_dict,
    resolve_checkpoint,
)


def random_model(cfg, seed):
    torch.manual_seed(seed)
    return build_inference_model(cfg)


def assert_same_weights(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.mark.unit
def test_run_folder_resolves_to_its_latest_checkpoint(tmp_path, tiny_cfg):
    early, late = random_model(tiny_cfg, 1), random_model(tiny_cfg, 2)
    write_checkpoint(tmp_path, 8, tiny_cfg, early)
    write_checkpoint(tmp_path, 10, tiny_cfg, late)  # checkpoint_000010 sorts after checkpoint_000008
    model, cfg = load_for_inference(str(tmp_path))
    assert not model.training and cfg.model.depth == tiny_cfg.model.depth
    assert_same_weights(model, late)
    assert resolve_checkpoint(str(tmp_path / "checkpoint_000008")).iteration == 8


@pytest.mark.unit
def test_config_falls_back_to_the_run_folder_yaml(tmp_path, tiny_cfg):
    folder = write_checkpoint(tmp_path, 4, tiny_cfg, random_model(tiny_cfg, 3))
    meta = json.loads((folder / META_FILE).read_text())
    del meta["config"]
    (folder / META_FILE).write_text(json.dumps(meta))
    _, cfg = load_for_inference(str(folder))
    assert cfg.model.depth == tiny_cfg.model.depth and cfg.data.val_size == tiny_cfg.data.val_size


@pytest.mark.unit
def test_ddp_wrapped_objective_state_is_unwrapped(tiny_cfg):
    model = random_model(tiny_cfg, 4)
    state = {f"module.model.{k}": v for k, v in model.state_dict().items()}
    state["module.par.kernel"] = torch.zeros(1)  # objective buffers that are not the network's
    assert network_state_dict(state).keys() == model.state_dict().keys()


@pytest.mark.unit
def test_unusable_references_say_what_was_expected(tmp_path, tiny_cfg):
    with pytest.raises(CheckpointError, match="does not exist; expected a checkpoint folder"):
        resolve_checkpoint(str(tmp_path / "missing"))
    with pytest.raises(CheckpointError, match="neither a checkpoint folder"):
        resolve_checkpoint(str(tmp_path))
    folder = save_checkpoint(tmp_path / "bare", TrainingState(0, random_model(tiny_cfg, 5).state_dict(), {}, {}))
    with pytest.raises(CheckpointError, match="has no config"):
        load_for_inference(str(folder))


@pytest.mark.integration
def test_mlflow_run_id_resolves_through_the_run_dir_tag(mlflow_uri, checkpoint_dir):
    from mlflow import MlflowClient

    uri = mlflow_uri
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("toco-ray").experiment_id
    tagged = client.create_run(experiment, tags={"ray.run_dir": str(checkpoint_dir)}).info.run_id
    # a run of the embedded store names its folder relative to the store's (the output root)
    relative = os.path.relpath(checkpoint_dir, Path(uri.removeprefix("sqlite:///")).parent)
    moved = client.create_run(experiment, tags={"ray.run_dir": relative}).info.run_id
    untagged = client.create_run(experiment).info.run_id
    assert resolve_checkpoint(moved, uri).folder.resolve() == checkpoint_dir / "checkpoint_000002"
    for reference in (f"runs:/{tagged}", tagged):
        info = resolve_checkpoint(reference, uri)
        assert info.folder == checkpoint_dir / "checkpoint_000002" and info.mlflow_run_id == tagged
    with pytest.raises(CheckpointError, match="has no 'ray.run_dir' tag"):
        resolve_checkpoint(f"runs:/{untagged}", uri)
