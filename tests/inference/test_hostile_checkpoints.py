"""Hostile and damaged checkpoints: nothing in a file runs, a damaged one is named, a run folder falls back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import write_checkpoint

from pipelines.infer import main as infer_main
from toco_ray.checkpointing import META_FILE, STATE_FILE, CheckpointError, load_checkpoint
from toco_ray.inference.checkpoint import build_inference_model, latest_checkpoint, resolve_checkpoint

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


class Payload:
    """Pickles as a call to os.system: loading it with plain pickle would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def two_checkpoints(run_dir: Path, cfg) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = build_inference_model(cfg)
    return write_checkpoint(run_dir, 3, cfg, model), write_checkpoint(run_dir, 6, cfg, model)


def infer(checkpoint: Path, tmp_path: Path, capsys) -> tuple[str, str]:
    """Runs ``pipelines.infer`` on two images in this process; returns (error line or "", stderr)."""
    out = tmp_path / "out"
    try:
        infer_main(["--checkpoint", str(checkpoint), "--serial", "--no-mlflow", "--limit", "2", "--out", str(out),
                    "--no-progress", "--output-dir", str(tmp_path / "outputs")])
    except SystemExit as exit_:
        err = capsys.readouterr().err
        assert exit_.code == 2, err  # a refused command exits 2 with its error as the last line
        return err.strip().splitlines()[-1], err
    return "", capsys.readouterr().err


def test_case22_pickled_code_in_state_pt_does_not_run(tmp_path, tiny_cfg, capsys):
    _, folder = two_checkpoints(tmp_path / "run", tiny_cfg)
    marker = tmp_path / "PWNED"
    state = torch.load(folder / STATE_FILE, weights_only=True)
    state["history"]["x"] = Payload(marker)
    torch.save(state, folder / STATE_FILE)
    meta = json.loads((folder / META_FILE).read_text())
    meta["files"][STATE_FILE] = (folder / STATE_FILE).stat().st_size  # the attacker fixes the marker too
    (folder / META_FILE).write_text(json.dumps(meta))

    error, _ = infer(folder, tmp_path, capsys)
    assert not marker.exists()
    assert error.startswith(f"error: checkpoint file {folder / STATE_FILE} holds objects other than tensors")
    assert not (tmp_path / "out").exists()  # refused before any output was written


def test_case23_truncated_state_pt_is_named(tmp_path, tiny_cfg, capsys):
    _, folder = two_checkpoints(tmp_path / "run", tiny_cfg)
    data = (folder / STATE_FILE).read_bytes()
    (folder / STATE_FILE).write_bytes(data[: len(data) // 2])
    error, _ = infer(folder, tmp_path, capsys)
    assert error == (f"error: checkpoint file {folder / STATE_FILE} is incomplete ({len(data) // 2} of {len(data)} "
                     "bytes): it was not completely written")
    assert not (tmp_path / "out").exists()


def test_case24_empty_state_pt_is_named(tmp_path, tiny_cfg, capsys):
    _, folder = two_checkpoints(tmp_path / "run", tiny_cfg)
    (folder / STATE_FILE).write_bytes(b"")
    error, _ = infer(folder, tmp_path, capsys)
    assert error.startswith(f"error: checkpoint file {folder / STATE_FILE} is incomplete (0 of ")


def test_damaged_state_pt_of_the_right_size_is_named(tmp_path, tiny_cfg):
    _, folder = two_checkpoints(tmp_path / "run", tiny_cfg)
    data = bytearray((folder / STATE_FILE).read_bytes())
    data[: len(data) // 2] = bytes(len(data) // 2)  # zeroed: the zip directory survives, the records do not
    (folder / STATE_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"checkpoint file {folder / STATE_FILE} is damaged"):
        load_checkpoint(folder)


def test_case26_truncated_meta_json_is_named(tmp_path, tiny_cfg, capsys):
    _, folder = two_checkpoints(tmp_path / "run", tiny_cfg)
    (folder / META_FILE).write_text((folder / META_FILE).read_text()[:100])
    error, _ = infer(folder, tmp_path, capsys)
    assert error.startswith(f"error: checkpoint file {folder / META_FILE} is damaged (")
    assert "\n" not in error


def test_case27_run_folder_falls_back_to_the_previous_intact_checkpoint(tmp_path, tiny_cfg, capsys):
    early, late = two_checkpoints(tmp_path / "run", tiny_cfg)
    data = (late / STATE_FILE).read_bytes()
    (late / STATE_FILE).write_bytes(data[: len(data) // 3])
    assert latest_checkpoint(tmp_path / "run") == early
    warning = capsys.readouterr().err
    assert f"warning: skipping checkpoint_000006: checkpoint file {late / STATE_FILE} is incomplete" in warning
    error, _ = infer(tmp_path / "run", tmp_path, capsys)
    assert error == ""
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert (run["checkpoint"], run["iteration"]) == (str(early), 3)


def test_a_run_folder_without_any_intact_checkpoint_is_refused(tmp_path, tiny_cfg):
    early, late = two_checkpoints(tmp_path / "run", tiny_cfg)
    for folder in (early, late):
        (folder / META_FILE).unlink()  # the commit marker was never written
    with pytest.raises(CheckpointError, match=r"has no complete checkpoint"):
        resolve_checkpoint(str(tmp_path / "run"))


DISK_FULL = """
import json, shutil, sys, tempfile
from pathlib import Path
import torch
from toco_ray.checkpointing import TrainingState, load_checkpoint, save_checkpoint
from toco_ray.inference.checkpoint import latest_checkpoint

run = Path(sys.argv[1]) / "run"
weights = {"w": torch.arange(200_000, dtype=torch.float32)}  # 800 kB: one fits on the 1.5 MiB disk, two do not
save_checkpoint(run / "checkpoint_000003", TrainingState(iteration=3, model=weights, optimizer={}, scheduler={}))
with tempfile.TemporaryDirectory() as local:  # the worker's local checkpoint, then Ray Train's copy into the run
    save_checkpoint(local, TrainingState(iteration=6, model=weights, optimizer={}, scheduler={}))
    try:
        shutil.copytree(local, run / "checkpoint_000006")
        copied = "complete"
    except OSError as err:
        copied = str(err)
found = latest_checkpoint(run)
print(json.dumps({"copied": copied, "latest": found.name, "iteration": load_checkpoint(found).iteration,
                  "partial": sorted(p.name for p in (run / "checkpoint_000006").iterdir())}))
"""


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root and unshare")
def test_case41_disk_full_during_a_checkpoint_copy_falls_back(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    script = tmp_path / "fill.py"
    script.write_text(textwrap.dedent(DISK_FULL))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = f"mount -t tmpfs -o size=1536k tmpfs {mount} && exec {sys.executable} {script} {mount}"
    done = subprocess.run(["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, env=env,
                          timeout=120)
    if done.returncode and "mount" in done.stderr and "permission" in done.stderr.lower():
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "No space left on device" in result["copied"]
    assert result["partial"]  # Ray's copy left part of checkpoint_000006 behind ...
    assert (result["latest"], result["iteration"]) == ("checkpoint_000003", 3)  # ... and it does not count
    assert "warning: skipping checkpoint_000006:" in done.stderr
