"""A run in this process (LocalSession): checkpoints committed whole into the run folder, the newest kept, every report
handed on, and the newest intact checkpoint found again to resume from."""

from pathlib import Path

import pytest
import torch

from toco_ray.checkpointing import STATE_FILE, TrainingState, load_checkpoint, save_checkpoint
from toco_ray.distributed.session import LocalSession

pytestmark = pytest.mark.unit


def written(folder: Path, iteration: int) -> Path:
    state = TrainingState(iteration=iteration, model={"w": torch.full((3,), float(iteration))}, optimizer={},
                          scheduler={})
    return save_checkpoint(folder, state)


def test_reports_commit_checkpoints_keep_the_newest_and_resume_from_the_newest_intact(tmp_path):
    reports = []
    session = LocalSession(tmp_path / "run", keep=2, report_fn=reports.append)
    assert session.worker(1).world_size == 1 and session.wrap(torch.nn.Linear(1, 1)).in_features == 1
    with session.latest_checkpoint() as folder:
        assert folder is None  # a new run starts from scratch
    for iteration in (3, 6, 9):
        session.report({"iteration": iteration}, written(tmp_path / f"tmp{iteration}", iteration),
                       f"checkpoint_{iteration:06d}")
    assert reports == [{"iteration": 3}, {"iteration": 6}, {"iteration": 9}]
    # keep=2: the oldest is gone, no staging folder is left behind
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint_000006", "checkpoint_000009"]
    (tmp_path / "run" / "checkpoint_000009" / STATE_FILE).write_bytes(b"cut short")
    with session.latest_checkpoint() as folder:  # the damaged newest is skipped
        assert folder.name == "checkpoint_000006" and load_checkpoint(folder).model["w"].tolist() == [6.0] * 3


def test_a_report_without_a_checkpoint_writes_nothing(tmp_path):
    reports = []
    LocalSession(tmp_path / "run", keep=1, report_fn=reports.append).report({"iteration": 3}, None, "")
    assert reports == [{"iteration": 3}] and not (tmp_path / "run").exists()
