"""A full disk during a checkpoint: refused before the copy, and a cut-short copy removed with one clear line."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from toco_ray.checkpointing import STATE_FILE, TrainingState, save_checkpoint
from toco_ray.config import build_config
from toco_ray.distributed.job import TrainJob
from toco_ray.distributed.launcher import disk_full_message
from toco_ray.distributed.loop import check_room

pytestmark = pytest.mark.unit


def checkpoint(folder: Path, iteration: int) -> Path:
    weights = {"w": torch.zeros(1000)}
    return save_checkpoint(folder, TrainingState(iteration=iteration, model=weights, optimizer={}, scheduler={}))


def test_case41_a_cut_short_checkpoint_is_removed_and_the_line_says_how_to_continue(tmp_path):
    job = TrainJob(cfg=build_config("synthetic"), output_dir=tmp_path, run_name="full")
    checkpoint(job.run_dir / "checkpoint_000003", 3)
    partial = checkpoint(job.run_dir / "checkpoint_000006", 6)
    data = (partial / STATE_FILE).read_bytes()
    (partial / STATE_FILE).write_bytes(data[:100])  # Ray Train's copy, cut short by the full disk
    error = RuntimeError("Training failed: ... OSError: [Errno 28] No space left on device: 'state.pt'")
    message = disk_full_message(job, error)
    assert message.startswith(f"the disk of {job.run_dir} is full (")
    assert message.endswith(", incomplete checkpoint_000006 removed); the MLflow run is FAILED. Free space, then "
                            "continue with --resume full (from checkpoint_000003)")
    assert not partial.exists() and (job.run_dir / "checkpoint_000003" / STATE_FILE).is_file()


def test_other_failures_are_not_reported_as_a_full_disk(tmp_path):
    job = TrainJob(cfg=build_config("synthetic"), output_dir=tmp_path, run_name="r")
    assert disk_full_message(job, RuntimeError("worker died")) == ""


def test_a_checkpoint_larger_than_the_free_space_is_refused_before_the_copy(tmp_path, monkeypatch):
    folder = checkpoint(tmp_path / "local", 3)
    run_dir = tmp_path / "run"
    monkeypatch.setattr("shutil.disk_usage", lambda path: type("U", (), {"free": 10})())
    with pytest.raises(OSError) as caught:
        check_room(folder, run_dir)
    assert caught.value.errno == errno.ENOSPC and f"10 free in {run_dir}" in str(caught.value)
    assert list(run_dir.iterdir()) == []  # nothing copied
